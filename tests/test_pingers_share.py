"""Several pinger processes sharing one fleet through Redis leases.

Real processes, a real redis-server (restarted mid-run), the simulator over HTTP. The simulator
notes which pinger (by User-Agent) asked each device for its demand, so "polled by exactly one"
is read off the devices' side, not the pingers' own account. The pingers share one DATA_DIR, as
the containers share a volume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import requests

from app import keys
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
DEVICES = 3000


class Fleet:
    """The simulator, the Redis, and the pinger processes started against them."""

    def __init__(self, sim: Sim, redis: RedisServer, env: dict[str, str], workdir: Path) -> None:
        self.sim, self.redis, self.env, self.workdir = sim, redis, env, workdir
        self.pingers: dict[str, subprocess.Popen[bytes]] = {}  # agent → process

    def start(self) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "pinger"], cwd=self.workdir, env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        agent = f"rainforest-logger pinger/{os.uname().nodename}:{proc.pid}"
        self.pingers[agent] = proc
        return agent

    def owners(self) -> dict[str, str]:
        """cloud_id → agent of the pinger holding its lease."""
        with sync_client(self.redis.url, decode_responses=True) as r:
            return {cid: f"rainforest-logger pinger/{p}" for cid, p in r.hgetall(keys.owners()).items()}

    def pollers(self) -> dict[str, list[list[object]]]:
        return dict(orjson.loads(self.sim.get("/control/pollers")))

    def forget_pollers(self) -> None:
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.sim.port}/control/pollers", method="DELETE")
        urllib.request.urlopen(req, timeout=5).read()

    def settled(self, live: set[str]) -> bool:
        owners = self.owners()
        return len(owners) == DEVICES and set(owners.values()) == live

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
        """Forget who polled, wait, and read back each device's one poller (fails on two)."""
        self.forget_pollers()
        time.sleep(window_s)
        seen = self.pollers()
        assert len(seen) == DEVICES, f"{DEVICES - len(seen)} devices were not polled at all"
        twice = {cid: runs for cid, runs in seen.items() if len({run[0] for run in runs}) > 1}
        assert not twice, f"{len(twice)} devices were polled by two pingers, e.g. {next(iter(twice.items()))}"
        return {cid: str(runs[0][0]) for cid, runs in seen.items()}

    def stop_all(self) -> None:
        for proc in self.pingers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.pingers.values():
            proc.wait(20)


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


def test_pingers_share_the_fleet_hand_over_and_survive_a_redis_restart(
    start_sim: Callable[..., Sim], own_redis: RedisServer, make_settings: Callable[..., Settings],
    secret_key: str, tmp_path: Path,
) -> None:  # fmt: skip
    sim = start_sim(DEVICES, "--reading-interval-s", "4")
    data = tmp_path / "data"
    data.mkdir()
    env = {"REDIS_URL": own_redis.url, "SECRET_KEY": secret_key, "DATA_DIR": str(data),
           "EAGLE_CLOUD_URL": sim.url, "POLL_INTERVAL_S": str(INTERVAL_S), "POLL_TIMEOUT_S": "3.5",
           "PINGER_LEASE_S": str(LEASE_S), "CRAWL_INTERVAL_S": "0", "LOCAL_REQUEST_GAP_S": "0"}  # fmt: skip
    users = tmp_path / "users.jl"
    users.write_bytes(sim.get("/control/users.jl"))
    assert rainforest("users", "import", str(users), env=env).returncode == 0
    fleet = Fleet(sim, own_redis, env, tmp_path)
    settings = make_settings(own_redis.url, sim.url, data_dir=data)
    try:
        # Three pingers: every device polled by exactly one of them, about a third each.
        a, b, c = fleet.start(), fleet.start(), fleet.start()
        wait_until(lambda: fleet.settled({a, b, c}), timeout_s=40, what="three pingers to share the fleet")
        polled = fleet.polled_by_exactly_one(2 * INTERVAL_S)
        assert polled == fleet.owners(), "a device was polled by a pinger that does not hold its lease"
        assert all(800 <= n <= 1200 for n in Counter(polled.values()).values())
        see_the_owners(fleet, env, secret_key)

        # A fourth joins: it takes about a quarter, and nothing moves between the other three.
        before = fleet.owners()
        d = fleet.start()

        def fourth_settled() -> bool:  # (it claims its share over a round or two, the others let go)
            owners = fleet.owners()
            return fleet.settled({a, b, c, d}) and sum(p == d for p in owners.values()) >= 0.18 * DEVICES

        wait_until(fourth_settled, timeout_s=60, what="the fourth pinger's share")
        after = fleet.owners()
        moved = [cid for cid in after if after[cid] != before[cid]]
        assert all(after[cid] == d for cid in moved) and 0.18 <= len(moved) / DEVICES <= 0.32
        fleet.polled_by_exactly_one(2 * INTERVAL_S)

        # kill -9 one: each of its devices is polled again, by the others, within 30 s.
        dead = [cid for cid, agent in fleet.owners().items() if agent == a]
        fleet.pingers[a].kill()
        killed_at = time.time()
        fleet.pingers[a].wait(10)

        def resumed() -> bool:
            seen = fleet.pollers()
            return all(seen.get(cid) and seen[cid][-1][0] != a and float(seen[cid][-1][2]) > killed_at
                       for cid in dead)  # fmt: skip

        wait_until(resumed, timeout_s=30, what="the killed pinger's devices to be polled again")
        assert fleet.settled({b, c, d})

        # SIGTERM one: it hands its devices over (released, not left to expire) and exits 0.
        leaving = {cid for cid, agent in fleet.owners().items() if agent == b}
        fleet.pingers[b].send_signal(signal.SIGTERM)
        stopped_at = time.time()
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
        own_redis.stop()
        time.sleep(2 * INTERVAL_S)
        own_redis.start()
        wait_until(lambda: fleet.settled({c, d}), timeout_s=30, what="leases after the Redis restart")
        # A pinger whose lease ran out during the outage polls on (by design: availability first)
        # until its next round tells it another took them: one pinger per device again within
        # a few intervals, not necessarily in the first window after the owners settle.
        polled = fleet.polled_by_exactly_one_within(2 * INTERVAL_S, windows=4)
        assert polled == fleet.owners()
    finally:
        fleet.stop_all()

    # No reading written twice, through a kill, a handover and a Redis restart; readings lost
    # only those the killed pinger was given in its last interval and never wrote.
    files = written(settings)
    assert all(len(lines) == 1 for lines in files.values()), "a reading was written twice"
    truth = served(sim)
    missing = truth.keys() - files.keys()
    dead_ids = set(dead)
    assert all(cid in dead_ids for cid, _ in missing), "a reading of a live pinger's device was lost"
    assert all(
        truth[key]["device_time"] >= killed_at - INTERVAL_S - 4.5  # type: ignore[operator]
        for key in missing
    ), "the killed pinger lost readings older than its last interval"
