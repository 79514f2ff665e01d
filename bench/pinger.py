"""Benchmark: can one pinger keep N devices on a 6 s schedule, and what does a poll cost?

For each fleet size it starts a private redis-server, the simulator and `rainforest pinger`
(real processes, loopback only), lets the pinger warm up for a cycle, then measures a window
of cycles: achieved polls/s, start lateness p50/p99 (from the pinger's own cycle log lines),
pinger CPU seconds per 1,000 polls and RSS. In the same run a bare keep-alive aiohttp loop
(requests only) against the same simulator gives the reference CPU per request.

    .venv/bin/python bench/pinger.py                  # 1000 5000 10000 20000 devices, default mix
    .venv/bin/python bench/pinger.py --sizes 1000 --cycles 3
    .venv/bin/python bench/pinger.py --mix eagle200-local=100 --sizes 10000
    .venv/bin/python bench/pinger.py --per-protocol --sizes 2000   # CPU per poll of each protocol

The fleet speaks the mix of protocols given (`rainforest sim --protocols`); summation and price
capture run at their defaults (every 60 s and 900 s per device), pacing of local gateways too.

The last line is key=value pairs for the largest size that stayed on schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.credentials import Vault, new_key  # noqa: E402
from app.devices import DeviceInput  # noqa: E402
from app.pinger.schedule import percentile  # noqa: E402
from app.store import Store  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


DEFAULT_MIX = "eagle100-cloud=60,eagle200-local=30,eagle100-local=10"
PROTOCOLS = ("eagle100-cloud", "eagle100-local", "eagle200-local")


@dataclass
class Result:
    mix: str
    devices: int
    polls_per_s: float
    p50_lateness_s: float
    p99_lateness_s: float
    cpu_per_1k_polls_s: float
    rss_mb: float
    failed: int
    skipped: int
    fell_behind: int
    bare_cpu_per_1k_s: float
    sim_rps: float  # the simulator's rate under the bare loop: a lower bound of its capacity

    @property
    def on_schedule(self) -> bool:
        expected = self.devices / 6.0
        return (
            self.p99_lateness_s < 1.0
            and self.skipped == 0
            and self.fell_behind == 0
            and self.polls_per_s >= 0.97 * expected
        )

    @property
    def ratio(self) -> float:
        return self.cpu_per_1k_polls_s / self.bare_cpu_per_1k_s


async def import_fleet(redis_url: str, users_file: Path, secret_key: str) -> None:
    store, vault = Store.from_url(redis_url), Vault(secret_key)
    inputs = [DeviceInput.from_mapping(orjson.loads(line)) for line in users_file.read_bytes().splitlines()]
    for start in range(0, len(inputs), 500):
        await asyncio.gather(*(store.upsert_device(inp, vault) for inp in inputs[start : start + 500]))
    await store.close()


def run_size(devices: int, cycles: int, interval_s: float, work: Path, mix: str) -> Result:
    work.mkdir(parents=True, exist_ok=True)
    secret = new_key()
    redis_port, sim_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SECRET_KEY": secret,
        "DATA_DIR": str(work / "data"),
        "EAGLE_CLOUD_URL": f"http://127.0.0.1:{sim_port}/cgi-bin/post_manager",
        "POLL_INTERVAL_S": str(interval_s),
        "LOG_LEVEL": "INFO",
    }
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": work, "env": env}
    try:
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                                       "--appendonly", "no"], **quiet))  # type: ignore[call-overload]  # fmt: skip
        rainforest = [sys.executable, "-m", "app.cli"]
        users = work / "users.jl"
        sim = [*rainforest, "sim", "--devices", str(devices), "--protocols", mix, "--port", str(sim_port)]
        subprocess.run([*sim, "--export-users", str(users)], check=True, **quiet)  # type: ignore[call-overload]
        procs.append(subprocess.Popen(sim, **quiet))  # type: ignore[call-overload]
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/healthz").status == 200, "sim")
        wait_for(lambda: port_open(redis_port), "redis")
        asyncio.run(import_fleet(env["REDIS_URL"], users, secret))

        pinger = subprocess.Popen([*rainforest, "pinger"], **quiet)  # type: ignore[call-overload]
        procs.append(pinger)
        ps = psutil.Process(pinger.pid)
        # Start-up, then two warm-up cycles (the first of each hour creates every file), then a
        # window aligned to cycle boundaries so CPU and polls cover the same cycles.
        time.sleep(interval_s * 2)
        window_start = (time.time() // interval_s + 1) * interval_s
        time.sleep(window_start - time.time() + interval_s)
        window_start += interval_s
        cpu0 = ps.cpu_times()
        window_end = window_start + interval_s * cycles
        time.sleep(window_end - time.time())
        cpu1 = ps.cpu_times()
        rss_mb = ps.memory_info().rss / 2**20
        pinger.send_signal(signal.SIGTERM)
        pinger.wait(60)

        log = work / "data" / "logs" / "pinger" / "pinger.log"
        records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
        window = [r for r in records if r["message"] == "poll cycle"
                  and window_start - 0.5 <= r["cycle_start"] < window_end - 0.5]  # fmt: skip
        polls = sum(r["ok"] + r["failed"] for r in window)
        cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        bare, sim_rps = bare_reference(env["EAGLE_CLOUD_URL"], users, max(polls, 5000))
        return Result(
            mix=mix,
            devices=devices,
            polls_per_s=polls / (len(window) * interval_s) if window else 0.0,
            p50_lateness_s=percentile([r["lateness_p50_s"] for r in window], 0.5),
            p99_lateness_s=max((r["lateness_p99_s"] for r in window), default=99.0),
            cpu_per_1k_polls_s=1000 * cpu_s / polls if polls else float("inf"),
            rss_mb=rss_mb,
            failed=sum(r["failed"] for r in window),
            skipped=sum(r["skipped"] + r["held"] for r in window),
            fell_behind=sum(1 for r in records if r["message"] == "pinger fell behind: cycles skipped"),
            bare_cpu_per_1k_s=bare,
            sim_rps=sim_rps,
        )
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def bare_reference(url: str, users: Path, requests: int) -> tuple[float, float]:
    """CPU seconds per 1,000 bare requests, and the request rate the simulator sustained."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bare_client.py"), url, str(users), str(requests), "64"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    figures = orjson.loads(out.stdout.strip().splitlines()[-1])
    return 1000 * figures["cpu_s"] / figures["requests"], figures["requests"] / figures["wall_s"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--cycles", type=int, default=4, help="measured cycles per size (after one warm-up)")
    parser.add_argument("--interval-s", type=float, default=6.0)
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"protocols' shares [{DEFAULT_MIX}]")
    parser.add_argument("--per-protocol", action="store_true", help="each protocol alone, instead of --mix")
    args = parser.parse_args()
    mixes = [f"{p}=100" for p in PROTOCOLS] if args.per_protocol else [args.mix]
    if shutil.which("redis-server") is None:
        raise SystemExit(
            "redis-server is missing: run `make bench` (it installs it) or apt-get install redis-server."
        )

    header = (f"{'mix':<52} {'devices':>8} {'polls/s':>9} {'late p50':>9} {'late p99':>9} "
              f"{'cpu/1k':>8} {'bare/1k':>8} {'ratio':>6} {'rss MB':>7} {'failed':>7} {'skipped':>8}  "
              "on schedule")  # fmt: skip
    print(header, flush=True)
    best: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="rf-bench-") as tmp:
        for n, (mix, size) in enumerate((m, s) for m in mixes for s in args.sizes):
            r = run_size(size, args.cycles, args.interval_s, Path(tmp) / str(n), mix)
            print(f"{r.mix:<52} {r.devices:>8} {r.polls_per_s:>9.1f} {r.p50_lateness_s:>9.4f} "
                  f"{r.p99_lateness_s:>9.4f} {r.cpu_per_1k_polls_s:>8.3f} {r.bare_cpu_per_1k_s:>8.3f} "
                  f"{r.ratio:>6.2f} {r.rss_mb:>7.1f} {r.failed:>7} {r.skipped + r.fell_behind:>8}  "
                  f"{'yes' if r.on_schedule else 'no'}   (simulator sustained {r.sim_rps:,.0f} req/s)",
                  flush=True)  # fmt: skip
            if r.on_schedule:
                best[mix] = r
    # one key=value line per mix: its largest fleet that stayed on schedule
    for mix in mixes:
        found = best.get(mix)
        if found is None:
            print(f"mix={mix} devices=0 on_schedule=no")
            continue
        print(
            f"mix={mix} devices={found.devices} polls_per_s={found.polls_per_s:.1f} "
            f"p99_lateness_s={found.p99_lateness_s:.4f} cpu_per_1k_polls_s={found.cpu_per_1k_polls_s:.3f} "
            f"ratio_vs_bare={found.ratio:.2f} rss_mb={found.rss_mb:.1f} on_schedule=yes"
        )


if __name__ == "__main__":
    main()
