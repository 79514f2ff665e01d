"""Benchmark: a measured scale model. What does a fleet of 10,000, 100,000 or 1,000,000 gateways
cost in cores, Redis, S3 requests and storage?

Measured on this machine, in one run: a private redis-server, the simulator and one
`rainforest pinger` polling DEVICES devices (real processes, loopback) for CYCLES cycles after a
warm-up. Per device per poll cycle: Redis commands and Redis CPU seconds (from the server's own
INFO: `total_commands_processed`, `used_cpu_user` + `used_cpu_sys`), pinger CPU seconds, bytes
written to the hourly files. Per device per day, from those lines: the archive's requests (24
hourly objects a day are PUT by rotate and read once by compaction) and the bytes stored as
`.jl.gz` (gzip of the window's files, as rotate stores them) and as Parquet (the window's lines
through the compaction's own writer). The window holds a few cycles where an hourly file holds
600, so the `.jl.gz` size is gzip's of the window's lines as one stream (device after device),
not of each tiny file.

The model then scales linearly (each device costs the same; the fleet-wide fixed work of a
cycle is counted in the per-device figures at this size, an overestimate for larger fleets):
pinger cores, Redis cores (one Redis runs commands on one core: past ~0.7 of it, Redis Cluster
is needed), server processes for push uploads (at `--push-per-s` uploads/s per process, the
figure of bench/push.py's last run in docs/benchmarks.md, not measured here), S3 PUTs and GETs
a day and their monthly cost at S3 Standard's list prices (us-east-1: $0.005 per 1,000 PUTs,
$0.0004 per 1,000 GETs, $0.023 per GB-month; check the current prices), and storage per year.

    .venv/bin/python bench/scale.py                       # 1,000 devices, 6 cycles
    .venv/bin/python bench/scale.py --devices 2000 --cycles 10

The last line is key=value.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.credentials import new_key  # noqa: E402
from app.lines import parse as parse_lines  # noqa: E402
from app.research.parquet import KindWriter  # noqa: E402
from bench.pinger import free_port, import_fleet, port_open, wait_for  # noqa: E402

PUT_PER_1000, GET_PER_1000, GB_MONTH = 0.005, 0.0004, 0.023  # S3 Standard list prices, us-east-1
REDIS_CORE_LIMIT = 0.7  # of one core: past it, one Redis is not enough
HOURLY_OBJECTS_PER_DAY = 24


def redis_figures(port: int) -> tuple[int, float]:
    info = redis.Redis(port=port).info()
    return int(info["total_commands_processed"]), float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def stored_bytes(logs: Path, work: Path) -> tuple[int, int, int, int]:
    """(readings, .jl bytes, .jl.gz bytes, Parquet bytes) of the hourly files written."""
    files = sorted(logs.glob("????-??-??-??/*.jl"))  # sorted: by hour, then by device
    raw = b"".join(p.read_bytes() for p in files)
    # one stream, device after device: a window holds a few lines per device-hour where a real
    # hourly file holds 600, and gzip's per-file overhead would dominate files that small
    gz = len(gzip.compress(raw, 6))
    records = parse_lines(raw).records
    parquet = 0
    for kind in ("demand", "summation", "price"):
        rows = sorted(
            (r for r in records if r.get("kind", "demand") == kind),
            key=lambda r: (r["cloud_id"], r.get("device_time") or 0),
        )
        if rows:
            writer = KindWriter(work / f"{kind}.parquet", kind, ("cloud_id", "time"))
            writer.add(rows)
            writer.close()
            parquet += (work / f"{kind}.parquet").stat().st_size
    return len(records), len(raw), gz, parquet


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--interval-s", type=float, default=6.0)
    parser.add_argument("--mix", default="eagle100-cloud=60,eagle200-local=30,eagle100-local=10")
    parser.add_argument("--push-per-s", type=float, default=669.0, help="uploads/s one server process takes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    redis_port, sim_port = free_port(), free_port()
    secret = new_key()
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SECRET_KEY": secret,
        "DATA_DIR": str(work / "data"),
        "EAGLE_CLOUD_URL": f"http://127.0.0.1:{sim_port}/cgi-bin/post_manager",
        "POLL_INTERVAL_S": str(args.interval_s),
        "CRAWL_INTERVAL_S": "0",
    }
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": work, "env": env}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], **quiet
            )
        )  # type: ignore[call-overload]
        rainforest = [sys.executable, "-m", "app.cli"]
        users = work / "users.jl"
        sim = [
            *rainforest,
            "sim",
            "--devices",
            str(args.devices),
            "--protocols",
            args.mix,
            "--port",
            str(sim_port),
        ]
        subprocess.run([*sim, "--export-users", str(users)], check=True, **quiet)  # type: ignore[call-overload]
        procs.append(subprocess.Popen(sim, **quiet))  # type: ignore[call-overload]
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/healthz").status == 200, "sim")
        wait_for(lambda: port_open(redis_port), "redis")
        asyncio.run(import_fleet(env["REDIS_URL"], users, secret))
        pinger = subprocess.Popen([*rainforest, "pinger"], **quiet)  # type: ignore[call-overload]
        procs.append(pinger)
        ps = psutil.Process(pinger.pid)
        time.sleep(args.interval_s * 4)  # start, leases, the first captures of summation and price
        logs = work / "data" / "logs"
        for old in logs.glob("????-??-??-??"):  # the window's files only
            for f in old.glob("*.jl"):
                f.write_bytes(b"")
        commands0, redis_cpu0 = redis_figures(redis_port)
        cpu0 = ps.cpu_times()
        time.sleep(args.interval_s * args.cycles)
        commands1, redis_cpu1 = redis_figures(redis_port)
        cpu1 = ps.cpu_times()
        pinger.send_signal(signal.SIGTERM)
        pinger.wait(60)
        readings, raw, gz, parquet = stored_bytes(logs, work)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    device_cycles = args.devices * args.cycles
    per = {
        "redis_commands": (commands1 - commands0) / device_cycles,
        "redis_cpu_s": (redis_cpu1 - redis_cpu0) / device_cycles,
        "pinger_cpu_s": ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / device_cycles,
        "jl_bytes": raw / device_cycles,
    }
    cycles_a_day = 86400 / args.interval_s
    per_day = {
        "readings": readings / device_cycles * cycles_a_day,
        "jl_gz_bytes": gz / device_cycles * cycles_a_day,
        "parquet_bytes": parquet / device_cycles * cycles_a_day,
    }
    print(f"measured: {args.devices} devices × {args.cycles} cycles of {args.interval_s:g} s ({args.mix})")
    print(
        f"per device per cycle: {per['redis_commands']:.2f} Redis commands, "
        f"{per['redis_cpu_s'] * 1e6:.1f} µs of Redis CPU, {per['pinger_cpu_s'] * 1e6:.0f} µs of pinger CPU, "
        f"{per['jl_bytes']:.0f} bytes of lines"
    )
    objects = HOURLY_OBJECTS_PER_DAY
    print(
        f"per device per day: {per_day['readings']:,.0f} lines, "
        f"{per_day['jl_gz_bytes'] / 1e6:.2f} MB .jl.gz, {per_day['parquet_bytes'] / 1e6:.2f} MB Parquet, "
        f"{objects} PUTs + {objects} GETs"
    )
    print()
    print(
        "| gateways | pinger cores | Redis commands/s | Redis cores | Cluster | push server processes "
        "| S3 PUTs/day | S3 GETs/day | S3 requests $/month | stored GB/year (.jl.gz + Parquet) "
        "| storage $/month after a year |"
    )
    print("| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in (10_000, 100_000, 1_000_000):
        polls_s = n / args.interval_s
        redis_cores = polls_s * per["redis_cpu_s"]
        puts = gets = n * HOURLY_OBJECTS_PER_DAY
        requests_month = 30 * (puts / 1000 * PUT_PER_1000 + gets / 1000 * GET_PER_1000)
        gb_year = n * 365 * (per_day["jl_gz_bytes"] + per_day["parquet_bytes"]) / 1e9
        print(
            f"| {n:,} | {polls_s * per['pinger_cpu_s']:.1f} | {polls_s * per['redis_commands']:,.0f} | "
            f"{redis_cores:.2f} | {'needed' if redis_cores > REDIS_CORE_LIMIT else 'not needed'} | "
            f"{max(1, round(n / args.interval_s / args.push_per_s + 0.5))} | {puts:,} | {gets:,} | "
            f"{requests_month:,.0f} | {gb_year:,.0f} | {gb_year * GB_MONTH:,.0f} |"
        )
    print()
    print(
        orjson.dumps(
            {
                "devices": args.devices,
                "cycles": args.cycles,
                **per,
                **{f"day_{k}": v for k, v in per_day.items()},
            }
        ).decode()
    )
    print(" ".join(f"{k}={v:.6g}" for k, v in {**per, **{f"day_{k}": v for k, v in per_day.items()}}.items()))


if __name__ == "__main__":
    main()
