"""A gateway can be registered only where a gateway can be: never at this deployment's own
services, nor at a loopback or link-local address unless GATEWAY_ALLOW_NETWORKS allows it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from app.eagle.reach import ReachPolicy
from app.errors import ValidationError
from app.settings import Settings
from tests.api_helpers import make_token, start_api
from tests.test_users_cli import rainforest

CODE = "0123456789abcdef"


def test_the_api_refuses_internal_addresses_and_the_deployments_own_services(
    redis_url: str, secret_key: str
) -> None:
    redis_port = urlsplit(redis_url).port
    api = start_api(redis_url, secret_key, GATEWAY_ALLOW_NETWORKS="")
    try:
        admin = {"Authorization": f"Bearer {make_token(redis_url, 'admin')}"}

        def register(cid: str, address: str) -> requests.Response:
            body = {"protocol": "eagle200-local", "address": address, "install_code": CODE}
            return requests.post(f"{api.url}/api/users/{cid}", json=body, headers=admin, timeout=10)

        refused = {
            "loopback": register("0e0001", "127.0.0.1:8080"),
            "localhost": register("0e0002", "http://localhost:9000"),
            "cloud metadata": register("0e0003", "169.254.169.254"),
            "IPv6 loopback": register("0e0004", "[::1]:80"),
            "Redis by name": register("0e0005", f"localhost:{redis_port}"),
        }
        for name, got in refused.items():
            assert got.status_code == 400, f"{name}: {got.status_code} {got.text}"
            message = got.json()["message"]
            assert "address" in message and message.endswith("."), name
        assert "own services" in refused["Redis by name"].json()["message"]
        assert register("0e0006", "192.168.1.20").status_code == 201  # a home network: where gateways are
        assert register("0e0007", "https://10.0.0.7:8443").status_code == 201
    finally:
        api.stop()
    allowed = start_api(redis_url, secret_key, GATEWAY_ALLOW_NETWORKS="127.0.0.0/8")
    try:
        admin = {"Authorization": f"Bearer {make_token(redis_url, 'admin2')}"}
        body = {"protocol": "eagle100-local", "address": "127.0.0.1:8080", "install_code": CODE}
        got = requests.post(f"{allowed.url}/api/users/0e0011", json=body, headers=admin, timeout=10)
        assert got.status_code == 201, got.text
        body["address"] = f"127.0.0.1:{redis_port}"  # allowed loopback, but it is Redis
        got = requests.post(f"{allowed.url}/api/users/0e0012", json=body, headers=admin, timeout=10)
        assert got.status_code == 400 and "own services" in got.json()["message"]
    finally:
        allowed.stop()


def test_users_import_refuses_them_line_by_line(redis_url: str, secret_key: str, tmp_path: Path) -> None:
    users = tmp_path / "users.jl"
    redis_port = urlsplit(redis_url).port
    users.write_text(
        f'{{"cloud_id": "0e0021", "protocol": "eagle200-local", "address": "127.0.0.1:{redis_port}", '
        f'"install_code": "{CODE}"}}\n'
        f'{{"cloud_id": "0e0022", "protocol": "eagle200-local", "address": "192.168.7.2", '
        f'"install_code": "{CODE}"}}\n'
    )
    env = {"REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path)}
    result = rainforest("users", "import", str(users), env=env)
    assert result.returncode == 1, result.stderr
    assert (
        f"{users}:1: address 127.0.0.1:{redis_port} is one of this deployment's own services" in result.stderr
    )
    assert "created 1" in result.stdout


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("192.168.1.20", True), ("eagle-0c1d2e.local:80", True), ("8.8.8.8", True),
        ("127.0.0.1", False), ("[::ffff:127.0.0.1]:80", False), ("[fe80::1]", False), ("0.0.0.0:80", False),
        ("224.0.0.1", False), ("169.254.1.1:8080", False),
    ],
)  # fmt: skip
def test_the_rule_on_literal_addresses(address: str, allowed: bool) -> None:
    policy = ReachPolicy.from_settings(Settings(redis_url="redis://10.9.9.9:6379/0"))
    host = urlsplit(f"http://{address}").hostname or ""
    try:
        resolved = [ipaddress.ip_address(host)]
    except ValueError:
        resolved = []  # a name only the pinger's network resolves: nothing to refuse it by
    if allowed:
        policy.check(address, resolved)
    else:
        with pytest.raises(ValidationError, match="GATEWAY_ALLOW_NETWORKS"):
            policy.check(address, resolved)
    with pytest.raises(ValidationError, match="own services"):
        policy.check("10.9.9.9:6379", [ipaddress.ip_address("10.9.9.9")])
