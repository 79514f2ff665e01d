"""Redis that fails over: a primary, a replica and three `redis-sentinel`s on loopback (Debian's
packages). A pinger polls a simulated fleet through `REDIS_SENTINELS`; the primary is killed with
`kill -9`; the sentinels promote the replica; the pinger carries on against the new primary by
itself, says so in one log line, and every served reading is in the hourly files exactly once."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from app.lines import read as read_lines
from tests.conftest import Sim, free_port, wait_until
from tests.test_pinger import served
from tests.test_redis_tls import rf
from tests.test_store import _peer


@dataclass
class Group:
    primary: subprocess.Popen[bytes]
    primary_port: int
    replica_port: int
    sentinel_ports: list[int]
    procs: list[subprocess.Popen[bytes]]

    def master(self) -> int:
        lines = _cli(self.sentinel_ports[0], "sentinel", "get-master-addr-by-name", "mymaster").split()
        return int(lines[1]) if len(lines) == 2 else 0


def _cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout


def _ping(port: int) -> bool:
    return _cli(port, "ping").strip() == "PONG"


@pytest.fixture
def sentinel_group() -> Iterator[Group]:
    folder = Path(tempfile.mkdtemp(prefix="rf-sentinel-"))
    primary_port, replica_port = free_port(), free_port()
    common = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--repl-diskless-sync-delay", "0"]
    primary = subprocess.Popen(["redis-server", "--port", str(primary_port), *common], cwd=folder,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    replica = subprocess.Popen(["redis-server", "--port", str(replica_port), "--replicaof", "127.0.0.1",
                                str(primary_port), *common], cwd=folder,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    procs = [primary, replica]
    sentinel_ports = [free_port() for _ in range(3)]
    for n, port in enumerate(sentinel_ports):
        conf = folder / f"sentinel-{n}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {primary_port} 2\n"
            "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n"
            "sentinel parallel-syncs mymaster 1\n"
        )
        procs.append(subprocess.Popen(["redis-sentinel", str(conf)], cwd=folder,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    group = Group(primary, primary_port, replica_port, sentinel_ports, procs)
    try:
        wait_until(lambda: _ping(primary_port) and _ping(replica_port), timeout_s=30, what="the two servers")
        wait_until(lambda: "master_link_status:up" in _cli(replica_port, "info", "replication"), timeout_s=30,
                   what="the replica's first sync")  # fmt: skip
        wait_until(lambda: all(_ping(p) for p in sentinel_ports), timeout_s=30, what="three sentinels")
        wait_until(lambda: group.master() == primary_port, timeout_s=30, what="the sentinels to agree")
        known = lambda p: str(replica_port) in _cli(p, "sentinel", "replicas", "mymaster")  # noqa: E731
        # they learn of the replica from the primary's INFO, every 10 s
        wait_until(lambda: all(known(p) for p in sentinel_ports), timeout_s=60, what="the sentinels' replica")
        yield group
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def test_a_pinger_follows_a_sentinel_failover_and_loses_no_reading(
    sentinel_group: Group, secret_key: str, tmp_path: Path, start_sim: Callable[..., Sim]
) -> None:
    g = sentinel_group
    sim = start_sim(8, "--protocols", "eagle100-local=1,eagle200-local=1")
    sentinels = ",".join(f"127.0.0.1:{p}" for p in g.sentinel_ports)
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SENTINELS": sentinels,
           "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path), "EAGLE_CLOUD_URL": sim.url,
           "GATEWAY_ALLOW_NETWORKS": "127.0.0.0/8", "POLL_INTERVAL_S": "1", "POLL_TIMEOUT_S": "0.9",
           "LOCAL_REQUEST_GAP_S": "0", "PINGER_LEASE_S": "20"}  # fmt: skip
    users = tmp_path / "fleet.jl"
    users.write_bytes(sim.get("/control/users.jl"))
    assert rf(env, "users", "import", str(users)).returncode == 0

    def events() -> int:
        listed = rf(env, "users", "list", "--json").stdout.splitlines()
        return sum(int(orjson.loads(x)["total_events_logged"]) for x in listed) if len(listed) == 8 else 0

    with subprocess.Popen([sys.executable, "-m", "app.cli", "pinger"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as pinger:  # fmt: skip
        try:
            wait_until(lambda: events() > 8, timeout_s=60, what="readings counted in the first primary")
            _cli(g.primary_port, "wait", "1", "5000")  # (replication is asynchronous: see docs/deploying.md)
            killed = time.monotonic()
            g.primary.send_signal(signal.SIGKILL)
            wait_until(lambda: g.master() == g.replica_port, timeout_s=60, what="the sentinels' failover")
            promoted = time.monotonic() - killed
            after = events()
            wait_until(lambda: events() > after + 8, timeout_s=60, what="counting again in the new primary")
            print(
                f"failover: promoted {promoted:.1f} s after the kill; counting in the new primary "
                f"{time.monotonic() - killed:.1f} s after it"
            )  # fmt: skip (pytest -s shows it)
        finally:
            pinger.send_signal(signal.SIGTERM)
            pinger.wait(60)
    assert pinger.returncode == 0
    lines: dict[tuple[str, int], int] = {}
    for path in tmp_path.glob("logs/????-??-??-??/*.jl"):
        for r in read_lines(path).records:
            if r["kind"] == "demand":
                key = (str(r["cloud_id"]), int(r["device_time"]) - 946684800)
                lines[key] = lines.get(key, 0) + 1
    assert set(lines) == set(served(sim)), "every served reading written, through the failover"
    assert all(n == 1 for n in lines.values()), "and each once"
    log = [orjson.loads(x) for x in (tmp_path / "logs" / "pinger" / "pinger.log").read_bytes().splitlines()]
    said = [x for x in log if x.get("msg", x.get("message", "")).startswith("Redis failed over")]
    assert len(said) == 1 and said[0]["to"] == f"127.0.0.1:{g.replica_port}", said


@pytest.fixture
def one_sentinel() -> Iterator[tuple[str, int]]:
    """A primary and one sentinel watching it (quorum 1): enough to be handed the primary."""
    folder = Path(tempfile.mkdtemp(prefix="rf-sentinel-one-"))
    primary_port, sentinel_port = free_port(), free_port()
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {primary_port} 1\n"
    )
    procs = [
        subprocess.Popen(["redis-server", "--port", str(primary_port), "--save", "", "--bind", "127.0.0.1"],
                         cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["redis-sentinel", str(conf)], cwd=folder, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        up = lambda: _ping(primary_port) and _ping(sentinel_port)  # noqa: E731
        wait_until(up, timeout_s=30, what="the primary and the sentinel")
        yield f"127.0.0.1:{sentinel_port}", primary_port
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


async def test_the_cart_queue_behind_sentinels_waits_longer_than_a_read_timeout(
    one_sentinel: tuple[str, int], tmp_path: Path
) -> None:
    """saq's workers wait on BLMOVE for as long as no job comes; through the sentinels too, the
    queue's client must not cut a wait at redis-py's default read timeout (5 s). Closed, it
    leaves no connection open, to the primary or to the sentinel it asked for it."""
    from app import keys
    from app.settings import Settings
    from app.store import queue_client

    sentinel, primary = one_sentinel
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SENTINELS": sentinel, "DATA_DIR": str(tmp_path)}
    client = queue_client(Settings.from_env(env, dotenv_path=None))
    try:
        waited = await client.blmove(f"{keys.cart_queue()}:none", f"{keys.cart_queue()}:taken", 6.0)
        assert waited is None  # nothing came in 6 s, and the wait was not cut short
    finally:
        await client.aclose()
    await asyncio.sleep(0.1)  # a closed transport lets its socket go on the loop's next turn
    gc.collect()
    ports = {int(sentinel.rsplit(":", 1)[1]), primary}
    sockets = [o for o in gc.get_objects() if isinstance(o, socket.socket) and o.fileno() != -1]
    left = [s for s in sockets if _peer(s) in ports]
    assert not left, f"{len(left)} connection(s) left open by a closed client: {left}"
