"""Benchmark: uploads one `rainforest server` process takes from pushing gateways.

Starts a private redis-server with DEVICES push devices, one `rainforest server`, and
bench/bare_tornado.py (a POST handler that reads the body and answers a constant), then drives
each with bench/push_load.py from its own process:
  - max uploads/s (closed loop, 32 in flight), single-report (EAGLE-100 XML) and batched
    (EAGLE-200 JSON, 8 reports);
  - p50/p99 answer time at a fixed 1,000 single-report uploads/s (open loop).
Every upload carries new readings, so the server really authenticates, parses, deduplicates
under its file lock and appends each one.

    .venv/bin/python bench/push.py [--devices 2000] [--seconds 5]

The last line is key=value: rps_single, rps_batch, readings_per_s_batch, rps_bare, ratio,
p50_ms_at_1000, p99_ms_at_1000.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.credentials import Vault, new_key  # noqa: E402
from app.devices import DeviceInput  # noqa: E402
from app.store import Store  # noqa: E402
from bench.pinger import free_port, port_open, wait_for  # noqa: E402


async def seed(redis_url: str, devices: int, secret: str) -> list[tuple[str, str]]:
    store, vault = Store.from_url(redis_url), Vault(secret)
    pairs = [(f"{0x100000 + i:06x}", f"bench-push-key-{i:08d}") for i in range(devices)]
    for start in range(0, devices, 500):
        await asyncio.gather(*(
            store.devices.upsert_device(DeviceInput(cid, protocol="push", push_key=key), vault)
            for cid, key in pairs[start : start + 500]
        ))  # fmt: skip
    await store.close()
    return pairs


def load(mode: str, devices: Path, base: str, seconds: float, knob: int, kind: str) -> dict[str, float]:
    command = [sys.executable, str(ROOT / "bench" / "push_load.py"), mode, str(devices), base, str(seconds),
               str(knob), kind]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(orjson.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="rf-bench-push-") as tmp:
        work = Path(tmp)
        secret, redis_port, api_port, bare_port = new_key(), free_port(), free_port(), free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": secret, "DATA_DIR": str(work / "data"),
               "LOG_LEVEL": "WARNING"}  # fmt: skip
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": work, "env": env}
        try:
            procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                                           "--appendonly", "yes", "--appendfsync", "everysec"], **quiet))  # type: ignore[call-overload]  # fmt: skip
            wait_for(lambda: port_open(redis_port), "redis")
            pairs = asyncio.run(seed(redis_url, args.devices, secret))
            devices = work / "devices.txt"
            devices.write_text("".join(f"{cid} {key}\n" for cid, key in pairs))
            server = [sys.executable, "-m", "app.cli", "server", "--port", str(api_port)]
            procs.append(subprocess.Popen(server, **quiet))  # type: ignore[call-overload]
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_tornado.py"),
                                           str(bare_port)], **quiet))  # type: ignore[call-overload]  # fmt: skip
            wait_for(lambda: port_open(api_port) and port_open(bare_port), "the servers")
            api, bare = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"
            print(f"{'target':<22} {'uploads/s':>10} {'errors':>7}", flush=True)
            single = load("max", devices, api, args.seconds, 32, "single")
            print(f"{'server, single':<22} {single['rps']:>10.0f} {single['errors']:>7.0f}", flush=True)
            batched = load("max", devices, api, args.seconds, 32, "batch")
            print(f"{'server, batch of 8':<22} {batched['rps']:>10.0f} {batched['errors']:>7.0f}", flush=True)
            reference = load("max", devices, bare, args.seconds, 32, "single")
            print(f"{'bare Tornado':<22} {reference['rps']:>10.0f} {reference['errors']:>7.0f}", flush=True)
            time.sleep(0.5)
            paced = load("rate", devices, api, args.seconds, 1000, "single")
            print(f"at 1,000 uploads/s: p50 {paced['p50_ms']:.2f} ms, p99 {paced['p99_ms']:.2f} ms, "
                  f"{paced['errors']:.0f} errors {paced.get('by_status') or ''}", flush=True)  # fmt: skip
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(20)
    print(f"rps_single={single['rps']:.0f} rps_batch={batched['rps']:.0f} "
          f"readings_per_s_batch={batched['rps'] * 8:.0f} rps_bare={reference['rps']:.0f} "
          f"ratio={single['rps'] / reference['rps']:.2f} p50_ms_at_1000={paced['p50_ms']:.2f} "
          f"p99_ms_at_1000={paced['p99_ms']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
