"""Load generator for bench/api.py (aiohttp on uvloop, its own process).

    python bench/load.py max   URL_LIST_FILE TOKEN SECONDS CONCURRENCY
    python bench/load.py rate  URL_LIST_FILE TOKEN SECONDS RATE

TOKEN is an API token, or `cookie:<session>` for the pages.

`max` runs CONCURRENCY closed-loop workers; `rate` sends RATE requests/s on a fixed schedule
and times each from its scheduled start (so a slow server cannot hide queueing: no coordinated
omission). Prints one JSON object: requests (answered 200: the rate and latencies count only
these), errors (anything else, counted apart), rps, p50_ms, p99_ms.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson
import uvloop


def summary(latencies: list[float], errors: int, wall_s: float) -> dict[str, float]:
    ordered = sorted(latencies) or [0.0]
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / wall_s,
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


async def main(mode: str, urls: list[str], token: str, seconds: float, knob: int) -> None:
    # a page is read with its session cookie ("cookie:<value>"), an API route with the token
    headers = (
        {"Cookie": f"rf_session={token[7:]}"}
        if token.startswith("cookie:")
        else {"Authorization": f"Bearer {token}"}
    )
    connector = aiohttp.TCPConnector(limit=max(knob, 64) if mode == "max" else 256)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(url: str, started: float) -> None:
            """Only a 200 counts towards the rate and the latencies; anything else is an error."""
            nonlocal errors
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

        for url in urls[:50]:  # warm the pool
            await one(url, time.perf_counter())
        latencies.clear()
        begin = time.perf_counter()
        end = begin + seconds
        if mode == "max":

            async def worker(offset: int) -> None:
                i = offset
                while time.perf_counter() < end:
                    await one(urls[i % len(urls)], time.perf_counter())
                    i += knob

            await asyncio.gather(*(worker(k) for k in range(knob)))
        else:
            tasks = set()
            n = 0
            while (due := begin + n / knob) < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(urls[n % len(urls)], due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - begin
    print(orjson.dumps(summary(latencies, errors, wall)).decode())


if __name__ == "__main__":
    mode, url_file, token, seconds, knob = sys.argv[1:6]
    with open(url_file) as f:
        url_list = [line.strip() for line in f if line.strip()]
    uvloop.run(main(mode, url_list, token, float(seconds), int(knob)))
