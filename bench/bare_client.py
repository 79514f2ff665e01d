"""Reference for bench/pinger.py: a bare keep-alive aiohttp loop, requests only.

Sends REQUESTS demand requests to the simulator with CONCURRENCY in flight, each in its
device's protocol (the relay's get_instantaneous_demand; a local EAGLE-100's, with Basic auth;
an EAGLE-200's device_query of its meter, found once with device_list before measuring),
reading each body and doing nothing else, then prints CPU seconds used and requests done.
Usage: python bench/bare_client.py URL USERS_FILE REQUESTS CONCURRENCY
"""

from __future__ import annotations

import asyncio
import re
import sys
import time

import aiohttp
import orjson
import uvloop

BODY = b"<Command><Name>get_instantaneous_demand</Name></Command>"
LIST = b"<Command><Name>device_list</Name></Command>"
QUERY = (
    "<Command><Name>device_query</Name><DeviceDetails><HardwareAddress>{}</HardwareAddress></DeviceDetails>"
    "<Components><Component><Name>Main</Name><Variables><Variable><Name>zigbee:InstantaneousDemand</Name>"
    "</Variable></Variables></Component></Components></Command>"
)
CONNECTED = re.compile(rb"<HardwareAddress>([^<]+)</HardwareAddress>(?:(?!</Device>).)*Connected<", re.S)


async def targets(
    session: aiohttp.ClientSession, relay: str, users: list[dict[str, str]]
) -> list[tuple[str, dict[str, str], bytes]]:
    """(url, headers, body) per device; an EAGLE-200's meter is found first, as any client must."""
    out = []
    for u in users:
        if u["protocol"] == "eagle100-cloud":
            out.append(
                (relay, {"Cloud-ID": u["cloud_id"], "User": u["user_email"], "Password": u["user_pw"]}, BODY)
            )
            continue
        url = f"http://{u['address']}/cgi-bin/post_manager"
        auth = {"Authorization": aiohttp.encode_basic_auth(u["cloud_id"], u["install_code"])}
        if u["protocol"] == "eagle100-local":
            out.append((url, auth, BODY))
            continue
        async with session.post(url, data=LIST, headers=auth) as r:
            found = CONNECTED.search(await r.read())
        assert found is not None, f"{u['cloud_id']}: no connected meter"
        out.append((url, auth, QUERY.format(found.group(1).decode()).encode()))
    return out


async def main(url: str, users_file: str, requests: int, concurrency: int) -> None:
    with open(users_file, "rb") as f:
        users = [orjson.loads(line) for line in f]
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=5)
    done = 0

    async with aiohttp.ClientSession(connector=connector) as session:
        plan = await targets(session, url, users)

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while done < requests:
                done += 1
                target, headers, body = plan[i % len(plan)]
                async with session.post(target, data=body, headers=headers, timeout=timeout) as r:
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
