"""Redis as a managed service speaks TLS and wants a user: a real `redis-server` started with
`--tls-port`, its certificate signed by a CA made here (openssl), an ACL user with a password.
The processes reach it with `rediss://user:password@host:port/0` and `REDIS_CA_FILE`; without the
CA they refuse it with one sentence, and the password is in no log line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import Sim, free_port, wait_until

USER, PASSWORD = "rf-app", "s3cret-Redis-pw"


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed: (ca.crt, server.crt, server.key)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=rainforest-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "ext")  # fmt: skip
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[tuple[str, Path]]:
    """(rediss:// URL with the ACL user, the CA file) of a TLS-only redis-server."""
    folder = Path(tempfile.mkdtemp(prefix="rf-tls-"))
    ca, cert, key = make_ca(folder)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--user", "default", "off",
         "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def up() -> bool:
        found = subprocess.run(
            ["redis-cli", "--tls", "--cacert", str(ca), "-p", str(port), "--user", USER, "--pass", PASSWORD,
             "--no-auth-warning", "ping"],
            capture_output=True, text=True,
        )  # fmt: skip
        return found.stdout.strip() == "PONG"

    try:
        wait_until(up, timeout_s=30, what="the TLS redis-server")
        yield f"rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/0", ca
    finally:
        proc.terminate()
        proc.wait(10)


def rf(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_every_process_reaches_a_tls_redis_with_a_user_and_a_private_ca(
    tls_redis: tuple[str, Path], secret_key: str, tmp_path: Path
) -> None:
    url, ca = tls_redis
    env = {**os.environ, "REDIS_URL": url, "REDIS_CA_FILE": str(ca), "SECRET_KEY": secret_key,
           "DATA_DIR": str(tmp_path)}  # fmt: skip
    made = rf(env, "tokens", "create", "over-tls")
    assert made.returncode == 0 and made.stdout.startswith("rft_"), made.stderr
    assert "over-tls" in rf(env, "tokens", "list").stdout
    status = rf(env, "status")  # (exits 1: no process runs here; it read everything over TLS)
    assert "processes" in status.stdout and "carts" in status.stdout and not status.stderr, status.stderr
    unsure = {**env, "REDIS_CA_FILE": ""}  # the system's CAs do not know this one
    refused = rf(unsure, "tokens", "list")
    assert refused.returncode == 1 and "certificate verify failed" in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1, "one sentence"
    wrong = rf({**env, "REDIS_URL": url.replace(PASSWORD, "not-the-password")}, "tokens", "list")
    assert wrong.returncode == 1 and "not-the-password" not in wrong.stderr and PASSWORD not in wrong.stderr
    for out in (made, status, refused, wrong):
        assert PASSWORD not in out.stdout + out.stderr


def test_a_pinger_polls_a_fleet_through_a_tls_redis(
    tls_redis: tuple[str, Path], secret_key: str, tmp_path: Path, start_sim: Callable[..., Sim]
) -> None:
    """Leases, heartbeats and counters (scripts, pipelines, pub/sub) over TLS with an ACL user."""
    url, ca = tls_redis
    sim = start_sim(6, "--protocols", "eagle100-local=1,eagle200-local=1")
    env = {**os.environ, "REDIS_URL": url, "REDIS_CA_FILE": str(ca), "SECRET_KEY": secret_key,
           "DATA_DIR": str(tmp_path), "EAGLE_CLOUD_URL": sim.url, "GATEWAY_ALLOW_NETWORKS": "127.0.0.0/8",
           "POLL_INTERVAL_S": "1", "POLL_TIMEOUT_S": "0.9", "LOCAL_REQUEST_GAP_S": "0"}  # fmt: skip
    users = tmp_path / "fleet.jl"
    users.write_bytes(sim.get("/control/users.jl"))
    assert rf(env, "users", "import", str(users)).returncode == 0
    with subprocess.Popen([sys.executable, "-m", "app.cli", "pinger"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as pinger:  # fmt: skip
        try:

            def polled() -> bool:
                listed = rf(env, "users", "list", "--json").stdout.splitlines()
                return len(listed) == 6 and all(orjson.loads(x)["total_events_logged"] > 0 for x in listed)

            wait_until(polled, timeout_s=60, what="every device polled through the TLS Redis")
        finally:
            pinger.send_signal(signal.SIGTERM)
            pinger.wait(30)
    assert pinger.returncode == 0
    log = (tmp_path / "logs" / "pinger" / "pinger.log").read_text()
    assert PASSWORD not in log, "the ACL password is in no log line"
