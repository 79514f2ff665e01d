"""Reference for bench/pinger.py: a bare keep-alive aiohttp loop, requests only.

Sends REQUESTS get_instantaneous_demand requests to the simulator with CONCURRENCY in flight,
reading each body and doing nothing else, then prints CPU seconds used and requests done.
Usage: python bench/bare_client.py URL USERS_FILE REQUESTS CONCURRENCY
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson
import uvloop

BODY = b"<Command><Name>get_instantaneous_demand</Name></Command>"


async def main(url: str, users_file: str, requests: int, concurrency: int) -> None:
    with open(users_file, "rb") as f:
        users = [orjson.loads(line) for line in f]
    headers = [{"Cloud-ID": u["cloud_id"], "User": u["user_email"], "Password": u["user_pw"]} for u in users]
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=5)
    done = 0

    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while done < requests:
                done += 1
                async with session.post(
                    url, data=BODY, headers=headers[i % len(headers)], timeout=timeout
                ) as r:
                    await r.read()
                i += concurrency

        # warm the pool, then measure
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        done = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(orjson.dumps({"requests": done, "cpu_s": cpu, "wall_s": wall}).decode())


if __name__ == "__main__":
    url, users_file, n, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    uvloop.run(main(url, users_file, n, c))
