"""Benchmark: one alerts evaluation round over 10,000 and 100,000 devices, beside a plain read of
the same registry (the ratio), and the delay from a household's condition passing its threshold
to its message reaching a real SMTP server.

For each fleet size it starts a private redis-server holding that many device records (1 % of
them dark: unreachable past the threshold, a realistic share), runs a first round (which opens
their alerts) and then measures a steady round: milliseconds, and Redis commands (INFO's
total_commands_processed) per round. The reference reads every device record the same way the
round does (pipelined HGETALL in chunks) and does nothing with them.

The delay: an AlertService runs with ALERT_EVAL_S=1 against 1,000 devices and an aiosmtpd
server; 50 households go dark at once (their condition passes its threshold now); each message's
arrival minus that moment gives p50/p99 (an evaluation interval and a send: at the default
ALERT_EVAL_S of 15 s, add up to 14 s).

    .venv/bin/python bench/alerts.py [--sizes 10000,100000] [--rounds 3]

The last line is key=value: round_ms_<n>, read_ms_<n>, ratio_<n>, commands_<n> for each size,
then delay_p50_ms, delay_p99_ms, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import keys  # noqa: E402
from app.alerts.evaluate import Evaluator  # noqa: E402
from app.alerts.routes import EmailRoute  # noqa: E402
from app.alerts.service import AlertService  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.store import Store  # noqa: E402
from bench.pinger import free_port, port_open, wait_for  # noqa: E402

DARK_SHARE = 0.01
logging.getLogger("app").setLevel(logging.ERROR)  # a line per alert opened would swamp the figures


def dark(since: float) -> dict[str, str]:
    """A household's record fields once its pinger found it unreachable past the threshold."""
    return {"health": "unreachable", "health_since": repr(since), "condition": "unreachable",
            "condition_since": repr(since)}  # fmt: skip


async def seed(store: Store, n: int, now: float) -> list[str]:
    """n device records as the registry holds them after a day of polling; 1 % dark."""
    ids = [f"{i:06x}" for i in range(1, n + 1)]
    for start in range(0, n, 2000):
        async with store.redis.pipeline(transaction=False) as pipe:
            for i, cid in enumerate(ids[start : start + 2000], start):
                reading = f'{{"cloud_id":"{cid}","polled_at":{now - 3:.3f},"demand_kw":0.5}}'
                fields = {
                    "cloud_id": cid, "user_email": f"h{cid}@example.org", "protocol": "eagle100-cloud",
                    "user_pw_enc": "gAAAAAB" + "x" * 93, "active": "1", "created_at": repr(now - 86400),
                    "total_events_logged": "10800", "first_timestamp": repr(now - 86400),
                    "last_timestamp": repr(now - 5), "consecutive_failures": "0", "last_error": "",
                    "last_success_at": repr(now - 3), "last_reading": reading,
                    "health": "ok", "health_since": repr(now - 86400), "condition": "ok",
                }  # fmt: skip
                if i % int(1 / DARK_SHARE) == 0:
                    fields |= dark(now - 900) | {
                        "consecutive_failures": "90",
                        "last_error": "timeout: no reply",
                    }
                pipe.hset(keys.device(cid), mapping=fields)  # type: ignore[arg-type]
                pipe.sadd(keys.devices_all(keys.group(cid)), cid)
                pipe.sadd(keys.devices_active(keys.group(cid)), cid)
            await pipe.execute()
    return ids


async def commands(store: Store) -> int:
    return int((await store.redis.info("stats"))["total_commands_processed"])


async def one_size(redis_url: str, n: int, rounds: int) -> dict[str, float]:
    store = Store.from_url(redis_url)
    await store.redis.flushdb()
    now = time.time()
    await seed(store, n, now)
    settings = Settings(redis_url=redis_url, secret_key="x", unpolled_after_s=1e9, alert_digest_at="")
    evaluator = Evaluator(store, settings, ["email"])
    first = await evaluator.round()
    assert first.opened == int(n * DARK_SHARE), first
    times, counts, reads = [], [], []
    for _ in range(rounds):
        before = await commands(store)
        t0 = time.perf_counter()
        summary = await evaluator.round()
        times.append(time.perf_counter() - t0)
        counts.append(await commands(store) - before - 1)  # less the INFO that counted
        assert summary.opened == 0 and summary.dark == int(n * DARK_SHARE), summary
        t0 = time.perf_counter()
        records = await store.devices.all_devices()  # the same registry, read and nothing more
        reads.append(time.perf_counter() - t0)
        assert len(records) == n
    await store.close()
    round_ms, read_ms = statistics.median(times) * 1000, statistics.median(reads) * 1000
    cmds = statistics.median(counts)
    print(
        f"{n:>7} devices: a round {round_ms:8.1f} ms, {cmds:6.0f} Redis commands; "
        f"a plain read of the registry {read_ms:8.1f} ms; ratio {round_ms / read_ms:.2f}",
        flush=True,
    )
    return {f"round_ms_{n}": round(round_ms, 1), f"read_ms_{n}": round(read_ms, 1),
            f"ratio_{n}": round(round_ms / read_ms, 2), f"commands_{n}": cmds}  # fmt: skip


async def delay(redis_url: str) -> tuple[float, float, int]:
    """Condition-to-message delay (ms, p50 and p99) for 50 households going dark at once."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    arrivals: dict[str, float] = {}

    class Box:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            subject = str(message_from_bytes(envelope.content)["Subject"])  # type: ignore[attr-defined]
            arrivals.setdefault(subject.split()[1], time.time())
            return "250 OK"

    port = free_port()
    controller = Controller(Box(), hostname="127.0.0.1", port=port)
    controller.start()
    store = Store.from_url(redis_url)
    await store.redis.flushdb()
    now = time.time()
    ids = await seed(store, 1000, now)
    settings = Settings(redis_url=redis_url, secret_key="x", unpolled_after_s=1e9, alert_digest_at="",
                        alert_eval_s=1.0, smtp_url=f"smtp://127.0.0.1:{port}",
                        alert_email_to="ops@bench")  # fmt: skip
    service = AlertService(store, settings, [EmailRoute(settings.smtp_url, "bench@x", ("ops@bench",))])
    await service.evaluator.round()  # the 1 % dark from the start: their messages come first
    await service.sender.round()
    arrivals.clear()
    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop))
    await asyncio.sleep(1.5)
    going = [cid for n, cid in enumerate(ids) if n % 100 != 0][:50]
    at = time.time()
    async with store.redis.pipeline(transaction=False) as pipe:
        for cid in going:  # the pinger's write when a condition passes its threshold
            pipe.hset(keys.device(cid), mapping=dark(at - 600))  # type: ignore[arg-type]
        await pipe.execute()
    deadline = time.time() + 60
    while len([c for c in going if c in arrivals]) < len(going) and time.time() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await running
    await store.close()
    controller.stop()
    delays = sorted((arrivals[c] - at) * 1000 for c in going if c in arrivals)
    missing = len(going) - len(delays)
    p50 = statistics.median(delays) if delays else float("nan")
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] if delays else float("nan")
    print(f"condition to message: p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(delays)} messages "
          f"(ALERT_EVAL_S=1; {missing} never arrived)", flush=True)  # fmt: skip
    return p50, p99, missing


async def main_async(sizes: list[int], rounds: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for(lambda: port_open(port), "redis-server")
            url = f"redis://127.0.0.1:{port}/0"
            figures: dict[str, float] = {}
            for n in sizes:
                figures |= await one_size(url, n, rounds)
            p50, p99, errors = await delay(url)
            figures |= {"delay_p50_ms": round(p50), "delay_p99_ms": round(p99), "errors": errors}
        finally:
            redis.terminate()
            redis.wait(10)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main_async([int(s) for s in args.sizes.split(",")], args.rounds))


if __name__ == "__main__":
    main()
