"""Fixtures that start real servers on free ports: redis-server and the project's simulator."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import redis as syncredis
from cryptography.fernet import Fernet

from app import keys
from app.settings import Settings
from tests.redis_cluster import RedisClusterServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class RedisServer:
    """A private redis-server with append-only persistence, restartable on the same port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            pytest.fail("redis-server is not installed: run `make test`, which installs it.")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_bin, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self.ping, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            with syncredis.Redis(port=self.port, socket_connect_timeout=0.2) as client:
                return bool(client.ping())
        except syncredis.ConnectionError:
            return False

    def flushall(self) -> None:
        with syncredis.Redis(port=self.port) as client:
            client.flushall()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-cluster", action="store_true",
        help="run the Redis-touching tests against a three-primary Redis Cluster on loopback",
    )  # fmt: skip


CLUSTER = False  # set by --redis-cluster


def pytest_configure(config: pytest.Config) -> None:
    global CLUSTER
    CLUSTER = bool(config.getoption("--redis-cluster"))
    if CLUSTER:
        keys.configure(cluster=True)  # the test's own look at keys names them as the processes do


def make_redis(workdir: Path) -> RedisServer | RedisClusterServer:
    """A private Redis (not started): one server, or with --redis-cluster a three-primary cluster."""
    return RedisClusterServer(workdir) if CLUSTER else RedisServer(workdir)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | RedisClusterServer]:
    server = make_redis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer | RedisClusterServer) -> str:
    """The shared test Redis, emptied for each test."""
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer | RedisClusterServer]:
    """A Redis of this test's own, for tests that stop and restart it."""
    server = make_redis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@dataclass
class Sim:
    """A running `rainforest sim` subprocess and helpers for its control API."""

    port: int
    proc: subprocess.Popen[bytes]
    devices: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin/post_manager"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
            return bytes(resp.read())

    def set_faults(self, faults: dict[str, object]) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/control/faults", data=orjson.dumps(faults), method="PUT"
        )
        urllib.request.urlopen(req, timeout=5).read()

    def users(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.get("/control/users.jl").splitlines()]

    def served(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.get("/control/served").splitlines()]

    def pushed(self) -> list[dict[str, object]]:
        """Every reading the simulator's push devices were answered 2xx for."""
        return [orjson.loads(line) for line in self.get("/control/pushed").splitlines()]

    def set_push(self, settings: dict[str, object]) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/control/push", data=orjson.dumps(settings), method="PUT"
        )
        urllib.request.urlopen(req, timeout=5).read()


def start_sim_process(devices: int, *args: str) -> Sim:
    port = free_port()
    cmd = [sys.executable, "-m", "app.cli", "sim", "--devices", str(devices), "--port", str(port), *args]
    workdir = Path(tempfile.mkdtemp(prefix="rf-sim-"))
    env = {**os.environ, "DATA_DIR": str(workdir)}
    with (workdir / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=err)
    sim = Sim(port, proc, devices)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"simulator exited: {(workdir / 'stderr.log').read_text()}")
        try:
            sim.get("/healthz")
            return True
        except OSError:
            return False

    wait_until(up, what="the simulator")
    return sim


@contextmanager
def running_sim(devices: int, *args: str) -> Iterator[Sim]:
    """A simulator for a with-block (module-scoped fixtures use it)."""
    sim = start_sim_process(devices, *args)
    try:
        yield sim
    finally:
        sim.proc.terminate()
        sim.proc.wait(10)


@pytest.fixture
def start_sim() -> Iterator[Callable[..., Sim]]:
    """Factory: start_sim(devices, *extra_cli_args) → a running simulator, stopped afterwards."""
    started: list[Sim] = []

    def start(devices: int = 20, *args: str) -> Sim:
        sim = start_sim_process(devices, "--seed", "7", "--reading-interval-s", "1", "--record", *args)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.proc.terminate()
        sim.proc.wait(10)


@pytest.fixture(scope="session")
def secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def make_settings(tmp_path: Path, secret_key: str) -> Callable[..., Settings]:
    """Settings for a test: its own DATA_DIR, short intervals, the given Redis and relay URL."""

    def make(redis_url: str, eagle_cloud_url: str = "http://127.0.0.1:9/none", **kw: object) -> Settings:
        values: dict[str, object] = {
            "redis_url": redis_url,
            "eagle_cloud_url": eagle_cloud_url,
            "data_dir": tmp_path / "data",
            "poll_interval_s": 0.5,
            "poll_timeout_s": 0.4,
            "resync_interval_s": 2.0,
            "secret_key": secret_key,
            "log_level": "INFO",
        }
        values.update(kw)
        return Settings(**values)  # type: ignore[arg-type]

    return make


# --- an S3-protocol server: moto in server mode, over real HTTP -----------------------------

S3_KEY_ID, S3_SECRET = "rainforest-test", "rainforest-test-secret"


@dataclass
class S3Server:
    """`moto_server` on a free port; `bucket()` makes a fresh bucket for one test."""

    port: int
    proc: subprocess.Popen[bytes]
    made: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> object:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET, region_name="us-east-1",
        )  # fmt: skip

    def bucket(self) -> str:
        self.made += 1
        name = f"rf-test-{os.getpid()}-{self.made}"
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name

    def env(self) -> dict[str, str]:
        """Environment for a client no one here wrote (the AWS CLI) to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }  # fmt: skip


def start_s3_server(workdir: Path) -> S3Server:
    exe = Path(sys.executable).with_name("moto_server")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "moto.log").open("wb") as err:
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)], cwd=workdir, stdout=err, stderr=err
        )

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"moto_server exited: {(workdir / 'moto.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(up, timeout_s=30, what="moto_server")
    return S3Server(port, proc)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("moto"))
    yield server
    server.proc.terminate()
    server.proc.wait(10)


@pytest.fixture(params=["file", "s3"])
def archive_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> Settings:
    """Settings whose ARCHIVE_URL is a fresh folder (file://) or a fresh bucket on moto (s3://)."""
    if request.param == "file":
        return make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}")
    s3: S3Server = request.getfixturevalue("s3_server")
    return make_settings(
        redis_url, archive_url=f"s3://{s3.bucket()}/study-a", s3_endpoint_url=s3.endpoint,
        aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET, aws_region="us-east-1",
    )  # fmt: skip
