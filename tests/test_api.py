"""The HTTP API as a client sees it: a real `rainforest server`, real Redis, the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
import requests

from app.credentials import Vault, new_key
from app.devices import DeviceInput
from app.store import PollUpdate, Store
from tests.api_helpers import ApiServer, conforms, make_token, revoke_token, start_api
from tests.conftest import RedisServer, Sim, running_sim

SECRET_PW = "S3cret-pw-never-shown"


@pytest.fixture(scope="module")
def module_sim() -> Iterator[Sim]:
    with running_sim(5, "--seed", "11", "--timeout-hold-s", "3") as sim:
        yield sim


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, secret_key: str, module_sim: Sim) -> Iterator[ApiServer]:
    server = start_api(redis_server.url, secret_key, module_sim.url)
    yield server
    server.stop()


@pytest.fixture
def admin(api: ApiServer, redis_url: str, module_sim: Sim) -> Callable[..., requests.Response]:
    """A request function carrying a fresh admin token (Redis is emptied for each test)."""
    module_sim.set_faults({})
    token = make_token(redis_url, "admin-test")
    return lambda method, path, **kw: requests.request(
        method,
        api.url + path,
        headers={"Authorization": f"Bearer {token}", **kw.pop("headers", {})},
        timeout=10,
        **kw,
    )


def user_body(**kw: object) -> dict[str, object]:
    return {"user_email": "owner@example.com", "user_pw": SECRET_PW, **kw}


def test_auth_matrix(api: ApiServer, redis_url: str) -> None:
    """Every route and method of the OpenAPI document × no token, a wrong one, a token sent as
    Basic, a revoked one, a read-only one and an admin one: refused with 401 (or 403 for a
    read-only token's writes), or let through, as the document says."""
    from tests.api_helpers import DOC

    admin_token = make_token(redis_url, "admin")
    reader = make_token(redis_url, "reader", read_only=True)
    gone = make_token(redis_url, "gone")
    revoke_token(redis_url, "gone")
    requests.post(
        f"{api.url}/api/users/002738", json=user_body(), headers={"Authorization": f"Bearer {admin_token}"}
    )
    cart = "3b0c4f5e-1d2a-4c3b-9e8f-7a6b5c4d3e2f"
    a_cart = {"devices": ["002738"], "start": 1780000000, "end": 1780003600}
    bodies = {"/api/users/{cloud_id}": user_body(), "/api/carts/": a_cart, "/api/carts/{cart_id}": a_cart}
    read_only_may = {
        ("post", "/api/carts/"),
        ("post", "/api/carts/{cart_id}"),
        ("delete", "/api/carts/{cart_id}"),
    }
    checked = 0
    for template, operations in DOC["paths"].items():
        path = template.replace("{cloud_id}", "002738").replace("{cart_id}", cart)
        for method in (m for m in ("get", "head", "post", "delete") if m in operations):
            public = operations[method].get("security") is not None
            body = {"json": bodies[template]} if method == "post" and template in bodies else {}
            write = method in ("post", "delete") and (method, template) not in read_only_may
            cases = {None: 401, "Bearer wrong-token": 401, f"Basic {admin_token}": 401, f"Bearer {gone}": 401,
                     f"Bearer {reader}": 403 if write else None, f"Bearer {admin_token}": None}  # fmt: skip
            if template == "/healthz":
                cases = dict.fromkeys(cases, None)  # the one open route
            elif public:  # a gateway's upload: its push key, never an API token
                cases = dict.fromkeys(cases, 401)
            for header, expected in cases.items():
                headers = {"Authorization": header} if header else {}
                resp = requests.request(method.upper(), api.url + path, headers=headers, timeout=15, **body)  # type: ignore[arg-type]
                where = (method, template, header and header.split()[0], expected, resp.status_code)
                if expected is None:
                    assert resp.status_code not in (401, 403), where
                else:
                    assert resp.status_code == expected, where
                if resp.status_code >= 400 and method != "head":
                    assert set(resp.json()) == {"error", "message"}, where
                checked += 1
    assert checked >= 15 * 6, "every route of the document was tried"
    # the document's own list, so a route added without documenting it is caught elsewhere
    assert set(DOC["paths"]) >= {"/api/users/", "/api/carts/{cart_id}", "/api/push/{cloud_id}", "/healthz"}


def test_user_lifecycle(admin: Callable[..., requests.Response]) -> None:
    created = admin("POST", "/api/users/002738", json=user_body())
    assert created.status_code == 201 and created.json()["outcome"] == "created"
    conforms(created, "/api/users/{cloud_id}", "POST")
    again = admin("POST", "/api/users/002738", json=user_body())
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"
    changed = admin("POST", "/api/users/002738", json=user_body(user_email="new@example.com"))
    assert changed.status_code == 200 and changed.json()["outcome"] == "updated"
    one = admin("GET", "/api/users/002738")
    conforms(one, "/api/users/{cloud_id}", "GET")
    assert one.json()["user_email"] == "new@example.com" and one.json()["status"] == "never"
    # a device's record is never cached, so it carries nothing to revalidate a cached copy with
    assert one.headers["Cache-Control"] == "no-store" and "ETag" not in one.headers
    gone = admin("DELETE", "/api/users/002738")
    conforms(gone, "/api/users/{cloud_id}", "DELETE")
    assert gone.json()["active"] is False
    assert admin("GET", "/api/users/002738").json()["active"] is False  # deactivated, data kept
    assert admin("GET", "/api/users/00ffff").status_code == 404
    assert admin("DELETE", "/api/users/00ffff").status_code == 404


def test_list_paginates_and_filters(admin: Callable[..., requests.Response]) -> None:
    for i in range(1, 8):
        admin("POST", f"/api/users/{i:06x}", json=user_body(active=i != 3))
    seen, after = [], None
    while True:
        resp = admin("GET", "/api/users/", params={"limit": 3, **({"after": after} if after else {})})
        conforms(resp, "/api/users/", "GET")
        seen += [u["cloud_id"] for u in resp.json()["users"]]
        after = resp.json()["next"]
        if after is None:
            break
    assert seen == [f"{i:06x}" for i in range(1, 8)]
    inactive = admin("GET", "/api/users/", params={"active": "false"}).json()["users"]
    assert [u["cloud_id"] for u in inactive] == ["000003"]
    assert len(admin("GET", "/api/users/", params={"status": "never"}).json()["users"]) == 7


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "error"),
    [("GET", "/api/users/27", {}, 400, "invalid_cloud_id"),
     ("GET", "/api/users/00273G", {}, 400, "invalid_cloud_id"),
     ("GET", "/api/users/", {"params": {"limit": "0"}}, 400, "bad_parameter"),
     ("GET", "/api/users/", {"params": {"limit": "1001"}}, 400, "bad_parameter"),
     ("GET", "/api/users/", {"params": {"status": "sad"}}, 400, "bad_parameter"),
     ("GET", "/api/users/", {"params": {"sort": "x"}}, 400, "unknown_parameter"),
     ("POST", "/api/users/002738", {"json": {"user_pw": "x"}}, 400, "invalid_field"),
     ("POST", "/api/users/002738", {"json": {"user_email": "not-an-email", "user_pw": "x"}}, 400,
      "invalid_field"),
     ("POST", "/api/users/002738", {"json": {**user_body(), "pw": "plaintext123"}}, 400, "invalid_field"),
     ("POST", "/api/users/002738", {"json": {**user_body(), "cloud_id": "00ce69"}}, 400, "invalid_field"),
     ("POST", "/api/users/002738", {"json": [1, 2]}, 400, "invalid_json"),
     ("POST", "/api/users/002738", {"data": b"{nope", "headers": {"Content-Type": "application/json"}}, 400,
      "invalid_json"),
     ("POST", "/api/users/002738", {"data": b"user_email=a", "headers": {"Content-Type": "text/plain"}}, 415,
      "unsupported_media_type"),
     ("POST", "/api/users/002738", {"json": {**user_body(), "address": "x" * 70000}}, 413, "too_large"),
     ("PUT", "/api/users/002738", {}, 405, "method_not_allowed"),
     ("GET", "/api/nothing", {}, 404, "not_found"),
     ("GET", "/api/event/002738", {"params": {"source": "cache"}}, 400, "bad_parameter"),
     ("GET", "/api/event/002738", {}, 404, "unknown_device")],
)  # fmt: skip
def test_bad_input_gets_one_clear_sentence(
    admin: Callable[..., requests.Response],
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    error: str,
) -> None:
    resp = admin(method, path, **kwargs)
    assert resp.status_code == status
    body = resp.json()
    assert body["error"] == error and body["message"].endswith(".") and "Traceback" not in resp.text
    assert "\n" not in body["message"]


def test_unknown_field_is_named(admin: Callable[..., requests.Response]) -> None:
    resp = admin("POST", "/api/users/002738", json={**user_body(), "pw": "x"})
    assert "'pw'" in resp.json()["message"]


def test_event_from_the_device_and_the_latest_logged(
    admin: Callable[..., requests.Response], module_sim: Sim, redis_url: str
) -> None:
    user = module_sim.users()[0]
    cid = str(user["cloud_id"])
    admin("POST", f"/api/users/{cid}", json={k: v for k, v in user.items() if k != "cloud_id"})
    live = admin("GET", f"/api/event/{cid}")
    conforms(live, "/api/event/{cloud_id}", "GET")
    assert live.json()["source"] == "device" and live.json()["cloud_id"] == cid
    assert admin("GET", f"/api/event/{cid}", params={"source": "latest"}).json()["error"] == "no_reading"

    async def log_one() -> None:  # what the pinger records after a poll
        store = Store.from_url(redis_url)
        await store.devices.record_polls(
            [
                PollUpdate(
                    cid,
                    events=1,
                    last_timestamp=1.0,
                    last_reading=live.text.replace('"source":"device"', '"source":"device"'),
                )
            ]
        )
        await store.close()

    asyncio.run(log_one())
    latest = admin("GET", f"/api/event/{cid}", params={"source": "latest"})
    conforms(latest, "/api/event/{cloud_id}", "GET")
    assert latest.json()["source"] == "latest" and latest.json()["TimeStamp"] == live.json()["TimeStamp"]

    faults = (("timeout", 504, "timeout"), ("http_503", 502, "unavailable"),
              ("bad_credentials", 502, "auth"), ("malformed", 502, "bad_reply"))  # fmt: skip
    for fault, status, error in faults:
        module_sim.set_faults({"devices": {cid: {"error": fault}}})
        resp = admin("GET", f"/api/event/{cid}")
        conforms(resp, "/api/event/{cloud_id}", "GET")
        assert (resp.status_code, resp.json()["error"]) == (status, error)
        assert cid in resp.json()["message"]


def test_passwords_never_leave_the_server(admin: Callable[..., requests.Response], api: ApiServer) -> None:
    texts = [admin("POST", "/api/users/002738", json=user_body()).text,
             admin("GET", "/api/users/002738").text, admin("GET", "/api/users/").text,
             admin("POST", "/api/users/002738", json=user_body(user_email="bad")).text,
             admin("DELETE", "/api/users/002738").text, admin("GET", "/metrics").text]  # fmt: skip
    assert all(SECRET_PW not in t and "user_pw_enc" not in t for t in texts)
    assert SECRET_PW not in api.logs()


def test_metrics_count_requests_and_devices(admin: Callable[..., requests.Response]) -> None:
    admin("POST", "/api/users/002738", json=user_body())
    admin("GET", "/api/users/002738")
    text = admin("GET", "/metrics").text
    assert 'rainforest_http_requests_total{method="GET",route="/api/users/{cloud_id}",status="200"}' in text
    assert 'rainforest_devices{status="never"} 1.0' in text
    assert "rainforest_http_request_duration_seconds_bucket" in text


def test_healthz_follows_redis(own_redis: RedisServer, secret_key: str) -> None:
    server = start_api(own_redis.url, secret_key)
    try:
        ok = requests.get(server.url + "/healthz", timeout=10)
        conforms(ok, "/healthz", "GET")
        assert ok.json() == {"ok": True, "redis": "reachable"}
        own_redis.stop()
        down = requests.get(server.url + "/healthz", timeout=10)
        conforms(down, "/healthz", "GET")
        assert down.status_code == 503 and down.json()["redis"] == "unreachable"
        own_redis.start()
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        server.stop()


def test_a_password_sealed_with_another_key_gets_an_actionable_answer(
    admin: Callable[..., requests.Response], redis_url: str
) -> None:
    async def save_with_another_key() -> None:
        store = Store.from_url(redis_url)
        inp = DeviceInput.from_mapping({"cloud_id": "00beef", **user_body()})
        await store.devices.upsert_device(inp, Vault(new_key()))
        await store.close()

    asyncio.run(save_with_another_key())
    resp = admin("GET", "/api/event/00beef")
    conforms(resp, "/api/event/{cloud_id}", "GET")
    assert resp.status_code == 500 and resp.json()["error"] == "credentials_unreadable"
    assert "SECRET_KEY" in resp.json()["message"] and "POST /api/users/00beef" in resp.json()["message"]
    assert "Redis" not in resp.json()["message"]
    # re-saving the device (as the message says) mends it
    assert admin("POST", "/api/users/00beef", json=user_body()).json()["outcome"] == "updated"
