"""Several pinger processes sharing one fleet through Redis leases.

Real processes, a real redis-server (restarted mid-run), the simulator over HTTP. The simulator
notes which pinger (by User-Agent) asked each device for its demand, so "polled by exactly one"
is read off the devices' side, not the pingers' own account. The pingers share one DATA_DIR, as
the containers share a volume.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import requests

from app import keys
from app.pinger.ownership import rendezvous
from app.settings import Settings
from tests.api_helpers import start_api
from tests.conftest import RedisServer, Sim, wait_until
from tests.redis_cluster import sync_client
from tests.test_pinger import served, written
from tests.test_users_cli import rainforest

# 750 polls a second (and the summation and price requests): what the one-process simulator
# serves on 2 cores with room left for a pinger process starting beside it
INTERVAL_S = 4.0
LEASE_S = 12.0  # a lease not renewed runs out after this
TIMEOUT_S = 3.5  # a poll not answered by then has failed
DEVICES = 3000
AGENT = "rainforest-logger pinger/"  # a pinger's User-Agent: this, then its id
FAILED_POLL = re.compile(r"^(\S+Z) \S+ +app\.pinger\.loop +device poll failed +cloud_id=(\S+)", re.MULTILINE)


class Fleet:
    """The simulator, the Redis, and the pinger processes started against them."""

    def __init__(self, sim: Sim, redis: RedisServer, env: dict[str, str], workdir: Path) -> None:
        self.sim, self.redis, self.env, self.workdir = sim, redis, env, workdir
        self.pingers: dict[str, subprocess.Popen[bytes]] = {}  # agent → process

    def start(self) -> str:
        # each pinger's log is kept beside the test's files: a failure names what to read
        with (self.workdir / f"pinger-{len(self.pingers)}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "pinger"], cwd=self.workdir, env={**os.environ, **self.env},
                stdout=log, stderr=log,
            )  # fmt: skip
        agent = f"{AGENT}{os.uname().nodename}:{proc.pid}"
        self.pingers[agent] = proc
        return agent

    def owners(self) -> dict[str, str]:
        """cloud_id → agent of the pinger holding its lease."""
        with sync_client(self.redis.url, decode_responses=True) as r:
            return {cid: f"{AGENT}{p}" for cid, p in r.hgetall(keys.owners()).items()}

    def owners_of(self, cloud_ids: Iterable[str]) -> dict[str, str]:
        owners = self.owners()
        return {cid: owners[cid] for cid in cloud_ids}

    def pollers(self) -> dict[str, list[list[object]]]:
        return dict(orjson.loads(self.sim.get("/control/pollers")))

    def forget_pollers(self) -> None:
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.sim.port}/control/pollers", method="DELETE")
        urllib.request.urlopen(req, timeout=5).read()

    def settled(self, live: set[str]) -> bool:
        """Does each device's lease sit with the live pinger it belongs to? (Holding the whole
        fleet is not enough: a device moving on is held a while by a pinger that no longer
        polls it, and its new owner polls it only once the lease is its own.)"""
        owners = self.owners()
        ids = {agent.removeprefix(AGENT): agent for agent in live}
        return len(owners) == DEVICES and all(
            agent == ids.get(rendezvous(cid, ids) or "") for cid, agent in owners.items()
        )

    def polled_by_exactly_one_within(self, window_s: float, windows: int) -> dict[str, str]:
        """The first of `windows` windows in which each device had one poller (fails if none)."""
        for n in range(windows):
            try:
                return self.polled_by_exactly_one(window_s)
            except AssertionError:
                if n == windows - 1:
                    raise
        raise AssertionError("no window was tried")

    def polled_by_exactly_one(self, window_s: float) -> dict[str, str]:
        """Forget who polled, wait, and read back each device's one poller (fails on two). Every
        device is polled, but for one whose poll its pinger gave up on in the window or the minute
        before it (a loaded machine's timeout, then its backoff: see `given_up`); a device whose
        lease arrived as the window began may be asked only once in it."""
        began = time.time()
        self.forget_pollers()
        time.sleep(window_s)
        seen = self.pollers()
        owners = self.owners()
        assert len(owners) == DEVICES, f"{DEVICES - len(owners)} devices have no lease"
        unpolled = {cid for cid in owners if cid not in seen}
        ended = time.time()
        if unpolled:  # a poll sent in the window fails up to TIMEOUT_S after it, and is logged then
            time.sleep(TIMEOUT_S + 1)
        failed, late = self.failed_polls(), ended + TIMEOUT_S + 1
        excused = {c for c in unpolled if any(began - 60 <= at <= late for at in failed.get(c, []))}
        assert unpolled <= excused, (
            f"{len(unpolled - excused)} devices were not polled at all in [{began:.1f}, {ended:.1f}], "
            f"their failed polls: {[failed.get(c) for c in sorted(unpolled - excused)]}"
        )
        twice = {cid: runs for cid, runs in seen.items() if len({run[0] for run in runs}) > 1}
        assert not twice, f"{len(twice)} devices were polled by two pingers, e.g. {next(iter(twice.items()))}"
        return {cid: str(runs[0][0]) for cid, runs in seen.items()}

    def failed_polls(self) -> dict[str, list[float]]:
        """cloud_id → when a pinger logged a poll of it as failed (to the second)."""
        found: dict[str, list[float]] = {}
        for path in self.workdir.glob("pinger-*.log"):
            for at, cid in FAILED_POLL.findall(path.read_text()):
                found.setdefault(cid, []).append(datetime.fromisoformat(at).timestamp())
        return found

    def stop_all(self) -> None:
        for proc in self.pingers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.pingers.values():
            proc.wait(20)


def given_up(failures: list[float], device_time: float) -> bool:
    """Was a reading of this time served to a poll that its pinger logged as failed? Its time is at
    most one reading interval before the poll, which failed at most TIMEOUT_S later."""
    return any(at - INTERVAL_S - TIMEOUT_S - 2 <= device_time <= at + 2 for at in failures)


def see_the_owners(fleet: Fleet, env: dict[str, str], secret_key: str) -> None:
    """`rainforest status` lists each pinger with its devices and lease; the API names a device's."""
    report = orjson.loads(rainforest("status", "--json", env=env).stdout)
    pingers = {f"rainforest-logger pinger/{p['id']}": p for p in report["pingers"]}
    assert set(pingers) == set(fleet.owners().values()) and all(p["lease"] == "ok" for p in pingers.values())
    assert sum(p["devices"] for p in pingers.values()) == DEVICES
    text = rainforest("status", env=env).stdout
    assert f"pingers   3 live, holding {DEVICES} of {DEVICES} polled devices" in text and "lease ok" in text
    token = rainforest("tokens", "create", "ops", env=env).stdout.strip()
    api = start_api(fleet.redis.url, secret_key)
    try:
        cid, agent = next(iter(fleet.owners().items()))
        record = requests.get(f"{api.url}/api/users/{cid}", headers={"Authorization": f"Bearer {token}"},
                              timeout=10).json()  # fmt: skip
        assert f"rainforest-logger pinger/{record['owner']['pinger']}" == agent
        assert record["owner"]["lease"] == "held" and 0 < record["owner"]["lease_expires_in_s"] <= LEASE_S
    finally:
        api.stop()


@pytest.mark.timeout(900)  # its steps wait on leases and polls: minutes on a loaded machine
def test_pingers_share_the_fleet_hand_over_and_survive_a_redis_restart(
    start_sim: Callable[..., Sim], own_redis: RedisServer, make_settings: Callable[..., Settings],
    secret_key: str, tmp_path: Path,
) -> None:  # fmt: skip
    sim = start_sim(DEVICES, "--reading-interval-s", "4")
    data = tmp_path / "data"
    data.mkdir()
    env = {"REDIS_URL": own_redis.url, "SECRET_KEY": secret_key, "DATA_DIR": str(data),
           "EAGLE_CLOUD_URL": sim.url, "POLL_INTERVAL_S": str(INTERVAL_S), "POLL_TIMEOUT_S": str(TIMEOUT_S),
           "PINGER_LEASE_S": str(LEASE_S), "CRAWL_INTERVAL_S": "0", "LOCAL_REQUEST_GAP_S": "0"}  # fmt: skip
    users = tmp_path / "users.jl"
    users.write_bytes(sim.get("/control/users.jl"))
    assert rainforest("users", "import", str(users), env=env).returncode == 0
    fleet = Fleet(sim, own_redis, env, tmp_path)
    settings = make_settings(own_redis.url, sim.url, data_dir=data)
    events: dict[str, float] = {}  # what happened when, named in a failure
    try:
        # Three pingers: every device polled by exactly one of them, about a third each.
        a, b, c = fleet.start(), fleet.start(), fleet.start()
        wait_until(lambda: fleet.settled({a, b, c}), timeout_s=120, what="three pingers to share the fleet")
        polled = fleet.polled_by_exactly_one(2 * INTERVAL_S)
        assert polled == fleet.owners_of(polled), (
            "a device was polled by a pinger that does not hold its lease"
        )
        assert all(800 <= n <= 1200 for n in Counter(polled.values()).values())
        see_the_owners(fleet, env, secret_key)

        # A fourth joins: it takes about a quarter, and nothing moves between the other three.
        before = fleet.owners()
        d = fleet.start()

        # (it claims its share over a round or two, as the others let go)
        wait_until(lambda: fleet.settled({a, b, c, d}), timeout_s=120, what="the fourth pinger's share")
        after = fleet.owners()
        moved = [cid for cid in after if after[cid] != before[cid]]
        assert all(after[cid] == d for cid in moved) and 0.18 <= len(moved) / DEVICES <= 0.32
        fleet.polled_by_exactly_one(2 * INTERVAL_S)

        # kill -9 one: each of its devices is polled again by the others, once its lease runs out.
        dead = [cid for cid, agent in fleet.owners().items() if agent == a]
        fleet.pingers[a].kill()
        killed_at = time.time()
        events["killed"] = round(killed_at, 1)
        fleet.pingers[a].wait(10)

        def resumed() -> bool:
            seen = fleet.pollers()
            return all(seen.get(cid) and seen[cid][-1][0] != a and float(seen[cid][-1][2]) > killed_at
                       for cid in dead)  # fmt: skip

        wait_until(resumed, timeout_s=10 * LEASE_S, what="the killed pinger's devices to be polled again")
        wait_until(lambda: fleet.settled({b, c, d}), timeout_s=10 * LEASE_S, what="the fleet shared by three")

        # SIGTERM one: it hands its devices over (released, not left to expire) and exits 0.
        leaving = {cid for cid, agent in fleet.owners().items() if agent == b}
        fleet.pingers[b].send_signal(signal.SIGTERM)
        stopped_at = time.time()
        events["stopped"] = round(stopped_at, 1)
        assert fleet.pingers[b].wait(20) == 0
        # released as it left, not left to run out: no lease of it is in Redis once it has exited
        assert not {cid for cid, agent in fleet.owners().items() if agent == b}, "leases left to expire"

        def handed_over() -> bool:
            seen = fleet.pollers()
            return all(seen[cid][-1][0] in (c, d) and float(seen[cid][-1][2]) > stopped_at for cid in leaving)

        wait_until(
            handed_over, timeout_s=10 * LEASE_S, what="the leaving pinger's devices polled by the others"
        )
        assert fleet.settled({c, d})

        # Redis restarts mid-run: the pingers poll on meanwhile, and every lease stays sane.
        events["redis stopped"] = round(time.time(), 1)
        own_redis.stop()
        time.sleep(2 * INTERVAL_S)
        own_redis.start()
        events["redis started"] = round(time.time(), 1)
        wait_until(lambda: fleet.settled({c, d}), timeout_s=10 * LEASE_S, what="the leases after a restart")
        # A pinger whose lease ran out during the outage polls on (by design: availability first)
        # until its next round tells it another took them: one pinger per device again within
        # a few intervals, not necessarily in the first window after the owners settle.
        polled = fleet.polled_by_exactly_one_within(2 * INTERVAL_S, windows=4)
        assert polled == fleet.owners_of(polled)
    finally:
        events["all stopped"] = round(time.time(), 1)
        fleet.stop_all()

    # No reading written twice, through a kill, a handover and a Redis restart; readings lost
    # only those the killed pinger was given in its last interval and never wrote, and those a
    # pinger gave up waiting for (the simulator answered after the poll's timeout, as a loaded
    # machine can make it do): the pinger never had them, and said so in its log.
    files = written(settings)
    assert all(len(lines) == 1 for lines in files.values()), "a reading was written twice"
    truth = served(sim)
    missing = truth.keys() - files.keys()
    dead_ids = set(dead)
    failed = fleet.failed_polls()
    missing = {key for key in missing if not given_up(failed.get(key[0], []), truth[key]["device_time"])}  # type: ignore[arg-type]
    lost = sorted((cid, ts) for cid, ts in missing if cid not in dead_ids)
    assert not lost, (
        f"{len(lost)} readings of live pingers' devices were lost, e.g. {lost[:5]}; "
        f"served at {[truth[k]['device_time'] for k in lost[:5]]}, events at {events}; logs in {tmp_path}"
    )
    older = sorted(key for key in missing if truth[key]["device_time"] < killed_at - INTERVAL_S - 4.5)  # type: ignore[operator]
    assert not older, (
        f"the killed pinger lost {len(older)} readings older than its last interval, e.g. {older[:5]}"
    )
