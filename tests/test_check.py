"""`rainforest users check ID` and `POST /api/users/{id}/check` against the simulator: one gateway
of each local kind (REST, cgi_manager, EAGLE-200) answers with what it is; stored credentials
that are wrong, and a gateway that is off, each get their one sentence."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import requests

from app.credentials import Vault
from app.devices import DeviceInput
from app.store import Store
from tests.api_helpers import make_token, start_api
from tests.conftest import Sim
from tests.test_pinger import register


def test_a_check_says_what_the_gateway_is_or_why_not(
    start_sim: Callable[..., Sim],
    redis_url: str,
    secret_key: str,
    make_settings: Callable[..., object],
    tmp_path: Path,
) -> None:
    sim = start_sim(6, "--protocols", "eagle100-local=1,eagle100-cgi=1,eagle200-local=1")
    settings = make_settings(redis_url, sim.url)
    asyncio.run(register(sim, settings))  # type: ignore[arg-type]
    users = {str(u["cloud_id"]): u for u in sim.users()}
    rest = next(c for c, u in users.items() if u["protocol"] == "eagle100-local" and not u.get("api"))
    cgi = next(c for c, u in users.items() if u.get("api") == "cgi_manager")
    e200 = next(c for c, u in users.items() if u["protocol"] == "eagle200-local")
    wrong = next(c for c in users if c not in (rest, cgi, e200))

    async def bad_code() -> None:  # registered with another install code than the gateway's
        store = Store.from_url(redis_url)
        try:
            line = {**users[wrong], "install_code": "0123456789ABCDEF"}
            await store.devices.save_device(DeviceInput.from_mapping(line), Vault(secret_key))
        finally:
            await store.close()

    asyncio.run(bad_code())
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secret_key,
        "GATEWAY_ALLOW_NETWORKS": "127.0.0.0/8",
    }

    def rf(cid: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", "users", "check", cid], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    said = {cid: rf(cid) for cid in (rest, cgi, e200, wrong)}
    assert said[rest].returncode == 0 and "through the local post_manager API" in said[rest].stdout
    assert "model Z109-EAGLE" in said[rest].stdout and " kW now" in said[rest].stdout
    assert said[cgi].returncode == 0 and "through the local cgi_manager API" in said[cgi].stdout
    assert said[e200].returncode == 0 and "meter 0x" in said[e200].stdout, said[e200].stdout
    assert said[wrong].returncode == 1 and "refused the stored credentials" in said[wrong].stdout
    assert all(out.stdout.count("\n") == 1 for out in said.values()), "one sentence each"
    # the import can check what it registers: the cgi_manager gateway, given without its api, is found
    users_file = tmp_path / "fleet.jl"
    users_file.write_bytes(orjson.dumps({k: v for k, v in users[cgi].items() if k != "api"}) + b"\n")
    imported = subprocess.run(
        [sys.executable, "-m", "app.cli", "users", "import", "--check", str(users_file)],
        env={**env, "GATEWAY_ALLOW_NETWORKS": "127.0.0.0/8"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0 and "through the local cgi_manager API" in imported.stdout, (
        imported.stdout
    )
    sim.set_faults({"devices": {rest: {"error": "offline"}}})
    off = rf(rest)
    assert off.returncode == 1 and "could not be reached through the local post_manager API" in off.stdout
    # the same through the API, for an admin token
    server = start_api(redis_url, secret_key)
    try:
        token = make_token(redis_url, "checker")
        h = {"Authorization": f"Bearer {token}"}
        got = requests.post(f"{server.url}/api/users/{cgi}/check", headers=h, timeout=60)
        assert got.status_code == 200 and got.json()["ok"] is True and got.json()["meter"].startswith("0x")
        # registered without its API, with a check: found on cgi_manager, and kept
        line = {k: v for k, v in users[cgi].items() if k not in ("api", "cloud_id")}
        made = requests.post(
            f"{server.url}/api/users/{cgi}", json={**line, "check": True}, headers=h, timeout=60
        )
        assert made.status_code == 200 and made.json()["check"]["detected_api"] == "cgi_manager", made.json()
        again = requests.get(f"{server.url}/api/users/{cgi}", headers=h, timeout=10).json()
        assert again["api"] == "cgi_manager"
    finally:
        server.stop()
