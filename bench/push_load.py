"""Load generator for bench/push.py: gateways uploading (aiohttp on uvloop, its own process).

    python bench/push_load.py max  DEVICES_FILE BASE_URL SECONDS CONCURRENCY single|batch
    python bench/push_load.py rate DEVICES_FILE BASE_URL SECONDS RATE        single|batch

DEVICES_FILE has one `cloud_id key` per line. Each upload carries a new reading (a single
EAGLE-100 RFA XML fragment, or an EAGLE-200 JSON batch of 8 reports), so the server writes
every one. `rate` times each upload from its scheduled start (no coordinated omission).
Before measuring, every device uploads once (its hourly file is then made, as for all but the
first of its ~450 uploads an hour). Prints one JSON object: uploads (accepted: the rate and
latencies count only these), errors (anything else, counted apart, by status), rps, p50_ms,
p99_ms.
"""

from __future__ import annotations

import asyncio
import sys
import time
from itertools import count

import aiohttp
import orjson
import uvloop

Y2K = 946_684_800
BATCH = 8


def xml(t: int) -> bytes:
    return (
        f'<?xml version="1.0"?><rainforest macId="0xf0ad4e00ce69" version="undefined" timestamp="{t}s">'
        f"<InstantaneousDemand><DeviceMacId>0xd8d5b90000002aeb</DeviceMacId><MeterMacId>0x000781000081fd17"
        f"</MeterMacId><TimeStamp>0x{t - Y2K:08x}</TimeStamp><Demand>0x0003b0</Demand><Multiplier>0x00000001"
        f"</Multiplier><Divisor>0x000003e8</Divisor><DigitsRight>0x03</DigitsRight><DigitsLeft>0x06</DigitsLeft>"
        f"<SuppressLeadingZero>Y</SuppressLeadingZero><Port>/dev/ttySP0</Port></InstantaneousDemand></rainforest>"
    ).encode()


def batch(t: int) -> bytes:
    reports = [{"timestamp": str((t + i) * 1000), "subdeviceGuid": "000780e67e73", "componentId": "all",
                "dataType": "InstantaneousDemand", "data": {"demand": 0.472 + i / 1000, "units": "kW"}}
               for i in range(BATCH)]  # fmt: skip
    return orjson.dumps({"timestamp": str(t * 1000), "deviceGuid": "d8d5b9aa2a", "body": reports})


async def main(
    mode: str, devices: list[tuple[str, str]], base: str, seconds: float, knob: int, kind: str
) -> None:
    connector = aiohttp.TCPConnector(limit=max(knob, 64) if mode == "max" else 256)
    latencies: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}
    start_t = int(time.time()) - 1800  # readings of the last half hour, each upload a newer one
    step = BATCH if kind == "batch" else 1
    clock = count()
    make = batch if kind == "batch" else xml
    auth = [aiohttp.encode_basic_auth(cid, key) for cid, key in devices]
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("Accept-Encoding",)) as session:

        async def one(n: int, started: float) -> None:
            nonlocal errors
            d = n % len(devices)
            t = start_t + (n // len(devices)) * step
            url = f"{base}/api/push/{devices[d][0]}"
            try:
                async with session.post(url, data=make(t), headers={"Authorization": auth[d]}) as resp:
                    await resp.read()
                    failure = None if resp.status == 200 else str(resp.status)
            except aiohttp.ClientError as exc:
                failure = type(exc).__name__
            if failure is None:  # only an accepted upload counts towards the rate and the latencies
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
                statuses[failure] = statuses.get(failure, 0) + 1

        # warm the pool, and upload once for every device: the figures are of a server past the
        # first upload of each device's hour, which creates its file (an hour has ~450 uploads)
        warm = iter(range(len(devices)))

        async def warmer() -> None:
            for _ in warm:
                await one(next(clock), time.perf_counter())

        await asyncio.gather(*(warmer() for _ in range(32)))
        errors, statuses = 0, {}
        latencies.clear()
        begin = time.perf_counter()
        end = begin + seconds
        if mode == "max":

            async def worker() -> None:
                while time.perf_counter() < end:
                    await one(next(clock), time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(knob)))
        else:
            tasks = set()
            n = 0
            while (due := begin + n / knob) < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(next(clock), due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - begin
    ordered = sorted(latencies) or [0.0]
    print(orjson.dumps({
        "uploads": len(latencies), "errors": errors, "by_status": statuses, "rps": len(latencies) / wall,
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }).decode())  # fmt: skip


if __name__ == "__main__":
    mode, devices_file, base, seconds, knob, kind = sys.argv[1:7]
    with open(devices_file) as f:
        pairs = [tuple(line.split()) for line in f if line.strip()]
    uvloop.run(main(mode, pairs, base, float(seconds), int(knob), kind))  # type: ignore[arg-type]
