"""Local gateways as an operator registers them: every new field validated with one sentence,
through `rainforest users import` and `POST /api/users/{id}`; install codes never come back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import requests

from app.devices import DeviceInput
from app.errors import ValidationError
from tests.api_helpers import ApiServer, make_token, start_api
from tests.conftest import RedisServer, Sim
from tests.redis_cluster import sync_client
from tests.test_users_cli import rainforest

CODE = "1A2B3C4D5E6F7A8B"
LOCAL = {"protocol": "eagle200-local", "address": "192.168.1.20", "install_code": CODE}

BAD = [
    (
        {"protocol": "eagle300"},
        "protocol",
        "protocol must be one of eagle100-cloud, eagle100-local, eagle200-local",
    ),
    ({**LOCAL, "address": ""}, "address", "needs address"),
    ({"protocol": "eagle100-local", "install_code": CODE}, "address", "needs address"),
    ({**LOCAL, "address": "http://me:pw@192.168.1.20"}, "address", "without credentials"),
    ({**LOCAL, "address": "ftp://192.168.1.20"}, "address", "http(s)"),
    ({**LOCAL, "address": "192.168.1.20:99999"}, "address", "host:port"),
    ({**LOCAL, "address": "Í×\x94]\x98\x01d\U000244c8"}, "address", "ASCII"),  # schemathesis found a 500 here
    ({**LOCAL, "address": "[::1"}, "address", "host:port"),
    ({**LOCAL, "address": "gateway\x00.local"}, "address", "ASCII"),
    ({**LOCAL, "address": "gateway..local"}, "address", "1 to 63"),  # schemathesis found a 500 here
    ({**LOCAL, "address": "http://" + "g" * 64 + ".local:80"}, "address", "1 to 63"),
    ({**LOCAL, "address": "."}, "address", "1 to 63"),
    ({**LOCAL, "install_code": "12345"}, "install_code", "16 hex digits"),
    ({**LOCAL, "install_code": "1A2B3C4D5E6F7A8Z"}, "install_code", "16 hex digits"),
    ({**LOCAL, "install_code": 1234567890123456}, "install_code", "16 hex digits"),
    ({**LOCAL, "tls_verify": "yes"}, "tls_verify", "true or false"),
    ({**LOCAL, "address": "https://192.168.1.20", "tls_fingerprint": "abc"}, "tls_fingerprint", "64 hex"),
    ({**LOCAL, "tls_fingerprint": "ab" * 32}, "tls_fingerprint", "https:// address"),
    ({**LOCAL, "user_pw": "secret"}, "user_pw", "install_code"),
    (
        {"user_email": "a@example.com", "user_pw": "pw", "install_code": CODE},
        "install_code",
        "local gateways",
    ),
]


@pytest.mark.parametrize(("body", "field", "words"), BAD)
def test_each_bad_field_gets_one_sentence(body: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        DeviceInput.from_mapping({"cloud_id": "002738", **body})
    assert info.value.field == field and words in str(info.value)
    assert str(info.value).endswith(".") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("address", "url"),
    [("192.168.1.20", "http://192.168.1.20/cgi-bin/post_manager"),
     ("eagle-00ce69.local:8080", "http://eagle-00ce69.local:8080/cgi-bin/post_manager"),
     ("https://192.168.1.20", "https://192.168.1.20/cgi-bin/post_manager"),
     ("http://10.0.0.5/cgi-bin/post_manager", "http://10.0.0.5/cgi-bin/post_manager")],
)  # fmt: skip
def test_addresses_become_gateway_urls(address: str, url: str) -> None:
    from app.devices import gateway_url

    inp = DeviceInput.from_mapping({"cloud_id": "002738", **LOCAL, "address": address})
    assert gateway_url(inp.address) == url


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, secret_key: str) -> Iterator[ApiServer]:
    server = start_api(redis_server.url, secret_key)
    yield server
    server.stop()


@pytest.fixture
def admin(api: ApiServer, redis_url: str) -> Callable[..., requests.Response]:
    token = make_token(redis_url, "admin-local")
    return lambda method, path, **kw: requests.request(
        method, api.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw
    )


@pytest.mark.parametrize(("body", "field", "words"), BAD)
def test_the_api_answers_each_bad_field_with_its_sentence(
    admin: Callable[..., requests.Response], body: dict[str, object], field: str, words: str
) -> None:
    resp = admin("POST", "/api/users/002738", json=body)
    assert resp.status_code == 400
    answer = resp.json()
    assert answer["error"] == "invalid_field" and words in answer["message"]


def test_a_local_device_is_stored_with_its_code_encrypted_and_never_shown(
    admin: Callable[..., requests.Response], redis_url: str
) -> None:
    body = {**LOCAL, "address": "https://192.168.1.20", "tls_fingerprint": "AB:" * 31 + "AB"}
    created = admin("POST", "/api/users/00ce69", json=body)
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["protocol"] == "eagle200-local" and record["address"] == "https://192.168.1.20"
    assert record["tls_fingerprint"] == "ab" * 32 and record["tls_verify"] is None
    assert admin("POST", "/api/users/00ce69", json=body).json()["outcome"] == "unchanged"
    for text in (created.text, admin("GET", "/api/users/00ce69").text, admin("GET", "/api/users/").text):
        assert CODE not in text and "install_code" not in text
    with sync_client(redis_url) as r:
        stored = r.hgetall("rf:device:00ce69")
    assert CODE.encode() not in b"".join(stored.values()) and b"install_code_enc" in stored
    # switching to the relay drops the install code: no stale secret stays behind
    switched = admin("POST", "/api/users/00ce69", json={"user_email": "a@example.com", "user_pw": "pw-1"})
    assert switched.json()["protocol"] == "eagle100-cloud"
    with sync_client(redis_url) as r:
        assert r.hget("rf:device:00ce69", "install_code_enc") is None


def test_import_takes_local_devices_and_reports_bad_lines(
    tmp_path: Path, redis_url: str, secret_key: str
) -> None:
    users = tmp_path / "users.jl"
    lines = [
        {"cloud_id": "002738", **LOCAL},
        {
            "cloud_id": "00ce69",
            "protocol": "eagle100-local",
            "address": "192.168.1.21:80",
            "install_code": CODE,
        },
        {"cloud_id": "00ce6a", "protocol": "eagle200-local", "install_code": CODE},
        {"cloud_id": "00ce6b", **LOCAL, "install_code": "nope"},
    ]
    users.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    env = {"REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path)}
    result = rainforest("users", "import", str(users), env=env)
    assert "created 2, updated 0, unchanged 0, failed 2" in result.stdout
    assert f"{users}:3: an eagle200-local device needs address" in result.stderr
    assert f"{users}:4: install_code must be the 16 hex digits" in result.stderr
    listing = rainforest("users", "list", env=env)
    assert (
        "eagle200-local" in listing.stdout
        and "eagle100-local" in listing.stdout
        and CODE not in listing.stdout
    )


async def test_requests_to_one_local_gateway_never_overlap_and_keep_their_gap(
    start_sim: Callable[..., Sim],
) -> None:
    """A demand poll, a summation and a history refill asked of one EAGLE-100 at once go one at
    a time, LOCAL_REQUEST_GAP_S apart (a real unit freezes when two requests overlap); the
    simulator counts overlaps and the shortest gap it saw."""
    import asyncio
    import time

    from app.eagle.client import Clients, new_session
    from app.eagle.gateway import local_gateway

    sim = start_sim(2, "--protocols", "eagle100-local=1")
    user = sim.users()[0]
    sim.set_faults({"devices": {str(user["cloud_id"]): {"latency_ms": 300}}})
    session = new_session(10, True, "rainforest-logger test")
    try:
        client = Clients(session, 4.0, 0.2).for_protocol("eagle100-local")
        gw = local_gateway(
            str(user["cloud_id"]),
            "eagle100-local",
            str(user["address"]),
            str(user["install_code"]),
            None,
            None,
        )
        now = int(time.time())
        await asyncio.gather(
            client.poll(gw, frozenset(["demand"])),
            client.extra(gw, "summation", 4.0),
            client.history(gw, now - 600, now, 60),
            client.poll(gw, frozenset(["demand"])),
        )
    finally:
        await session.close()
    stats = orjson.loads(sim.get("/control/stats"))
    assert stats.get("local_overlaps", 0) == 0, "two requests to one gateway overlapped"
    assert stats["local_min_gap_ms"] >= 190, stats


async def test_the_servers_event_request_keeps_clear_of_the_pingers_polls(
    start_sim: Callable[..., Sim], make_settings: Callable[..., object], redis_url: str, secret_key: str
) -> None:
    """GET /api/event/{id} asks a local gateway half an interval away from its pinger's polls, so
    a server process and a pinger never have two requests at one unit at once."""
    import asyncio

    from app.pinger import Pinger
    from app.settings import Settings
    from tests.test_pinger import register

    sim = start_sim(1, "--protocols", "eagle100-local=1")
    cid = str(sim.users()[0]["cloud_id"])
    # each request holds the unit for half a second; the server asks 1.5 s after a poll starts,
    # which leaves a second on either side for a loaded machine's late wake-ups (a 2 s interval
    # with 0.7 s requests left 0.3 s, and a loaded clean-clone run once overlapped)
    sim.set_faults({"devices": {cid: {"latency_ms": 500}}})
    settings = make_settings(redis_url, sim.url, poll_interval_s=3.0, poll_timeout_s=2.0)
    assert isinstance(settings, Settings)
    await register(sim, settings)
    api = start_api(redis_url, secret_key, sim.url, POLL_INTERVAL_S="3")
    pinger = Pinger.create(settings)
    task = asyncio.create_task(pinger.run())
    try:
        token = await asyncio.to_thread(make_token, redis_url, "admin")

        def ask() -> int:
            url = f"{api.url}/api/event/{cid}"
            return requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

        await asyncio.sleep(1.0)
        for _ in range(4):
            assert await asyncio.to_thread(ask) == 200
            await asyncio.sleep(0.37)  # a different moment of the interval each time
    finally:
        pinger.request_stop()
        await asyncio.wait_for(task, 10)
        api.stop()
    stats = orjson.loads(sim.get("/control/stats"))
    assert stats.get("local_overlaps", 0) == 0, "the server's request overlapped a pinger's poll"
