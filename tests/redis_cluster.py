"""A real three-primary Redis Cluster on loopback, for the suite's `--redis-cluster` runs: three
`redis-server --cluster-enabled yes` joined by `redis-cli --cluster create`, each with a private
folder (append-only data and its nodes.conf), restartable on the same ports."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as syncredis

NODES = 3


def sync_client(url: str, **kw: Any) -> Any:
    """A blocking client for a test's own look at Redis: a cluster client for a cluster's URL."""
    if "+cluster://" in url:
        return syncredis.RedisCluster.from_url(url.replace("+cluster://", "://"), **kw)
    return syncredis.Redis.from_url(url, **kw)


@dataclass
class RedisClusterServer:
    """Three primaries sharing the 16,384 slots; `url` names the first (clients learn the rest)."""

    workdir: Path
    ports: list[int] = field(default_factory=list)
    bus_ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from tests.conftest import free_port

        if not self.ports:
            self.ports = [free_port() for _ in range(NODES)]
            self.bus_ports = [free_port() for _ in range(NODES)]

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        from tests.conftest import wait_until

        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            pytest.fail("redis-server is not installed: run `make test`, which installs it.")
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            folder = self.workdir / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            self.procs.append(subprocess.Popen(
                [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                 "--dir", str(folder), "--cluster-enabled", "yes", "--cluster-port", str(bus),
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for port in self.ports:
            wait_until(lambda p=port: _ping(p), what=f"redis-server (cluster node) on port {port}")  # type: ignore[misc]
        if _info(self.ports[0]).get("cluster_slots_assigned") == "0":
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
            )  # fmt: skip
        wait_until(self.ready, timeout_s=60, what="the Redis Cluster to serve every slot on every node")

    def ready(self) -> bool:
        for port in self.ports:
            info = _info(port)
            if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(NODES):
                return False
        return True

    def ping(self) -> bool:
        return all(_ping(p) for p in self.ports)

    def flushall(self) -> None:
        for port in self.ports:
            with syncredis.Redis(port=port) as client:
                client.flushall()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)
        self.procs = []


def _ping(port: int) -> bool:
    try:
        with syncredis.Redis(port=port, socket_connect_timeout=0.2) as client:
            return bool(client.ping())
    except syncredis.ConnectionError:
        return False


def _info(port: int) -> dict[str, str]:
    try:
        with syncredis.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True) as client:
            text = str(client.execute_command("CLUSTER", "INFO"))
    except syncredis.RedisError:
        return {}
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def async_client(url: str, **kw: Any) -> Any:
    """An asyncio client for a test's own look at Redis: a cluster client for a cluster's URL."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    if "+cluster://" in url:
        return RedisCluster.from_url(url.replace("+cluster://", "://"), **kw)
    return aioredis.Redis.from_url(url, **kw)


def node_urls(url: str) -> list[str]:
    """Every primary's own URL (a cluster's), or the URL itself (one server's)."""
    if "+cluster://" not in url:
        return [url]
    with sync_client(url) as client:
        return [f"redis://{n.host}:{n.port}/0" for n in client.get_primaries()]
