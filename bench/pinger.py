"""Benchmark: can one pinger keep N devices on a 6 s schedule, and what does a poll cost?

For each fleet size it starts a private redis-server, the simulator and `rainforest pinger`
(real processes, loopback only), lets the pinger warm up for a cycle, then measures a window of
cycles: achieved polls/s, start lateness p50/p99 (from the pinger's own cycle log lines),
pinger CPU seconds per 1,000 polls and RSS. A poll that failed is counted apart and is not on
schedule: a size is on schedule only when every poll of the window got its reading. In the same
run two bare keep-alive aiohttp loops (requests only) against the same simulator give the
reference CPU per request: one at full speed, and one paced on the pinger's own schedule (same
phases, same concurrency): the fair reference, `ratio_vs_paced`. With --pingers N, N pinger
processes share the fleet through their leases (each with a DATA_DIR of its own, as on separate
hosts): figures per pinger and in total, and the handover after a kill -9 of one (until the
simulator sees each of its devices polled again by another).

    .venv/bin/python bench/pinger.py                  # 1000 5000 10000 20000 devices, default mix
    .venv/bin/python bench/pinger.py --sizes 1000 --cycles 3
    .venv/bin/python bench/pinger.py --mix eagle200-local=100 --sizes 10000
    .venv/bin/python bench/pinger.py --per-protocol --sizes 2000   # CPU per poll of each protocol
    .venv/bin/python bench/pinger.py --pingers 2 --sizes 10000      # two pingers share the fleet

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
from app.pinger.capture import FIRST_CAPTURE_WITHIN_CYCLES  # noqa: E402
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
class Share:
    """One pinger's figures over the measured window."""

    devices: int  # devices it polled (its share of the fleet)
    polls: int  # polls answered with a reading: a failed poll is not a poll on schedule
    cycles: int
    p50_lateness_s: float
    p99_lateness_s: float
    cpu_s: float
    rss_mb: float
    failed: int
    skipped: int
    fell_behind: int


@dataclass
class Result:
    mix: str
    devices: int
    interval_s: float
    shares: list[Share]
    bare_cpu_per_1k_s: float
    paced_cpu_per_1k_s: float
    sim_rps: float  # the simulator's rate under the bare loop: a lower bound of its capacity
    reference_errors: int  # requests of the two references that failed (not in their figures)
    handover_s: float | None = None  # after kill -9 of one pinger: until its last device is polled again
    handover_p50_s: float | None = None

    @property
    def polls(self) -> int:
        return sum(s.polls for s in self.shares)

    @property
    def polls_per_s(self) -> float:
        return sum(s.polls / (s.cycles * self.interval_s) for s in self.shares if s.cycles)

    @property
    def p50_lateness_s(self) -> float:
        return max(s.p50_lateness_s for s in self.shares)

    @property
    def p99_lateness_s(self) -> float:
        return max(s.p99_lateness_s for s in self.shares)

    @property
    def cpu_per_1k_polls_s(self) -> float:
        polls = self.polls
        return 1000 * sum(s.cpu_s for s in self.shares) / polls if polls else float("inf")

    @property
    def on_schedule(self) -> bool:
        expected = self.devices / self.interval_s
        return (
            self.p99_lateness_s < 1.0
            and all(s.skipped == 0 and s.fell_behind == 0 and s.failed == 0 for s in self.shares)
            and self.polls_per_s >= 0.97 * expected
        )

    @property
    def ratio(self) -> float:
        return self.cpu_per_1k_polls_s / self.bare_cpu_per_1k_s

    @property
    def ratio_vs_paced(self) -> float:
        return self.cpu_per_1k_polls_s / self.paced_cpu_per_1k_s


async def import_fleet(redis_url: str, users_file: Path, secret_key: str) -> None:
    store, vault = Store.from_url(redis_url), Vault(secret_key)
    inputs = [DeviceInput.from_mapping(orjson.loads(line)) for line in users_file.read_bytes().splitlines()]
    for start in range(0, len(inputs), 500):
        await asyncio.gather(
            *(store.devices.upsert_device(inp, vault) for inp in inputs[start : start + 500])
        )
    await store.close()


def run_size(devices: int, cycles: int, interval_s: float, work: Path, mix: str, pingers: int = 1) -> Result:
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
        # the crawl (every 6 h, the first a minute after start) is not polling: keep it out
        "CRAWL_INTERVAL_S": "0",
    }
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": work, "env": env}
    try:
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                                       "--appendonly", "no"], **quiet))  # type: ignore[call-overload]  # fmt: skip
        rainforest = [sys.executable, "-m", "app.cli"]
        users = work / "users.jl"
        sim = [*rainforest, "sim", "--devices", str(devices), "--protocols", mix, "--port", str(sim_port)]
        subprocess.run([*sim, "--export-users", str(users)], check=True, **quiet)  # type: ignore[call-overload]
        # several pingers: the simulator notes who polled what (the handover is read off it)
        procs.append(subprocess.Popen([*sim, *(["--record"] if pingers > 1 else [])], **quiet))  # type: ignore[call-overload]
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/healthz").status == 200, "sim")
        wait_for(lambda: port_open(redis_port), "redis")
        asyncio.run(import_fleet(env["REDIS_URL"], users, secret))

        # each pinger as if on a host of its own: its own DATA_DIR (and log)
        started = []
        for k in range(pingers):
            own = {**quiet, "env": {**env, "DATA_DIR": str(work / f"data-{k}")}}
            started.append(subprocess.Popen([*rainforest, "pinger"], **own))  # type: ignore[call-overload]
        procs.extend(started)
        ps = [psutil.Process(p.pid) for p in started]
        # Start-up and the leases settling, then warm-up cycles (the first of each hour creates
        # every file), then a window aligned to cycle boundaries so CPU and polls cover the same cycles.
        # past the first captures of summation and price (spread over the first few cycles), so
        # the window sees their steady rate, as the paced reference makes them
        time.sleep(interval_s * (FIRST_CAPTURE_WITHIN_CYCLES + 2))
        window_start = (time.time() // interval_s + 1) * interval_s
        time.sleep(window_start - time.time() + interval_s)
        window_start += interval_s
        cpu0 = [p.cpu_times() for p in ps]
        window_end = window_start + interval_s * cycles
        time.sleep(window_end - time.time())
        cpu1 = [p.cpu_times() for p in ps]
        rss = [p.memory_info().rss / 2**20 for p in ps]
        handover = kill_one(started[0], env["REDIS_URL"], sim_port) if pingers > 1 else None
        for p in started[1:] if pingers > 1 else started:
            p.send_signal(signal.SIGTERM)
            p.wait(60)

        shares = []
        for k in range(pingers):
            log = work / f"data-{k}" / "logs" / "pinger" / "pinger.log"
            records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
            window = [r for r in records if r["message"] == "poll cycle"
                      and window_start - 0.5 <= r["cycle_start"] < window_end - 0.5]  # fmt: skip
            shares.append(Share(
                devices=max((r["devices"] for r in window), default=0),
                polls=sum(r["ok"] for r in window),
                cycles=len(window),
                p50_lateness_s=percentile([r["lateness_p50_s"] for r in window], 0.5),
                p99_lateness_s=max((r["lateness_p99_s"] for r in window), default=99.0),
                cpu_s=(cpu1[k].user + cpu1[k].system) - (cpu0[k].user + cpu0[k].system),
                rss_mb=rss[k],
                failed=sum(r["failed"] for r in window),
                skipped=sum(r["skipped"] + r["held"] for r in window),
                fell_behind=sum(1 for r in records if r["message"] == "pinger fell behind: cycles skipped"),
            ))  # fmt: skip
        polls = sum(s.polls for s in shares)
        bare, sim_rps, bare_errors = bare_reference(env["EAGLE_CLOUD_URL"], users, max(polls, 5000))
        paced, paced_errors = paced_reference(env["EAGLE_CLOUD_URL"], users, interval_s, cycles)
        return Result(mix, devices, interval_s, shares, bare, paced, sim_rps, bare_errors + paced_errors,
                      *(handover if handover else (None, None)))  # fmt: skip
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def kill_one(victim: subprocess.Popen[bytes], redis_url: str, sim_port: int) -> tuple[float, float]:
    """kill -9 a pinger; seconds until the last (and the median) of its devices is polled again."""
    import redis as syncredis

    me = f"{socket.gethostname()}:{victim.pid}"
    with syncredis.Redis.from_url(redis_url, decode_responses=True) as r:
        theirs = [cid for cid, owner in r.hgetall("rf:owners").items() if owner == me]
    victim.kill()
    killed_at = time.time()
    victim.wait(10)
    back: dict[str, float] = {}
    while len(back) < len(theirs) and time.time() - killed_at < 120:
        time.sleep(1.0)  # each look costs the simulator a moment of a 10,000-device fleet's work
        with urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/control/pollers?last=1") as resp:
            seen = orjson.loads(resp.read())
        for cid in theirs:
            runs = seen.get(cid, [])
            later = [
                run[1] for run in runs if run[0] != f"rainforest-logger pinger/{me}" and run[2] > killed_at
            ]
            if cid not in back and later:
                back[cid] = min(later) - killed_at
    times = sorted(back.values()) or [float("inf")]
    return (times[-1] if len(back) == len(theirs) else float("inf")), times[len(times) // 2]


def bare_reference(url: str, users: Path, requests: int) -> tuple[float, float, int]:
    """CPU seconds per 1,000 bare requests answered, the rate the simulator sustained, and the
    requests that failed (counted apart)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bare_client.py"), url, str(users), str(requests), "64"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    figures = orjson.loads(out.stdout.strip().splitlines()[-1])
    done = max(1, figures["requests"])
    return 1000 * figures["cpu_s"] / done, figures["requests"] / figures["wall_s"], figures["errors"]


def paced_reference(url: str, users: Path, interval_s: float, cycles: int) -> tuple[float, int]:
    """CPU seconds per 1,000 requests of a bare loop on the pinger's schedule (same phases, same
    launch window, same concurrency bound): what the pinger's work costs without the pinger."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bare_client.py"), url, str(users), "0", "1000",
         "--paced", str(interval_s), str(cycles)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    figures = orjson.loads(out.stdout.strip().splitlines()[-1])
    return 1000 * figures["cpu_s"] / max(1, figures["requests"]), figures["errors"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument(
        "--cycles", type=int, default=10, help="measured cycles per size (10 × 6 s: a summation round)"
    )
    parser.add_argument("--interval-s", type=float, default=6.0)
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"protocols' shares [{DEFAULT_MIX}]")
    parser.add_argument("--per-protocol", action="store_true", help="each protocol alone, instead of --mix")
    parser.add_argument("--pingers", type=int, default=1, help="pinger processes sharing the fleet [1]")
    args = parser.parse_args()
    mixes = [f"{p}=100" for p in PROTOCOLS] if args.per_protocol else [args.mix]
    if shutil.which("redis-server") is None:
        raise SystemExit(
            "redis-server is missing: run `make bench` (it installs it) or apt-get install redis-server."
        )

    header = (f"{'mix':<52} {'devices':>8} {'polls/s':>9} {'late p50':>9} {'late p99':>9} "
              f"{'cpu/1k':>8} {'bare/1k':>8} {'ratio':>6} {'paced/1k':>9} {'vs paced':>8} {'rss MB':>7} "
              f"{'failed':>7} {'skipped':>8}  on schedule")  # fmt: skip
    print(f"{args.pingers} pinger process(es), interval {args.interval_s:g} s", flush=True)
    print(header, flush=True)
    best: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="rf-bench-") as tmp:
        for n, (mix, size) in enumerate((m, s) for m in mixes for s in args.sizes):
            r = run_size(size, args.cycles, args.interval_s, Path(tmp) / str(n), mix, args.pingers)
            skipped = sum(s.skipped + s.fell_behind for s in r.shares)
            rss = max(s.rss_mb for s in r.shares)
            print(f"{r.mix:<52} {r.devices:>8} {r.polls_per_s:>9.1f} {r.p50_lateness_s:>9.4f} "
                  f"{r.p99_lateness_s:>9.4f} {r.cpu_per_1k_polls_s:>8.3f} {r.bare_cpu_per_1k_s:>8.3f} "
                  f"{r.ratio:>6.2f} {r.paced_cpu_per_1k_s:>9.3f} {r.ratio_vs_paced:>8.2f} {rss:>7.1f} "
                  f"{sum(s.failed for s in r.shares):>7} {skipped:>8}  {'yes' if r.on_schedule else 'no'}"
                  f"   (simulator sustained {r.sim_rps:,.0f} req/s; references' failed requests: "
                  f"{r.reference_errors})", flush=True)  # fmt: skip
            if args.pingers > 1:
                for k, s in enumerate(r.shares):
                    cpu = 1000 * s.cpu_s / s.polls if s.polls else float("inf")
                    rate = s.polls / (s.cycles * args.interval_s) if s.cycles else 0.0
                    print(f"    pinger {k}: {s.devices} devices, {rate:.1f} polls/s, late p99 "
                          f"{s.p99_lateness_s:.4f} s, cpu/1k {cpu:.3f} s, rss {s.rss_mb:.1f} MB, "
                          f"failed {s.failed}, skipped {s.skipped + s.fell_behind}", flush=True)  # fmt: skip
                print(f"    kill -9 of pinger 0: its devices polled again by the others after "
                      f"{r.handover_p50_s:.1f} s (median), {r.handover_s:.1f} s (last)",
                      flush=True)  # fmt: skip
            if r.on_schedule:
                best[mix] = r
    # one key=value line per mix: its largest fleet that stayed on schedule
    for mix in mixes:
        found = best.get(mix)
        if found is None:
            print(f"mix={mix} devices=0 on_schedule=no")
            continue
        extra = f" pingers={args.pingers} handover_s={found.handover_s:.1f}" if args.pingers > 1 else ""
        print(
            f"mix={mix} devices={found.devices} polls_per_s={found.polls_per_s:.1f} "
            f"p99_lateness_s={found.p99_lateness_s:.4f} cpu_per_1k_polls_s={found.cpu_per_1k_polls_s:.3f} "
            f"ratio_vs_bare={found.ratio:.2f} ratio_vs_paced={found.ratio_vs_paced:.2f} "
            f"rss_mb={max(s.rss_mb for s in found.shares):.1f} failed=0{extra} on_schedule=yes"
        )


if __name__ == "__main__":
    main()
