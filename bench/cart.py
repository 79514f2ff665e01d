"""Benchmark: how fast does cartd bundle carts, against `tar -cf` of the same files?

It starts a private redis-server and one `rainforest cartd` process, writes realistic hourly
files (600 reading lines each, the pinger's format) and ships them to a file:// archive with
rotate. Then it asks for two carts, one after the other:

- one device-month: 720 hourly files;
- 100 device-days: 2,400 hourly files.

Each in two formats, each by a fresh cartd process:
- jl: end-to-end seconds (request to ready), bundling MB/s (the tar written from staged, verified
  files), cartd's peak RSS; the reference is `tar -cf` of the same members (the ready cart's
  tar unpacked into a folder), fsynced as cartd fsyncs its tar (target:
  bundling at least 0.7 of tar's MB/s, RSS flat as carts grow);
- parquet: end-to-end seconds and MB of lines turned into Parquet per second, the tar's size
  against the jl tar of the same cart (target: 8× smaller), cartd's peak RSS.

    .venv/bin/python bench/cart.py
    .venv/bin/python bench/cart.py --days 7 --devices 20      # smaller

The last line is key=value for the larger cart: jl_mb_per_s, ratio_vs_tar, jl_peak_rss_mb,
parquet_mb_per_s, size_ratio_vs_jl, parquet_peak_rss_mb.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psutil
import redis as syncredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import keys  # noqa: E402
from app.archive.factory import open_archive  # noqa: E402
from app.carts import jobs  # noqa: E402
from app.carts.model import Cart, CartRequest  # noqa: E402
from app.carts.registry import CartRegistry  # noqa: E402
from app.eagle.readings import Y2K_EPOCH, DemandReading  # noqa: E402
from app.hourly import reading_path  # noqa: E402
from app.hours import hour_key  # noqa: E402
from app.rotate.runner import Rotator  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.sim.fleet import build_fleet  # noqa: E402
from app.sim.model import demand_w  # noqa: E402
from app.store import Store  # noqa: E402
from bench.pinger import free_port, port_open, wait_for  # noqa: E402


def write_hours(settings: Settings, devices: list[str], first_hour: int, hours: int) -> int:
    """600 readings per device-hour, values from the simulator's household model."""
    fleet = {d.cloud_id: d for d in build_fleet(max(len(devices), 1) + 10, seed=5)}
    sims = list(fleet.values())
    total = 0
    for n, cid in enumerate(devices):
        device = sims[n]
        for h in range(hours):
            start = first_hour + h * 3600
            lines = []
            for i in range(600):
                polled = start + i * 6 + device.phase_fraction * 6
                reading = DemandReading(
                    device.device_mac_id, device.meter_mac_id, int(polled) - 2 - Y2K_EPOCH,
                    demand_w(device, 5, i, polled), 1, 1000, 3, 6, "Y",
                )  # fmt: skip
                lines.append(orjson.dumps(reading.record(cid, round(polled, 3))) + b"\n")
            path = reading_path(settings.logs_dir, settings.file_prefix, cid, hour_key(start))
            path.parent.mkdir(parents=True, exist_ok=True)
            data = b"".join(lines)
            path.write_bytes(data)
            total += len(data)
    return total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return psutil.Process(pid).memory_info().rss / 1e6


async def run_cart(settings: Settings, request: CartRequest) -> tuple[str, float]:
    store = Store.from_url(settings.redis_url, max_connections=4)
    registry = CartRegistry(store.redis)
    queue = jobs.open_queue(settings)
    cid = str(uuid.uuid4())
    now = time.time()
    began = time.perf_counter()
    try:
        await registry.create(
            Cart(cid, "bench", 0.0, request, created_at=now, updated_at=now, last_access=now)
        )
        await jobs.submit(queue, settings, cid, 1)
        while True:
            cart = await registry.get(cid)
            assert cart is not None
            if cart.status in ("ready", "error"):
                break
            await asyncio.sleep(0.05)
        if cart.status != "ready":
            raise SystemExit(f"cart failed: {cart.reason} {cart.message}")
        return cid, time.perf_counter() - began
    finally:
        await queue.disconnect()
        await store.close()


def build_log(settings: Settings, cid: str) -> dict[str, object]:
    """cartd's summary line for the build (written just after the cart turns ready)."""
    path = settings.logs_dir / "cartd" / "cartd.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for raw in reversed(path.read_bytes().splitlines()):
            record = orjson.loads(raw)
            if record.get("message") == "cart build" and record.get("cart_id") == cid:
                return record  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise SystemExit("no build line in cartd's log")


def start_cartd(env: dict[str, str], work: Path) -> subprocess.Popen[bytes]:
    with (work / "cartd.stderr").open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "cartd"],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    time.sleep(1.5)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def unpack(settings: Settings, cid: str, into: Path) -> int:
    """The ready cart's members into a folder (a ready cart keeps only its tar; these are the
    staged, verified files it was bundled from); returns the bytes of its `.jl` members."""
    with tarfile.open(settings.carts_dir / cid / "cart.tar") as tar:
        lines = sum(m.size for m in tar.getmembers() if m.name.endswith(".jl"))
        tar.extractall(into, filter="data")
    return lines


def tar_reference(folder: Path, work: Path) -> float:
    """`tar -cf` of the cart's members, then that one file fsynced (`sync FILE`), as cartd
    fsyncs its tar (`sync -f` would flush the whole filesystem, more than cartd does): MB/s."""
    began = time.perf_counter()
    subprocess.run(["tar", "-cf", str(work / "ref.tar"), "-C", str(folder), "."], check=True)
    subprocess.run(["sync", str(work / "ref.tar")], check=True)
    seconds = time.perf_counter() - began
    size = (work / "ref.tar").stat().st_size
    (work / "ref.tar").unlink()
    return size / 1e6 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=30, help="length of the device-month cart")
    parser.add_argument("--devices", type=int, default=100, help="devices in the device-day cart")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rf-bench-cart-"))
    port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    cartd: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: port_open(port), "redis-server")
        env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "DATA_DIR": str(work / "data"),
               "CART_JOBS": "1"}  # fmt: skip
        settings = Settings.from_env(env, dotenv_path=None)
        month_device = "0b0000"
        day_devices = [f"{0x0B0001 + n:06x}" for n in range(args.devices)]
        first = (int(time.time()) // 86400 - args.days - 2) * 86400  # whole past days, UTC
        began = time.perf_counter()
        raw = write_hours(settings, [month_device], first, args.days * 24)
        raw += write_hours(settings, day_devices, first, 24)
        with syncredis.Redis(port=port) as r:
            for cid in [month_device, *day_devices]:
                r.hset(keys.device(cid), mapping={"cloud_id": cid})
                r.sadd(keys.devices_all(keys.group(cid)), cid)
        report = asyncio.run(
            Rotator(settings.replace(rotate_concurrency=2), open_archive(settings), None).pass_once()
        )
        print(f"archived {report.stored} hourly files ({raw / 1e6:.0f} MB of .jl, "
              f"{report.stored_bytes / 1e6:.0f} MB gzipped) in {time.perf_counter() - began:.0f} s",
              flush=True)  # fmt: skip

        carts = [
            (f"1 device × {args.days} days ({args.days * 24} files)", (month_device,), first, args.days),
            (f"{args.devices} devices × 1 day ({args.devices * 24} files)", tuple(day_devices), first, 1),
        ]  # fmt: skip
        last: list[str] = []
        for label, devices, start, days in carts:
            sizes: dict[str, int] = {}
            for fmt in ("jl", "parquet"):
                cartd = start_cartd(env, work)  # a fresh process per cart: its own peak RSS
                request = CartRequest(devices, start, start + days * 86400, fmt)
                cid, end_to_end = asyncio.run(run_cart(settings, request))
                record = build_log(settings, cid)
                rss = peak_rss_mb(cartd.pid)
                stop(cartd)
                cartd = None
                tar_bytes = int(record["bytes"])  # type: ignore[call-overload]
                sizes[fmt] = tar_bytes
                if fmt == "jl":
                    members = work / "members"
                    lines_mb = unpack(settings, cid, members) / 1e6  # the parquet cart reads the same lines
                    bundle_s = int(record["bundle_ms"]) / 1000  # type: ignore[call-overload]
                    ours, theirs = tar_bytes / 1e6 / bundle_s, tar_reference(members, work)
                    shutil.rmtree(members)
                    print(
                        f"{label}, jl: {tar_bytes / 1e6:.0f} MB tar, end to end {end_to_end:.1f} s "
                        f"(staging {int(record['stage_ms']) / 1000:.1f} s, counting for COMPLETENESS.csv "  # type: ignore[call-overload]
                        f"{int(record['tables_ms']) / 1000:.1f} s), bundling {ours:.0f} MB/s vs "  # type: ignore[call-overload]
                        f"tar -cf {theirs:.0f} MB/s (ratio {ours / theirs:.2f}), cartd peak RSS {rss:.0f} MB",
                        flush=True,
                    )
                    jl = f"jl_mb_per_s={ours:.1f} ratio_vs_tar={ours / theirs:.2f} jl_peak_rss_mb={rss:.1f}"
                else:
                    rate = lines_mb / end_to_end
                    print(
                        f"{label}, parquet: {tar_bytes / 1e6:.1f} MB tar, "
                        f"{sizes['jl'] / tar_bytes:.1f}× smaller than the jl tar, "
                        f"end to end {end_to_end:.1f} s ({rate:.0f} MB of lines/s), "
                        f"cartd peak RSS {rss:.0f} MB",
                        flush=True,
                    )
                    last = [jl, f"parquet_mb_per_s={rate:.1f} size_ratio_vs_jl={sizes['jl'] / tar_bytes:.1f} "
                                f"parquet_peak_rss_mb={rss:.1f}"]  # fmt: skip
        print(" ".join(last))
    finally:
        if cartd is not None:
            stop(cartd)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
