"""Gateways that push, as they really do: the simulator's uploaders POST to real `rainforest
server` processes over HTTP, with real Redis and files; every reading they were answered 2xx
for is in the files exactly once, whatever happens to the servers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import requests

from app import keys
from app.credentials import Vault
from app.devices import DeviceInput
from app.hours import hour_key
from app.lines import read as read_lines
from app.pinger import Pinger
from app.settings import Settings
from app.store import Store
from tests.api_helpers import ApiServer, conforms, start_api
from tests.conftest import FIXTURES, RedisServer, Sim, make_redis, wait_until
from tests.test_pinger import register

KEY = "push-key-for-tests-0001"
LAUGHS = (FIXTURES / "billion_laughs.xml").read_bytes()
REPORT = {"timestamp": "1539632322000", "dataType": "InstantaneousDemand", "data": {"demand": 1.0}}
JSON_DEMAND = '{"body":[{"timestamp":"%s","dataType":"InstantaneousDemand","data":{"demand":%s}}]}'


def register_push(redis_url: str, secret_key: str, cloud_id: str, key: str | None = KEY) -> str | None:
    async def go() -> str | None:
        store = Store.from_url(redis_url)
        try:
            inp = DeviceInput.from_mapping(
                {"cloud_id": cloud_id, "protocol": "push", **({"push_key": key} if key else {})}
            )
            return (await store.devices.register(inp, Vault(secret_key))).push_key
        finally:
            await store.close()

    return asyncio.run(go())


def lines_in(data_dir: Path) -> list[dict[str, object]]:
    found = []
    for path in data_dir.glob("logs/????-??-??-??/*.jl"):
        result = read_lines(path)
        assert result.partial == 0, f"{path} has a partial or corrupt line"
        found += result.records
    return found


@pytest.fixture
def server(redis_url: str, secret_key: str) -> Iterator[ApiServer]:
    api = start_api(redis_url, secret_key)
    yield api
    api.stop()


def test_the_route_takes_each_dialect_and_refuses_what_it_must(
    server: ApiServer, redis_url: str, secret_key: str
) -> None:
    register_push(redis_url, secret_key, "00ce69")
    asyncio.run(_polled(redis_url, secret_key))
    url = f"{server.url}/api/push/00ce69"
    demand = (FIXTURES / "push" / "eagle100_demand.xml").read_bytes()
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    first = requests.post(url, data=demand, auth=("00ce69", KEY), headers=form, timeout=5)
    assert first.status_code == 200 and first.json()["count"] == 1
    conforms(first, "/api/push/{cloud_id}", "POST")
    again = requests.post(f"{url}?key={KEY}", data=demand, timeout=5)  # a re-send after a lost answer
    assert again.json() == {**first.json(), "count": 0, "written": 0, "duplicates": 1}
    batch_body = (FIXTURES / "push" / "eagle200_batch.json").read_bytes()
    plain = {"Content-Type": "text/plain"}
    batch = requests.post(url, data=batch_body, auth=("00ce69", KEY), headers=plain, timeout=5)
    assert batch.json()["count"] == 4  # two demands, a summation, a price; the message kept aside
    info = requests.post(url, data=(FIXTURES / "push" / "eagle100_device_info.xml").read_bytes(),
                         auth=("00ce69", KEY), timeout=5)  # fmt: skip
    assert info.status_code == 200 and info.json()["count"] == 0
    simple = (FIXTURES / "push" / "eagle200_xml_simple.xml").read_bytes()  # the uploader's XML:Simple
    xml = {"Content-Type": "text/xml"}
    taken = requests.post(url, data=simple, auth=("00ce69", KEY), headers=xml, timeout=5)
    # the same meter's readings as the JSON batch above: only the price at :30 is new
    assert taken.status_code == 200 and (taken.json()["count"], taken.json()["duplicates"]) == (1, 3)
    history = (FIXTURES / "push" / "eagle100_history.xml").read_bytes()  # get_history_data, pushed
    for n in (5, 0):  # each entry once, into the hour of its own time, with source "history"
        sent = requests.post(url, data=history, auth=("00ce69", KEY), headers=form, timeout=5)
        assert sent.status_code == 200 and sent.json()["count"] == n, sent.json()
    no_time = (FIXTURES / "push" / "eagle100_price_no_time.xml").read_bytes()  # a price set in the app
    for n in (1, 0):  # written once: the same values within the hour are the same reading
        sent = requests.post(url, data=no_time, auth=("00ce69", KEY), headers=form, timeout=5)
        assert sent.status_code == 200 and sent.json()["count"] == n, sent.json()

    refused = {
        "wrong key": (requests.post(url, data=demand, auth=("00ce69", "not-the-key-at-all"), timeout=5), 401),
        "no key": (requests.post(url, data=demand, timeout=5), 401),
        "user is not the device": (requests.post(url, data=demand, auth=("00ce6a", KEY), timeout=5), 401),
        "unknown device": (
            requests.post(f"{server.url}/api/push/00ce6a?key={KEY}", data=demand, timeout=5),
            401,
        ),
        "a polled device": (
            requests.post(f"{server.url}/api/push/002738?key={KEY}", data=demand, timeout=5),
            401,
        ),
        "bad id": (requests.post(f"{server.url}/api/push/27?key={KEY}", data=demand, timeout=5), 400),
        "garbage": (requests.post(f"{url}?key={KEY}", data=b"\x00garbage", timeout=5), 400),
        "entities": (requests.post(f"{url}?key={KEY}", data=LAUGHS, timeout=5), 400),
        "too large": (
            requests.post(f"{url}?key={KEY}", data=b"<rainforest>" + b" " * 70_000, timeout=5),
            413,
        ),
    }
    # an unknown device, a polled one and a wrong key get the very same answer: an upload cannot
    # tell which cloud_ids are registered
    assert (
        len({refused[n][0].text for n in ("wrong key", "no key", "unknown device", "a polled device")}) == 1
    )
    for name, (resp, status) in refused.items():
        assert resp.status_code == status, f"{name}: {resp.status_code} {resp.text}"
        assert resp.json()["message"].endswith("."), name
        conforms(resp, "/api/push/{cloud_id}", "POST")
    ten_mb = requests.post(f"{url}?key={KEY}", data=b"x" * 10_000_000, timeout=30)
    assert 400 <= ten_mb.status_code < 500

    records = lines_in(server.log_dir)
    assert Counter((r["kind"], r["source"]) for r in records) == {
        ("demand", "push"): 3, ("summation", "push"): 1, ("price", "push"): 3,
        ("demand", "history"): 2, ("summation", "history"): 3,
    }  # fmt: skip
    assert all(r["cloud_id"] == "00ce69" for r in records)
    store = asyncio.run(_record(redis_url, "00ce69"))
    assert store["push_rejected"] == "3" and b"Z109-EAGLE" in store["push_info"].encode()
    assert KEY not in server.logs() and KEY not in str(store)


async def _polled(redis_url: str, secret_key: str) -> None:
    store = Store.from_url(redis_url)
    await store.devices.register(DeviceInput("002738", "a@example.com", "pw"), Vault(secret_key))
    await store.close()


async def _record(redis_url: str, cloud_id: str) -> dict[str, str]:
    store = Store.from_url(redis_url)
    try:
        return await store.redis.hgetall(keys.device(cloud_id))  # type: ignore[no-any-return,misc]
    finally:
        await store.close()


def test_a_silent_push_device_is_failing_and_recovers(redis_url: str, secret_key: str) -> None:
    made = register_push(redis_url, secret_key, "00ce69", key=None)
    assert made is not None and len(made) >= 16  # made for it, shown once
    demand = (FIXTURES / "push" / "eagle100_demand.xml").read_bytes()

    def record() -> dict[str, str]:
        return asyncio.run(_record(redis_url, "00ce69"))

    server = start_api(redis_url, secret_key, PUSH_STALE_S="5")  # silent after 5 s, looked for every 2.5 s
    try:
        post = requests.post(f"{server.url}/api/push/00ce69?key={made}", data=demand, timeout=5)
        assert post.status_code == 200
        wait_until(
            lambda: record().get("last_error", "").startswith("no upload for"),
            timeout_s=30,
            what="the silence to be noticed",
        )
        first = record()["last_success_at"]
        demand2 = demand.replace(b"0x1c91ec39", b"0x1c91ec41")
        requests.post(f"{server.url}/api/push/00ce69?key={made}", data=demand2, timeout=5)
        wait_until(
            lambda: record()["last_success_at"] != first, timeout_s=30, what="the upload to be counted"
        )
    finally:
        server.stop()
    # the upload's counters and the cleared failure land together; the server is gone, so no new silence
    again = record()
    assert (again.get("consecutive_failures", "0"), again.get("last_error", "")) == ("0", "")


@pytest.fixture
def pushing_fleet(
    start_sim: Callable[..., Sim], redis_server: RedisServer, redis_url: str, secret_key: str, tmp_path: Path
) -> Iterator[tuple[list[ApiServer], Callable[..., Sim], Path]]:
    data = tmp_path / "shared"
    servers = [start_api(redis_url, secret_key, DATA_DIR=str(data)) for _ in range(2)]
    yield servers, start_sim, data
    for s in servers:
        if s.proc.poll() is None:
            s.stop()


async def test_200_gateways_push_exactly_once_through_timeouts_restarts_and_two_servers(
    pushing_fleet: tuple[list[ApiServer], Callable[..., Sim], Path],
    make_settings: Callable[..., Settings],
    redis_url: str,
    secret_key: str,
) -> None:
    servers, start_sim, data = pushing_fleet
    urls = ",".join(s.url for s in servers)
    sim = start_sim(
        220, "--protocols", "push=10,eagle100-cloud=1", "--push-to", urls, "--push-timeout-s", "0.5"
    )
    settings = make_settings(redis_url, sim.url, data_dir=data)
    await register(sim, settings)  # the push devices get their keys; the others are polled
    sim.set_push({"resend_rate": 0.15})  # answers lost: the same body comes again, to the other server
    pinger = Pinger.create(settings)
    polling = asyncio.create_task(pinger.run())

    await asyncio.sleep(2.5)
    os.kill(servers[0].proc.pid, signal.SIGSTOP)  # a server that hangs: uploads time out and are re-sent
    await asyncio.sleep(1.5)
    os.kill(servers[0].proc.pid, signal.SIGCONT)
    await asyncio.sleep(1.0)
    servers[1].proc.send_signal(signal.SIGTERM)  # a restart mid-stream
    assert servers[1].proc.wait(15) == 0
    port = int(servers[1].url.rsplit(":", 1)[1])
    servers[1] = start_api(redis_url, secret_key, port=port, DATA_DIR=str(data))
    await asyncio.sleep(2.5)
    sim.set_push({"resend_rate": 0.0})
    await asyncio.sleep(1.5)
    pinger.request_stop()
    await polling

    stats = orjson.loads(sim.get("/control/stats"))["uploads"]
    assert stats.get("failed", 0) > 0 and stats.get("resent", 0) > 0, f"nothing was retried: {stats}"
    delivered = {(str(r["cloud_id"]), str(r["kind"]), int(r["device_time"])) for r in sim.pushed()}  # type: ignore[call-overload]
    records = lines_in(data)  # fails on any partial or interleaved line
    pushed = Counter(
        (str(r["cloud_id"]), str(r["kind"]), int(r["device_time"]))
        for r in records
        if r["source"] == "push"  # type: ignore[call-overload]
    )
    assert len(delivered) > 500 and {k for k, _ in pushed.items()} >= delivered, (
        "an acknowledged reading is missing"
    )
    assert max(pushed.values()) == 1, "a pushed reading was written twice"
    assert any(r["source"] == "eagle100-cloud" for r in records), "the pinger wrote nothing beside the pushes"
    kinds = Counter(kind for _, kind, _ in delivered)
    assert kinds["demand"] > 0 and kinds["summation"] > 0


HOSTILE = {
    "billion laughs": (FIXTURES / "billion_laughs.xml").read_bytes(),
    "external entity": (FIXTURES / "external_entity.xml").read_bytes(),
    "deep nesting": b"<rainforest>" + b"<a>" * 3000 + b"</a>" * 3000 + b"</rainforest>",
    "NaN": (JSON_DEMAND % ("1539632322000", "NaN")).encode(),
    "wrong types": orjson.dumps(
        {"body": [{"timestamp": {"a": 1}, "dataType": ["x"], "data": {"demand": {}}}, 7]}
    ),
    "10,000 reports": orjson.dumps({"body": [REPORT] * 10_000}),
    "1,001 small reports": orjson.dumps({"body": [{"a": 1}] * 1001}),
    "year 3000": (JSON_DEMAND % ("32503680000000", "1")).encode(),
    "1970": (JSON_DEMAND % ("1000", "1")).encode(),
    "another device's reading": (FIXTURES / "push" / "eagle100_demand.xml")
    .read_bytes()
    .replace(b"0xd8d5b90000002aeb", b"0xd8d5b900000000aa"),
    "unicode": "<rainforest>\u202e\U0001f525</rainforest>".encode(),
    "empty": b"",
}


def test_hostile_bodies_never_cause_a_5xx_a_corrupt_line_or_a_reading_elsewhere(
    server: ApiServer, redis_url: str, secret_key: str
) -> None:
    register_push(redis_url, secret_key, "00ce69")
    register_push(redis_url, secret_key, "00ce6a", key="another-device-key-0001")
    for name, data in HOSTILE.items():
        resp = requests.post(f"{server.url}/api/push/00ce69?key={KEY}", data=data, timeout=10)
        assert resp.status_code < 500, f"{name}: {resp.status_code} {resp.text}"
        conforms(resp, "/api/push/{cloud_id}", "POST")
    records = lines_in(server.log_dir)  # no partial or corrupt line
    assert all(r["cloud_id"] == "00ce69" for r in records), "a reading was written for another device"
    assert all(946684800 <= int(r["device_time"]) <= time.time() + 86400 for r in records)  # type: ignore[call-overload]
    assert (
        len(records) == 1
    )  # the one real reading among them (with another meter's MAC: still this device's)


def test_a_push_device_is_read_from_its_latest_line_not_asked(
    server: ApiServer, redis_url: str, secret_key: str
) -> None:
    from tests.api_helpers import make_token

    register_push(redis_url, secret_key, "00ce69")
    token = {"Authorization": f"Bearer {make_token(redis_url, 'reader', read_only=True)}"}
    demand = (FIXTURES / "push" / "eagle100_demand.xml").read_bytes()
    assert requests.post(f"{server.url}/api/push/00ce69?key={KEY}", data=demand, timeout=5).status_code == 200
    asked = requests.get(f"{server.url}/api/event/00ce69", headers=token, timeout=5)
    assert asked.status_code == 409 and "?source=latest" in asked.json()["message"]
    conforms(asked, "/api/event/{cloud_id}", "GET")

    def latest() -> requests.Response:
        return requests.get(f"{server.url}/api/event/00ce69?source=latest", headers=token, timeout=5)

    wait_until(lambda: latest().status_code == 200, timeout_s=5, what="the counters to be flushed")
    body = latest().json()
    assert body["demand_kw"] == -0.75 and body["protocol"] == "push" and body["source"] == "latest"
    record = requests.get(f"{server.url}/api/users/00ce69", headers=token, timeout=5).json()
    assert record["status"] == "ok" and record["total_events_logged"] == 1 and "push_key" not in record
    hours = requests.get(f"{server.url}/api/users/00ce69/completeness", headers=token, timeout=5).json()[
        "hours"
    ]
    assert [(h["readings"], h["ok"], h["percent"]) for h in hours if h["ok"]] == [(1, 1, None)]


def test_a_file_another_process_holds_never_freezes_the_server(
    server: ApiServer, redis_url: str, secret_key: str
) -> None:
    """A pinger that still holds a shared lock on a device's file (the device was switched to push
    mid-hour) must not stall the server: the upload waits a bounded time, asleep, then gets a 503
    the uploader retries, while every other request is served; once the lock goes, it is taken."""
    import fcntl
    import threading

    from app.hourly import reading_path
    from app.hours import hour_key

    register_push(redis_url, secret_key, "00ce71")
    now = time.time()
    path = reading_path(server.log_dir / "logs", "iseif-rainforest", "00ce71", hour_key(now))
    path.parent.mkdir(parents=True, exist_ok=True)
    body = JSON_DEMAND % (int(now * 1000), "1.5")
    with path.open("ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_SH)  # what a pinger holds on a file it writes
        answers: list[requests.Response] = []
        upload = threading.Thread(
            target=lambda: answers.append(
                requests.post(f"{server.url}/api/push/00ce71", data=body, auth=("00ce71", KEY), timeout=60)
            )
        )
        upload.start()
        time.sleep(0.3)  # the upload is now waiting for the lock
        health = requests.get(f"{server.url}/healthz", timeout=5)  # a frozen loop would time out here
        assert health.status_code == 200
        upload.join(60)
        assert answers and answers[0].status_code == 503, answers[0].text if answers else "no answer"
        assert answers[0].json()["message"].endswith(".")
        assert path.read_bytes() == b""
    resent = requests.post(f"{server.url}/api/push/00ce71", data=body, auth=("00ce71", KEY), timeout=10)
    assert resent.status_code == 200 and resent.json()["written"] == 1
    assert len(read_lines(path).records) == 1


def test_known_push_devices_keep_uploading_while_redis_is_down(tmp_path: Path, secret_key: str) -> None:
    """Uploads go on through a Redis outage for devices the server has seen (their key digests
    are cached); a wrong key is still refused; a device never seen gets a 503, not a 401; the
    counters catch up once Redis is back."""
    redis_server = make_redis(tmp_path / "redis")
    redis_server.start()
    api = start_api(redis_server.url, secret_key)
    try:
        register_push(redis_server.url, secret_key, "00ce72")
        register_push(redis_server.url, secret_key, "00ce73")
        base = int(time.time() * 1000)

        def push(i: int, key: str = KEY, cid: str = "00ce72") -> requests.Response:
            body = JSON_DEMAND % (base + i * 1000, f"{i}.5")
            return requests.post(f"{api.url}/api/push/{cid}", data=body, auth=(cid, key), timeout=10)

        assert push(0).status_code == 200
        redis_server.stop()
        # the server notices its change feed is gone: from then on what Redis said is asked again
        wait_until(lambda: "push key changes not followed" in api.logs(), 30, "the change feed to be lost")
        written = [push(i) for i in range(1, 6)]
        assert [r.status_code for r in written] == [200] * 5, [r.text for r in written]
        assert push(6, key="not-the-right-key-at-all").status_code == 401
        unseen = push(7, cid="00ce73")
        assert unseen.status_code == 503 and unseen.json()["message"].endswith(".")
        redis_server.start()
        assert push(8).status_code == 200
        records = [r for r in lines_in(api.log_dir) if r["cloud_id"] == "00ce72"]
        assert sorted(float(str(r["demand_kw"])) for r in records) == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 8.5]

        def caught_up() -> bool:
            got = asyncio.run(_record(redis_server.url, "00ce72"))
            return got.get("total_events_logged") == "7"

        wait_until(caught_up, what="the counters held through the outage to reach Redis")
        assert "Redis unreachable: authenticating push devices" in api.logs()
    finally:
        api.stop()
        redis_server.stop()


def test_a_server_keeps_each_pushing_devices_file_open_for_the_hour(redis_url: str, secret_key: str) -> None:
    """More gateways than the writer once kept files for (256): each device's file of the hour is
    opened once and stays open, not reopened (and its tail read again) for every upload."""
    devices = [f"{0x400000 + i:06x}" for i in range(300)]

    async def register_all() -> None:
        store, vault = Store.from_url(redis_url), Vault(secret_key)
        try:
            await asyncio.gather(*(
                store.devices.upsert_device(DeviceInput(cid, protocol="push", push_key=KEY), vault)
                for cid in devices
            ))  # fmt: skip
        finally:
            await store.close()

    def open_files() -> dict[str, str]:  # descriptor → the hourly file it holds
        fds = Path(f"/proc/{api.proc.pid}/fd")
        held = {fd.name: os.readlink(fd) for fd in fds.iterdir() if fd.name.isdigit()}
        return {fd: path for fd, path in held.items() if path.endswith(".jl")}

    asyncio.run(register_all())
    api = start_api(redis_url, secret_key)
    try:
        base = int(time.time() * 1000)
        with requests.Session() as http:
            for attempt in range(2):  # both rounds within one hour (the next opens new files)
                hour = hour_key(time.time())
                for round_ in range(2):
                    for cid in devices:
                        body = JSON_DEMAND % (base + (2 * attempt + round_) * 1000, "1.5")
                        answer = http.post(
                            f"{api.url}/api/push/{cid}", data=body, auth=(cid, KEY), timeout=10
                        )
                        assert answer.json()["written"] == 1, answer.text
                    if round_ == 0:
                        first = open_files()
                if hour_key(time.time()) == hour:
                    break
        assert len(first) == len(devices) and open_files() == first  # the same descriptors: none reopened
    finally:
        api.stop()
