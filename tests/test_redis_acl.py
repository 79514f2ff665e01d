"""Each process under the least-privilege ACL user `deploy/redis/users.acl` gives it (a real
redis-server started with that file, passwords filled in): the operator's commands register a
fleet, a pinger polls it, the server answers the API, takes pushes and queues a cart, cartd
builds it, rotate makes a pass, alerts evaluate; no process meets a NOPERM, and a user cannot do
what it has no need for (KEYS, FLUSHALL, another prefix's keys)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.api_helpers import start_api
from tests.conftest import ROOT, Sim, free_port, wait_until
from tests.test_redis_tls import rf

PROCESSES = ("server", "pinger", "rotate", "cartd", "alerts", "operator")


@pytest.fixture
def acl_redis() -> Iterator[int]:
    folder = Path(tempfile.mkdtemp(prefix="rf-acl-"))
    acl = (ROOT / "deploy" / "redis" / "users.acl").read_text().replace("CHANGE-ME-", "pw-")
    (folder / "users.acl").write_text(acl)
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--aclfile", "users.acl", "--save", "",
                             "--appendonly", "no", "--bind", "127.0.0.1"], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def up() -> bool:
        said = subprocess.run(["redis-cli", "-p", str(port), "--user", "rf-operator", "--pass", "pw-operator",
                               "--no-auth-warning", "ping"], capture_output=True, text=True)  # fmt: skip
        return said.stdout.strip() == "PONG"

    try:
        wait_until(up, timeout_s=30, what="redis-server with the ACL file")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def url(port: int, process: str) -> str:
    return f"redis://rf-{process}:pw-{process}@127.0.0.1:{port}/0"


def test_every_process_works_under_its_own_acl_user_and_no_more(
    acl_redis: int, secret_key: str, tmp_path: Path, start_sim: Callable[..., Sim]
) -> None:
    port = acl_redis
    sim = start_sim(6, "--protocols", "eagle100-local=1,push=1")
    base = {**os.environ, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path), "EAGLE_CLOUD_URL": sim.url,
            "GATEWAY_ALLOW_NETWORKS": "127.0.0.0/8", "POLL_INTERVAL_S": "1", "POLL_TIMEOUT_S": "0.9",
            "LOCAL_REQUEST_GAP_S": "0", "ALERT_DIGEST_AT": "off"}  # fmt: skip
    env = {p: {**base, "REDIS_URL": url(port, p)} for p in PROCESSES}
    users = tmp_path / "fleet.jl"
    users.write_bytes(sim.get("/control/users.jl"))
    imported = rf(env["operator"], "users", "import", str(users))
    assert imported.returncode == 0, imported.stderr
    token = rf(env["operator"], "tokens", "create", "acl-test").stdout.strip()
    polled = [str(u["cloud_id"]) for u in sim.users() if u["protocol"] != "push"]

    logs: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "app.cli", "pinger"], env=env["pinger"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as pinger:  # fmt: skip
        server = start_api(url(port, "server"), secret_key, EAGLE_CLOUD_URL=sim.url, DATA_DIR=str(tmp_path))
        cartd = subprocess.Popen([sys.executable, "-m", "app.cli", "cartd"], env=env["cartd"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            h = {"Authorization": f"Bearer {token}"}

            def counted() -> bool:
                listed = requests.get(f"{server.url}/api/users/", headers=h, timeout=10).json()["users"]
                return all(u["total_events_logged"] > 0 for u in listed if u["cloud_id"] in polled)

            wait_until(counted, timeout_s=60, what="every polled device counted by the pinger")
            asked = requests.post(f"{server.url}/api/carts/", headers=h, timeout=10,
                                  json={"devices": polled[:1], "start": time.time() - 3600,
                                        "end": time.time() + 60, "format": "jl"})  # fmt: skip
            assert asked.status_code == 201, asked.text

            def built() -> bool:
                got = requests.head(f"{server.url}/api/carts/{asked.json()['id']}", headers=h, timeout=10)
                return got.headers.get("X-Cart-Status") == "ready"

            wait_until(built, timeout_s=120, what="the cart built by cartd")
            ran = rf(env["rotate"], "rotate")
            assert ran.returncode == 0, ran.stderr
            judged = rf(env["alerts"], "alerts", "evaluate")
            assert judged.returncode == 0, judged.stderr
            logs += [server.logs(), ran.stderr, judged.stderr]
        finally:
            for proc in (pinger, cartd):
                proc.send_signal(signal.SIGTERM)
            for proc in (pinger, cartd):
                _, err = proc.communicate(timeout=60)
                logs.append(err.decode())
            server.stop()
    assert pinger.returncode == 0 and cartd.returncode == 0
    for log in [*logs, *(p.read_text() for p in tmp_path.glob("logs/*/*.log"))]:
        assert "NOPERM" not in log, log[-2000:]
    # and no more than that: a process's user cannot list every key, wipe Redis or read elsewhere
    for process in PROCESSES:
        for command in (["keys", "*"], ["flushall"], ["get", "other:app:key"], ["config", "get", "*"]):
            login = ["--user", f"rf-{process}", "--pass", f"pw-{process}", "--no-auth-warning"]
            said = subprocess.run(
                ["redis-cli", "-p", str(port), *login, *command], capture_output=True, text=True
            )
            assert "NOPERM" in said.stdout + said.stderr, (process, command, said.stdout)
