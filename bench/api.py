"""Benchmark: the HTTP API and the pages with 10,000 devices, against a bare Tornado handler.

Starts a private redis-server holding DEVICES devices (each with a logged reading),
`rainforest server`, and bench/bare_tornado.py (a constant JSON body), then drives them
with bench/load.py from its own process:
  - max throughput (closed loop, 32 in flight) of GET /api/users/{id},
    GET /api/event/{id}?source=latest, the /fleet page (pages of 50 of the 10,000, sorted
    and filtered differently, with a session cookie) and the bare handler;
  - p50/p99 latency at a fixed 1,000 req/s (open loop; the /fleet page at 20 req/s);
  - a 30-day readings request (GET /api/users/{id}/readings) for a device with 30 days of
    8-second readings shipped to the archive: cold from its hourly objects; then, the closed days
    compacted, cold for the other device of the month (each compacted day holds those two
    households), and again (closed hours cached).

    .venv/bin/python bench/api.py [--devices 10000] [--seconds 5]

The last line is key=value: rps_users, rps_latest, rps_bare, ratio, p99_ms_at_1000,
rps_fleet, p99_ms_fleet, readings_30d_cold_ms, readings_30d_compacted_cold_ms, readings_30d_warm_ms,
rps_list, rps_list_study,
rps_fleet_study, ratio_list_study, ratio_fleet_study (the fleet spread over 20 studies: a page of
GET /api/users/ and of /fleet for a study's read-only token, against the same for the fleet's).
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
from app.store import PollUpdate, Store  # noqa: E402
from app.tokens import Tokens  # noqa: E402
from bench.pinger import free_port, port_open, wait_for  # noqa: E402


async def seed(redis_url: str, devices: int, secret: str) -> tuple[list[str], str]:
    store, vault = Store.from_url(redis_url), Vault(secret)
    ids = [f"{i:06x}" for i in range(1, devices + 1)]
    for start in range(0, devices, 500):
        chunk = ids[start : start + 500]
        registry = store.devices
        await asyncio.gather(*(registry.upsert_device(DeviceInput(cid, f"h{cid}@example.com", "pw"), vault)
                               for cid in chunk))  # fmt: skip
        reading = '{"cloud_id":"%s","polled_at":1.0,"device_time":1,"demand_kw":0.5,"TimeStamp":1}'
        await store.devices.record_polls([PollUpdate(c, events=1, last_timestamp=1.0, last_success_at=1.0,
                                             last_reading=reading % c) for c in chunk])  # fmt: skip
    token = await Tokens(store).create("bench", read_only=True)
    await store.close()
    return ids, token


async def studies(redis_url: str, ids: list[str], count: int = 20) -> str:
    """The fleet spread over `count` studies (every device enrolled); a read-only token scoped to
    the first."""
    from app.studies import Enrolment, Study

    store = Store.from_url(redis_url)
    try:
        made = [Study(f"study-{n:02d}", f"Study {n}", "America/Chicago") for n in range(count)]
        for study in made:
            await store.studies.save(study)
        for n, cid in enumerate(ids):
            study = made[n % count]
            await store.studies.enrol(cid, Enrolment.from_mapping({"enrolled_from": 0}, study, cid))
        token = await Tokens(store).create("bench-study", read_only=True, study=made[0].id)
    finally:
        await store.close()
    return token


def month_of_readings(env: dict[str, str], work: Path) -> list[str]:
    """30 days of 8-second readings for two simulated devices, in their hourly files, then shipped
    to the archive (a folder under DATA_DIR) by rotate; their cloud_ids."""
    sim = [sys.executable, "-m", "app.cli", "sim", "--devices", "2", "--seed", "5"]
    subprocess.run(
        [*sim, "--backfill-hours", str(30 * 24)], check=True, env=env, cwd=work, capture_output=True
    )
    users = work / "sim-users.jl"
    subprocess.run([*sim, "--export-users", str(users)], check=True, env=env, cwd=work, capture_output=True)
    subprocess.run([sys.executable, "-m", "app.cli", "users", "import", str(users)], check=True, env=env,
                   cwd=work, capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "app.cli", "rotate"], check=True, env=env, cwd=work,
                   capture_output=True)  # fmt: skip
    return [str(orjson.loads(line)["cloud_id"]) for line in users.read_bytes().splitlines()]


def compact_month(work: Path) -> int:
    """Compact every closed day of the month (in this process, as `rainforest compact` does);
    how many days were compacted."""
    from app.archive.factory import open_archive
    from app.errors import ValidationError
    from app.research.compact import Compactor
    from app.settings import Settings

    settings = Settings(data_dir=work)
    compactor = Compactor(settings, open_archive(settings))
    done = 0
    for n in range(32):
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - n * 86400))
        try:
            done += compactor.compact(day).version is not None
        except ValidationError:
            continue  # not over and shipped yet (today's)
    return done


def session_cookie(api: str, token: str) -> str:
    """Log in to the pages as a person would; the session cookie's value."""
    import requests

    s = requests.Session()
    form = s.get(f"{api}/login", timeout=10).text
    xsrf = form.split('name="_xsrf" value="')[1].split('"')[0]
    s.post(f"{api}/login", data={"token": token, "_xsrf": xsrf}, allow_redirects=False, timeout=10)
    return str(s.cookies["rf_session"])


def timed_get(url: str, token: str) -> float:
    import requests

    started = time.perf_counter()
    resp = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    resp.raise_for_status()
    return 1000 * (time.perf_counter() - started)


def load(mode: str, urls: Path, token: str, seconds: float, knob: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), mode, str(urls), token,
                          str(seconds), str(knob)], check=True, capture_output=True, text=True)  # fmt: skip
    return dict(orjson.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="rf-bench-api-") as tmp:
        work = Path(tmp)
        secret, redis_port, api_port, bare_port = new_key(), free_port(), free_port(), free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "SECRET_KEY": secret,
            "DATA_DIR": str(work),
            "LOG_LEVEL": "WARNING",
        }
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": work, "env": env}
        try:
            procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", ""], **quiet))  # type: ignore[call-overload]
            wait_for(lambda: port_open(redis_port), "redis")
            ids, token = asyncio.run(seed(redis_url, args.devices, secret))
            scoped = asyncio.run(studies(redis_url, ids))
            month_devices = month_of_readings(env, work)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "server", "--port", str(api_port)], **quiet
                )
            )  # type: ignore[call-overload]
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(ROOT / "bench" / "bare_tornado.py"), str(bare_port)], **quiet
                )
            )  # type: ignore[call-overload]
            wait_for(lambda: port_open(api_port) and port_open(bare_port), "the servers")
            api = f"http://127.0.0.1:{api_port}"
            views = ["sort=cloud_id", "sort=status&dir=desc", "sort=age", "q=00", "status=ok&sort=complete"]
            lists = {
                "users": [f"{api}/api/users/{c}" for c in ids],
                "latest": [f"{api}/api/event/{c}?source=latest" for c in ids],
                "bare": [f"http://127.0.0.1:{bare_port}/api/users/{c}" for c in ids],
                "fleet": [f"{api}/fleet?{v}&page={n}" for n in range(1, 200, 7) for v in views],
                # a page of the list, from every 100th device on: the fleet's, and one study's
                "list": [f"{api}/api/users/?limit=100&after={c}" for c in ids[::100]],
                "list_study": [f"{api}/api/users/?limit=100&after={c}" for c in ids[::100]],
                "fleet_study": [f"{api}/fleet?{v}&page={n}" for n in range(1, 11) for v in views],
            }
            files = {}
            for name, urls in lists.items():
                files[name] = work / f"{name}.urls"
                files[name].write_text("\n".join(urls))
            results = {}
            print(
                f"{'target':<8} {'max rps':>9} {'errors':>7} {'p50 ms @1000/s':>15} {'p99 ms @1000/s':>15}",
                flush=True,
            )
            cookie = "cookie:" + session_cookie(api, token)
            scoped_cookie = "cookie:" + session_cookie(api, scoped)
            for name, path in files.items():
                who = {"fleet": cookie, "fleet_study": scoped_cookie, "list_study": scoped}.get(name, token)
                page = name.startswith(("fleet", "list"))
                top = load("max", path, who, args.seconds, 4 if page else 32)
                time.sleep(0.5)
                paced = load("rate", path, who, args.seconds, 20 if page else 1000)
                results[name] = (top, paced)
                print(f"{name:<8} {top['rps']:>9.0f} {top['errors'] + paced['errors']:>7.0f} "
                      f"{paced['p50_ms']:>15.2f} {paced['p99_ms']:>15.2f}", flush=True)  # fmt: skip
            month = f"{api}/api/users/{{}}/readings?start={time.time() - 30 * 86400}"
            cold = timed_get(month.format(month_devices[0]), token)  # hourly objects
            days = compact_month(work)
            compacted = timed_get(month.format(month_devices[1]), token)  # never asked before: cold
            warm = timed_get(month.format(month_devices[1]), token)
            print(
                f"30-day readings request: {cold:.0f} ms cold from hourly objects, {compacted:.0f} ms cold "
                f"with {days} days compacted, {warm:.0f} ms with closed hours cached",
                flush=True,
            )
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(20)
    users, latest, bare, fleet = results["users"], results["latest"], results["bare"], results["fleet"]
    listed, listed_study, fleet_study = results["list"], results["list_study"], results["fleet_study"]
    list_ratio, fleet_ratio = (
        listed_study[0]["rps"] / listed[0]["rps"],
        fleet_study[0]["rps"] / fleet[0]["rps"],
    )
    print(f"scoped to one of 20 studies: /api/users/ pages {listed_study[0]['rps']:.0f} rps against "
          f"{listed[0]['rps']:.0f} for the fleet ({list_ratio:.2f}); /fleet {fleet_study[0]['rps']:.0f} "
          f"against {fleet[0]['rps']:.0f} ({fleet_ratio:.2f})")  # fmt: skip
    ratio = users[0]["rps"] / bare[0]["rps"]
    p99 = max(users[1]["p99_ms"], latest[1]["p99_ms"])
    print(f"rps_users={users[0]['rps']:.0f} rps_latest={latest[0]['rps']:.0f} rps_bare={bare[0]['rps']:.0f} "
          f"ratio={ratio:.2f} p99_ms_at_1000={p99:.2f} rps_fleet={fleet[0]['rps']:.0f} "
          f"p99_ms_fleet={fleet[1]['p99_ms']:.2f} readings_30d_cold_ms={cold:.0f} "
          f"readings_30d_compacted_cold_ms={compacted:.0f} "
          f"readings_30d_warm_ms={warm:.0f} rps_list={listed[0]['rps']:.0f} "
          f"rps_list_study={listed_study[0]['rps']:.0f} rps_fleet_study={fleet_study[0]['rps']:.0f} "
          f"ratio_list_study={list_ratio:.2f} ratio_fleet_study={fleet_ratio:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
