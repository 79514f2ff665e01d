"""References for bench/pinger.py: bare keep-alive aiohttp loops, requests only.

Full speed: sends REQUESTS demand requests to the simulator with CONCURRENCY in flight, each in
its device's protocol (the relay's get_instantaneous_demand; a local EAGLE-100's, with Basic auth;
an EAGLE-200's device_query of its meter, found once with device_list before measuring),
reading each body and doing nothing else, then prints CPU seconds used and requests done.

Paced (`--paced INTERVAL_S CYCLES`): the pinger's schedule without the pinger: every device once
per interval at its own phase (the pinger's phase function), due devices launched together in
the pinger's launch window, at most CONCURRENCY in flight, and an EAGLE-100's summation (every
60 s) and price (every 900 s) as requests of their own after its demand, staggered over the
cycles as the pinger's are in steady state; one warm-up cycle, then CYCLES measured. The fair
reference for a pinger's CPU per poll: the same requests at the same times, doing nothing else.

Usage: python bench/bare_client.py URL USERS_FILE REQUESTS CONCURRENCY [--paced INTERVAL_S CYCLES]
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
SUMMATION = b"<Command><Name>get_current_summation</Name></Command>"
PRICE = b"<Command><Name>get_price</Name></Command>"
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
    done = errors = 0

    async with aiohttp.ClientSession(connector=connector) as session:
        plan = await targets(session, url, users)

        async def worker(offset: int) -> None:
            nonlocal done, errors
            i = offset
            while done + errors < requests:
                target, headers, body = plan[i % len(plan)]
                try:
                    async with session.post(target, data=body, headers=headers, timeout=timeout) as r:
                        await r.read()
                        ok = r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                done, errors = (done + 1, errors) if ok else (done, errors + 1)
                i += concurrency

        # warm the pool, then measure
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        done = errors = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    # requests: answered with 200 (the rate and CPU per request count only these); errors apart
    print(orjson.dumps({"requests": done, "errors": errors, "cpu_s": cpu, "wall_s": wall}).decode())


async def paced(url: str, users_file: str, concurrency: int, interval_s: float, cycles: int) -> None:
    from app.pinger.loop import LAUNCH_WINDOW_S
    from app.pinger.schedule import next_cycle_start, phase_fraction

    with open(users_file, "rb") as f:
        users = [orjson.loads(line) for line in f]
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=interval_s * 0.8)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector) as session:
        plan = await targets(session, url, users)
        schedule = sorted((phase_fraction(u["cloud_id"]), n) for n, u in enumerate(users))
        eagle100 = [u["protocol"] != "eagle200-local" for u in users]
        every = {SUMMATION: max(1, round(60 / interval_s)), PRICE: max(1, round(900 / interval_s))}
        done = errors = 0

        async def send(target: str, headers: dict[str, str], body: bytes) -> bool:
            try:
                async with session.post(target, data=body, headers=headers, timeout=timeout) as r:
                    await r.read()
                    return r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        async def one(n: int, k: int) -> None:
            nonlocal done, errors
            target, headers, body = plan[n]
            if not await send(target, headers, body):
                errors += 1
            else:
                done += 1  # polls, as the pinger counts them: the extras ride along uncounted
                for extra, cycles_apart in every.items():
                    if eagle100[n] and (k + n) % cycles_apart == 0:
                        await send(target, headers, extra)

        async def cycle(start: float, k: int) -> None:
            base = loop.time() + (start - time.time())
            tasks = set()
            for phase, n in schedule:
                delay = base + phase * interval_s - loop.time()
                if delay > LAUNCH_WINDOW_S:
                    await asyncio.sleep(delay - LAUNCH_WINDOW_S / 2)
                tasks.add(asyncio.create_task(one(n, k)))
            await asyncio.gather(*tasks)

        start = next_cycle_start(time.time(), interval_s)
        await asyncio.sleep(start - time.time())
        running = [asyncio.create_task(cycle(start, 0))]  # warm-up
        await asyncio.sleep(start + interval_s - time.time())
        done, errors, cpu0 = 0, 0, time.process_time()
        for k in range(1, cycles + 1):
            running.append(asyncio.create_task(cycle(start + k * interval_s, k)))
            await asyncio.sleep(start + (k + 1) * interval_s - time.time())
        await asyncio.gather(*running)
        cpu = time.process_time() - cpu0
    print(
        orjson.dumps(
            {"requests": done, "errors": errors, "cpu_s": cpu, "wall_s": cycles * interval_s}
        ).decode()
    )


if __name__ == "__main__":
    url, users_file, n, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if "--paced" in sys.argv:
        at = sys.argv.index("--paced")
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
        uvloop.run(paced(url, users_file, c, float(sys.argv[at + 1]), int(sys.argv[at + 2])))
    else:
        uvloop.run(main(url, users_file, n, c))
