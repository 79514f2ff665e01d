"""The pinger end to end: real simulator over HTTP, real redis-server, real files.

The simulator records every distinct reading it served; the files must hold each exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from app.credentials import Vault
from app.devices import DeviceInput
from app.hours import hour_key
from app.lines import read as read_lines
from app.pinger import Pinger
from app.settings import Settings
from app.store import Store
from tests.conftest import RedisServer, Sim

Key = tuple[str, int]


async def register(sim: Sim, settings: Settings, only: list[str] | None = None) -> list[str]:
    """Put the simulator's users into Redis, as `rainforest users import` would."""
    store, vault = Store.from_url(settings.redis_url), Vault(settings.secret_key)
    ids = []
    for user in sim.users():
        if only is None or user["cloud_id"] in only:
            await store.devices.save_device(DeviceInput.from_mapping(user), vault)
            ids.append(str(user["cloud_id"]))
    await store.close()
    return ids


async def run_for(pinger: Pinger, seconds: float) -> None:
    task = asyncio.create_task(pinger.run())
    await asyncio.sleep(seconds)
    pinger.request_stop()
    await asyncio.wait_for(task, 10)


def written(settings: Settings, kind: str = "demand") -> dict[Key, list[dict[str, object]]]:
    """Every line of a kind in every hourly file, by (cloud_id, TimeStamp); fails on any partial line."""
    found: dict[Key, list[dict[str, object]]] = {}
    for path in settings.logs_dir.glob("????-??-??-??/*.jl"):
        result = read_lines(path)
        assert result.partial == 0, f"{path} has a partial or corrupt line"
        for record in result.records:
            if record.get("kind", "demand") != kind:
                continue
            assert path.parent.name == hour_key(float(record["polled_at"])), "line in the wrong hour"  # type: ignore[arg-type]
            assert path.name.endswith(f"-{record['cloud_id']}-{path.parent.name}.jl")
            found.setdefault((str(record["cloud_id"]), int(record["TimeStamp"])), []).append(record)  # type: ignore[call-overload]
    return found


def served(sim: Sim, devices: set[str] | None = None) -> dict[Key, dict[str, object]]:
    return {
        (str(r["cloud_id"]), int(r["TimeStamp"])): r  # type: ignore[call-overload]
        for r in sim.served()
        if devices is None or r["cloud_id"] in devices
    }


def lockable(path: Path) -> bool:
    """Could rotate take this file now (no writer holds a lock on it)?"""
    import fcntl

    with path.open("rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def noon_offset_s() -> float:
    """Shift the simulator to 19:30 UTC (about noon in its US time zones) so solar homes export."""
    now = time.time()
    return (now - now % 86400 + 19.5 * 3600) - now


@pytest.fixture
async def stack(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> AsyncIterator[tuple[Sim, Settings]]:
    sim = start_sim(200, "--time-offset-s", str(noon_offset_s()))
    yield sim, make_settings(redis_url, sim.url)


async def test_every_served_reading_lands_exactly_once_with_decoded_values(
    stack: tuple[Sim, Settings],
) -> None:
    sim, settings = stack
    settings = settings.replace(poll_interval_s=1.0, poll_timeout_s=0.9)  # slack for a loaded machine
    await register(sim, settings)
    pinger = Pinger.create(settings)
    await run_for(pinger, 3.5)

    files, truth = written(settings), served(sim)
    assert truth, "the simulator served nothing"
    assert files.keys() == truth.keys()
    assert all(len(lines) == 1 for lines in files.values()), "a reading was written twice"
    for key, (record,) in files.items():
        assert record["demand_kw"] == truth[key]["demand_w"] / 1000  # type: ignore[operator]
        assert record["device_time"] == record["TimeStamp"] + 946684800  # type: ignore[operator]
        assert record["DeviceMacId"] & 0xFFFFFF == int(key[0], 16)  # type: ignore[operator]
    assert any(r[0]["demand_kw"] < 0 for r in files.values()), "no exporting (solar) home was seen"  # type: ignore[operator]
    assert any(cid.startswith("00") for cid, _ in files), "cloud_ids with leading zeros were lost"

    store = Store.from_url(settings.redis_url)
    per_device = Counter(cid for cid, _ in files)
    for record in await store.devices.load_devices(per_device):
        assert record.total_events_logged == per_device[record.cloud_id]
        assert record.status == "ok" and record.last_success_at is not None
        last = max(ts for cid, ts in files if cid == record.cloud_id)
        assert record.last_timestamp == last + 946684800
    latest = await store.devices.latest_reading(next(iter(per_device)))
    assert latest is not None and orjson.loads(latest)["cloud_id"] == next(iter(per_device))
    await store.close()


async def test_polls_faster_than_readings_never_duplicate(stack: tuple[Sim, Settings]) -> None:
    sim, settings = stack
    # 200 requests at once on fresh connections: a timeout that a loaded 2-core CI machine can
    # meet (the test is about deduplication, not about speed).
    settings = settings.replace(poll_interval_s=5.0, poll_timeout_s=4.0)
    await register(sim, settings)
    pinger = Pinger.create(settings)
    await pinger.fleet.resync()
    first = await pinger.poll_once(spread=False)
    second = await pinger.poll_once(spread=False)  # same second: the meters have nothing new
    await pinger.close()
    assert first.ok == second.ok == 200 and first.new_readings > 0
    assert first.new_readings + second.new_readings == len(written(settings))


async def test_a_faulty_quarter_never_delays_the_healthy_and_each_gets_its_status(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    sim = start_sim(200, "--reading-interval-s", "2", "--timeout-hold-s", "5")
    settings = make_settings(redis_url, sim.url)
    ids = [str(u["cloud_id"]) for u in sim.users()]
    kinds = {"timeout": "timeout", "http_503": "unavailable", "malformed": "bad_reply",
             "bad_credentials": "auth"}  # fmt: skip
    faulty: dict[str, str] = {}
    for n, fault in enumerate(kinds):
        for cid in ids[150 + 13 * n : 150 + 13 * (n + 1) if n < 3 else 200]:
            faulty[cid] = fault
    sim.set_faults({"devices": {cid: {"error": fault} for cid, fault in faulty.items()}})
    await register(sim, settings)
    pinger = Pinger.create(settings)
    await run_for(pinger, 4.5)

    healthy = set(ids) - set(faulty)
    files, truth = written(settings), served(sim, healthy)
    assert files.keys() == truth.keys()
    # Healthy meters were read at every new reading: no gaps in what was served to the pinger.
    for cid in healthy:
        stamps = sorted(ts for c, ts in truth if c == cid)
        assert len(stamps) >= 2 and all(b - a == 2 for a, b in itertools.pairwise(stamps)), cid

    store = Store.from_url(settings.redis_url)
    for record in await store.devices.load_devices(ids):
        if record.cloud_id in healthy:
            assert record.status == "ok" and record.consecutive_failures == 0
        else:
            expected = kinds[faulty[record.cloud_id]]
            assert record.status == "failing", record.cloud_id
            assert record.last_error.startswith(f"{expected}:"), (record.cloud_id, record.last_error)
    await store.close()
    # Refused credentials are not retried for minutes: each such device was asked exactly once.
    stats = orjson.loads(sim.get("/control/stats"))
    assert stats["bad_credentials"] == sum(1 for f in faulty.values() if f == "bad_credentials")


async def test_crossing_an_hour_boundary_with_an_injected_clock(
    stack: tuple[Sim, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    sim, settings = stack
    await register(sim, settings, only=[str(u["cloud_id"]) for u in sim.users()[:20]])
    now = time.time()
    offset = (now - now % 3600 + 3600 - 1.3) - now  # the pinger's clock starts 1.3 s before the hour
    pinger = Pinger.create(settings, clock=lambda: time.time() + offset)
    with caplog.at_level(logging.INFO):
        await run_for(pinger, 3.0)
    files = written(settings)  # also checks each line sits in its polled_at hour
    hours = {hour_key(float(lines[0]["polled_at"])) for lines in files.values()}  # type: ignore[arg-type]
    assert len(hours) == 2, hours
    assert files.keys() == served(sim).keys()
    assert any(r.getMessage() == "hour closed" for r in caplog.records)


async def test_redis_restart_mid_run_loses_nothing(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], own_redis: RedisServer
) -> None:
    sim = start_sim(50)
    settings = make_settings(own_redis.url, sim.url)
    await register(sim, settings)
    pinger = Pinger.create(settings)
    task = asyncio.create_task(pinger.run())
    await asyncio.sleep(1.5)
    await asyncio.to_thread(own_redis.stop)
    down_at = len(written(settings))
    await asyncio.sleep(1.5)
    assert len(written(settings)) > down_at, "polling stopped while Redis was down"
    await asyncio.to_thread(own_redis.start)
    await asyncio.sleep(2.5)
    pinger.request_stop()
    await asyncio.wait_for(task, 15)

    files = written(settings)
    assert files.keys() == served(sim).keys()
    assert all(len(lines) == 1 for lines in files.values())
    store = Store.from_url(own_redis.url)
    per_device = Counter(cid for cid, _ in files)
    records = await store.devices.load_devices(per_device)
    assert len(records) == 50
    assert {r.cloud_id: r.total_events_logged for r in records} == dict(per_device), (
        "counters did not catch up"
    )
    await store.close()


async def test_changes_reach_the_pinger_without_waiting_for_a_resync(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    sim = start_sim(6)
    settings = make_settings(redis_url, sim.url, resync_interval_s=3600.0)
    users = sim.users()
    await register(sim, settings, only=[str(u["cloud_id"]) for u in users[:5]])
    pinger = Pinger.create(settings)
    task = asyncio.create_task(pinger.run())
    await asyncio.sleep(1.0)
    newcomer, leaver = str(users[5]["cloud_id"]), str(users[0]["cloud_id"])
    store, vault = Store.from_url(settings.redis_url), Vault(settings.secret_key)
    await store.devices.save_device(DeviceInput.from_mapping(users[5]), vault)
    await store.devices.deactivate_device(leaver)
    for _ in range(50):  # up to 5 s, the promise made to operators
        if newcomer in pinger.fleet.devices and leaver not in pinger.fleet.devices:
            break
        await asyncio.sleep(0.1)
    assert newcomer in pinger.fleet.devices and leaver not in pinger.fleet.devices
    await asyncio.sleep(1.5)
    pinger.request_stop()
    await asyncio.wait_for(task, 10)
    await store.close()
    assert any(cid == newcomer for cid, _ in written(settings))


async def test_a_failing_disk_holds_readings_until_it_recovers(stack: tuple[Sim, Settings]) -> None:
    sim, settings = stack
    await register(sim, settings, only=[str(u["cloud_id"]) for u in sim.users()[:10]])
    pinger = Pinger.create(settings)
    blocker = settings.logs_dir / hour_key(time.time())
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder: appends into this hour fail")
    task = asyncio.create_task(pinger.run())
    await asyncio.sleep(1.5)
    held = len(pinger.backlog.items)
    blocker.unlink()
    await asyncio.sleep(1.5)
    pinger.request_stop()
    await asyncio.wait_for(task, 10)
    assert held > 0
    files = written(settings)
    assert files.keys() == served(sim).keys()
    assert all(len(lines) == 1 for lines in files.values())


async def test_a_change_published_before_the_feed_subscribes_is_not_missed(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    sim = start_sim(2)
    settings = make_settings(redis_url, sim.url, resync_interval_s=3600.0)
    pinger = Pinger.create(settings)
    await pinger.fleet.resync()  # what start() does first: an empty fleet
    store, vault = Store.from_url(settings.redis_url), Vault(settings.secret_key)
    await store.devices.save_device(DeviceInput.from_mapping(sim.users()[0]), vault)  # published to nobody
    await store.close()
    follower = asyncio.create_task(pinger.feed.follow())  # then the feed subscribes
    for _ in range(50):
        if pinger.fleet.devices:
            break
        await asyncio.sleep(0.1)
    follower.cancel()
    await pinger.close()
    assert len(pinger.fleet.devices) == 1, (
        "a change made before the feed subscribed waited for the hourly resync"
    )


async def test_readings_held_at_shutdown_go_to_a_rescue_file(stack: tuple[Sim, Settings]) -> None:
    sim, settings = stack
    await register(sim, settings, only=[str(u["cloud_id"]) for u in sim.users()[:10]])
    pinger = Pinger.create(settings)
    now = time.time()
    for at in (now, now + 3600):  # the disk never recovers, even across an hour boundary
        blocker = settings.logs_dir / hour_key(at)
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("not a folder")
    await run_for(pinger, 1.5)
    (rescue,) = settings.data_dir.glob("unwritten-*.jl")
    saved = {(r["cloud_id"], r["TimeStamp"]) for r in read_lines(rescue).records}
    assert saved and saved == served(sim).keys()
    assert not pinger.backlog.items


async def test_a_device_that_leaves_the_pinger_has_its_file_unlocked_at_once(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """A device deactivated (or switched to push, or moved to another pinger) mid-hour is written
    by someone else now: the pinger lets its file go at once, instead of holding its shared lock
    until the hour closes (which froze a push server, and kept rotate from taking the file)."""

    sim = start_sim(3)
    settings = make_settings(redis_url, sim.url, resync_interval_s=3600.0)
    ids = await register(sim, settings)
    pinger = Pinger.create(settings)
    task = asyncio.create_task(pinger.run())
    leaver = ids[0]

    def file_of(cid: str) -> list[Path]:
        return list(settings.logs_dir.glob(f"????-??-??-??/*-{cid}-*.jl"))

    for _ in range(100):  # up to 10 s for the first readings
        if file_of(leaver):
            break
        await asyncio.sleep(0.1)
    (path,) = file_of(leaver)

    assert not lockable(path), "the pinger should hold its device's file while it polls it"
    store = Store.from_url(settings.redis_url)
    await store.devices.deactivate_device(leaver)
    released = False
    for _ in range(50):  # the change reaches the pinger within 5 s
        released = leaver not in pinger.fleet.devices and lockable(path)
        if released:
            break
        await asyncio.sleep(0.1)
    pinger.request_stop()
    await asyncio.wait_for(task, 10)
    await store.close()
    assert released, "the pinger kept the file of a device it no longer polls"


async def test_a_reading_without_a_time_has_a_null_one_and_a_time_ahead_is_never_written(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """A gateway that stamps its reading 0xffffffff ("no time") answers a reading without a time:
    written with `device_time` null, once per value, filed by when it came; one stamped ten days
    ahead is not written on any path (it would vanish from carts and charts, which select by
    time). The same rule as pushed readings (app.eagle.readings.plausible_time)."""
    sim = start_sim(9, "--protocols", "eagle100-cloud=34,eagle100-local=33,eagle200-local=33")
    settings = make_settings(redis_url, sim.url).replace(poll_interval_s=1.0, poll_timeout_s=0.9)
    ids = await register(sim, settings)
    no_time, future = ids[:3], ids[3:6]
    sim.set_faults({"devices": {
        **{cid: {"error": "no_time"} for cid in no_time},
        **{cid: {"error": "future_time"} for cid in future},
    }})  # fmt: skip
    pinger = Pinger.create(settings)
    await run_for(pinger, 3.5)
    demand: set[Key] = set()
    timeless: list[dict[str, object]] = []
    for path in settings.logs_dir.glob("????-??-??-??/*.jl"):
        for record in read_lines(path).records:
            if record["device_time"] is None:
                timeless.append(record)
                continue
            assert abs(float(record["device_time"]) - time.time()) < 86400, record  # type: ignore[arg-type]
            if record["kind"] == "demand":
                demand.add((str(record["cloud_id"]), int(record["device_time"]) - 946684800))  # type: ignore[call-overload]
    assert {cid for cid, _ in demand} == set(ids[6:]), "only the healthy devices' timed readings"
    assert demand == served(sim).keys()
    assert {str(r["cloud_id"]) for r in timeless if r["kind"] == "demand"} == set(no_time)
    values = [(r["cloud_id"], r["demand_kw"]) for r in timeless if r["kind"] == "demand"]
    assert len(values) == len(set(values)), "a reading without a time is written once per value"
    assert all(isinstance(r["polled_at"], float) for r in timeless)
    store = Store.from_url(settings.redis_url)
    for record in await store.devices.load_devices(future):
        assert record.status == "ok" and not record.total_events_logged  # it answers; nothing written
    await store.close()


async def test_a_flaky_gateway_loses_no_more_polls_to_backoff_than_to_its_failures(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """A gateway failing 30 % of its requests (a busy relay) sat out two thirds of its polls: the
    backoff grew with every streak. Now the polls skipped never outnumber the polls that failed,
    and an answer ends the backoff at once. The schedule's clock is injected: 300 cycles, no wait."""
    sim = start_sim(1)
    settings = make_settings(redis_url, sim.url).replace(poll_interval_s=6.0, poll_timeout_s=4.0)
    (cid,) = await register(sim, settings)
    sim.set_faults({"devices": {cid: {"error": "http_503", "rate": 0.3}}})
    ticks = [0.0]
    pinger = Pinger.create(settings, monotonic=lambda: ticks[0])
    await pinger.fleet.resync()
    totals: Counter[str] = Counter()
    streak_failed = streak_skipped = 0
    for _ in range(300):
        stats = await pinger.poll_once(spread=False)
        totals.update(ok=stats.ok, failed=stats.failed, skipped=stats.backoff)
        if stats.ok:
            assert streak_skipped <= streak_failed, "a streak sat out more polls than it failed"
            streak_failed = streak_skipped = 0
        streak_failed += stats.failed
        streak_skipped += stats.backoff
        ticks[0] += settings.poll_interval_s
    await pinger.close()
    assert totals["ok"] + totals["failed"] + totals["skipped"] == 300
    assert totals["skipped"] <= totals["failed"], totals
    assert totals["ok"] >= 300 * 0.5, f"a 30 % flaky gateway should still answer most cycles: {totals}"


async def test_a_wall_clock_stepped_back_stalls_no_poll(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """NTP or a resumed VM steps the wall clock back an hour: polls go on at their interval (the
    schedule is kept on the monotonic clock) and lines are filed by the wall clock."""
    sim = start_sim(5)
    settings = make_settings(redis_url, sim.url).replace(poll_interval_s=0.5, poll_timeout_s=0.4)
    await register(sim, settings)
    offset = [0.0]
    pinger = Pinger.create(settings, clock=lambda: time.time() + offset[0])
    task = asyncio.create_task(pinger.run())
    for _ in range(100):  # up to 10 s for the first readings
        if pinger.totals["ok"]:
            break
        await asyncio.sleep(0.1)
    before = pinger.totals["ok"]
    offset[0] = -3600.0
    await asyncio.sleep(2.0)  # four intervals
    after = pinger.totals["ok"]
    pinger.request_stop()
    await asyncio.wait_for(task, 10)
    assert before > 0 and after >= before + 5, f"polls stalled after the clock step: {before} → {after}"
    hours = {p.parent.name for p in settings.logs_dir.glob("????-??-??-??/*.jl")}
    assert hour_key(time.time() - 3600) in hours, "lines after the step are filed by the wall clock"


async def test_a_rescue_file_goes_back_into_its_hourly_files_once(
    stack: tuple[Sim, Settings], tmp_path: Path
) -> None:
    """The rescue file a pinger leaves when its disk never recovered is put back with `rainforest
    rescue`: each line in the hour the pinger would have filed it under, a history line by its
    own time (not by when it reached us), and a second run writes nothing."""
    import os
    import subprocess
    import sys

    _, settings = stack
    now = time.time()
    earlier = now - 3 * 3600  # a refilled reading from three hours ago, written now
    lines = [
        {"cloud_id": "0a0001", "polled_at": now, "device_time": int(now) - 1, "kind": "demand",
         "source": "push"},
        {"cloud_id": "0a0001", "polled_at": now, "device_time": int(earlier), "kind": "summation",
         "source": "history", "delivered_kwh": 12.5, "received_kwh": 0.0},
    ]  # fmt: skip
    rescue = settings.data_dir / "unwritten-1-2.jl"
    rescue.parent.mkdir(parents=True, exist_ok=True)
    rescue.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "REDIS_URL": settings.redis_url}
    cli = [sys.executable, "-m", "app.cli", "rescue", "--keep", str(rescue)]
    first = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "2 lines put back, 0 already there" in first.stdout, first.stderr
    again = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert "0 lines put back, 2 already there" in again.stdout, again.stderr
    by_hour = {
        p.parent.name: read_lines(p).records for p in settings.logs_dir.glob("????-??-??-??/*0a0001*.jl")
    }
    assert [r["kind"] for r in by_hour[hour_key(now)]] == ["demand"]
    assert [r["kind"] for r in by_hour[hour_key(earlier)]] == ["summation"], "history by its own time"


async def test_a_poll_in_flight_when_its_device_leaves_does_not_keep_the_file(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """A slow gateway's poll is out when the device is deactivated: the reading it brings back is
    written, and then the file is let go too (not held until the hour closes)."""

    sim = start_sim(1)
    settings = make_settings(redis_url, sim.url, resync_interval_s=3600.0).replace(
        poll_interval_s=2.0, poll_timeout_s=1.95
    )
    (cid,) = await register(sim, settings)
    pinger = Pinger.create(settings)
    task = asyncio.create_task(pinger.run())
    for _ in range(100):
        if pinger.totals["ok"]:
            break
        await asyncio.sleep(0.1)
    sim.set_faults({"devices": {cid: {"latency_ms": 1900}}})  # from now on, a poll is out ~95 % of the time
    for _ in range(50):
        if pinger.fleet.devices[cid].in_flight:
            break
        await asyncio.sleep(0.05)
    store = Store.from_url(settings.redis_url)
    await store.devices.deactivate_device(cid)
    await store.close()
    (path,) = settings.logs_dir.glob(f"????-??-??-??/*-{cid}-*.jl")

    for _ in range(100):  # the change reaches the pinger within seconds
        if cid not in pinger.fleet.devices:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(3.0)  # the poll that was out ends within its 1.95 s timeout, whatever the load
    released = lockable(path)
    pinger.request_stop()
    await asyncio.wait_for(task, 10)
    assert released, "the file of a device that left stayed locked after its last poll came back"


async def test_a_gateway_answering_an_older_reading_again_has_it_written_once(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """A, B, A: a gateway that answers from a stale cache every other time gives the pinger a
    reading it wrote two polls ago. By the one rule (app.lines) it is the same reading, in the
    same hour's file: written once, whatever came between."""
    sim = start_sim(6, "--protocols", "eagle100-cloud=50,eagle100-local=50", "--reading-interval-s", "1")
    settings = make_settings(redis_url, sim.url).replace(poll_interval_s=0.5, poll_timeout_s=0.45)
    ids = await register(sim, settings)
    sim.set_faults({"devices": {cid: {"error": "replay", "rate": 0.5} for cid in ids}})
    pinger = Pinger.create(settings)
    await run_for(pinger, 6.0)
    lines_by_reading = written(settings)
    assert len({cid for cid, _ in lines_by_reading}) == len(ids), "every device wrote readings"
    twice = {key: len(found) for key, found in lines_by_reading.items() if len(found) > 1}
    assert not twice, f"readings written more than once: {twice}"
    assert orjson.loads(sim.get("/control/stats"))["replay"] > 0, "the gateways answered older readings"
