"""Carts end to end: real redis-server, moto's S3 server, `rainforest server` and `rainforest cartd`
processes sharing a DATA_DIR, data put in the archive by rotate itself."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import requests

from app import keys
from app.archive.factory import open_archive
from app.carts import jobs
from app.carts.registry import CartRegistry
from app.carts.retention import evict_idle
from app.hourly import reading_path
from app.hours import hour_key
from app.rotate.runner import Rotator
from app.settings import Settings
from app.store import Store
from tests.api_helpers import ApiServer, make_token, start_api
from tests.conftest import S3_KEY_ID, S3_SECRET, S3Server, make_redis, wait_until
from tests.redis_cluster import sync_client

NOW = time.time()
BASE = int(NOW // 3600) * 3600 - 6 * 3600  # six hours ago, on the hour
DEVICES = ("0c0001", "0c0002", "0c0003")


def line(cid: str, at: float, stamp: int, demand: int) -> bytes:
    return orjson.dumps({
        "cloud_id": cid, "polled_at": at, "device_time": int(at) - 2, "demand_kw": demand / 1000,
        "DeviceMacId": 1, "MeterMacId": 2, "TimeStamp": stamp, "Demand": demand, "Multiplier": 1,
        "Divisor": 1000,
        "DigitsRight": 3, "DigitsLeft": 6, "SuppressLeadingZero": "Y",
    }) + b"\n"  # fmt: skip


def write(settings: Settings, cid: str, hour_start: int, stamps: range, demand: int = 500) -> Path:
    path = reading_path(settings.logs_dir, settings.file_prefix, cid, hour_key(hour_start))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        for i in stamps:
            at = hour_start + (i % 600) * 6 + 1.5
            f.write(line(cid, at, 800_000_000 + hour_start // 6 + i % 600, demand + i))
    return path


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    api: ApiServer
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    admin: str = ""

    def h(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin}"}

    def post(self, body: object, cart_id: str | None = None, token: str | None = None) -> requests.Response:
        url = f"{self.api.url}/api/carts/{cart_id or ''}"
        return requests.post(url, json=body, headers=self.h(token), timeout=10)

    def wait(self, cart_id: str, token: str | None = None, timeout_s: float = 60) -> requests.Response:
        def done() -> bool:
            head = requests.head(f"{self.api.url}/api/carts/{cart_id}", headers=self.h(token), timeout=5)
            return head.headers.get("X-Cart-Status") in ("ready", "error")

        wait_until(done, timeout_s, what=f"cart {cart_id}")
        return requests.head(f"{self.api.url}/api/carts/{cart_id}", headers=self.h(token), timeout=5)

    def start_worker(self, **extra: str) -> subprocess.Popen[bytes]:
        with (self.settings.data_dir / f"cartd-{len(self.workers)}.stderr").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "cartd"], env={**self.env, **extra},
                cwd=self.settings.data_dir,
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:
            proc.wait(20)
        self.api.stop()

    def builds(self, cart_id: str, count: int) -> list[dict[str, object]]:
        """cartd's `cart build` lines for a cart, once `count` are written (just after it turns ready)."""

        def found() -> list[dict[str, object]]:
            lines = self.cartd_log()
            return [r for r in lines if r.get("message") == "cart build" and r.get("cart_id") == cart_id]

        wait_until(lambda: len(found()) >= count, 10, what="cartd's build line")
        return found()

    def cartd_log(self) -> list[dict[str, object]]:
        path = self.settings.logs_dir / "cartd" / "cartd.log"
        return [orjson.loads(raw) for raw in path.read_bytes().splitlines()] if path.exists() else []


def seed(settings: Settings) -> dict[str, bytes]:
    """Three devices × three archived hours (one with a second, overlapping part) + local hours."""
    with sync_client(settings.redis_url) as r:
        for cid in DEVICES:
            r.hset(keys.device(cid), mapping={"cloud_id": cid, "active": "1"})
            r.sadd(keys.devices_all(keys.group(cid)), cid)
    for cid in DEVICES:
        for h in range(3):
            write(settings, cid, BASE + h * 3600, range(0, 40))
    rotated = asyncio.run(Rotator(settings, open_archive(settings), None).pass_once())
    assert rotated.stored == 9
    write(settings, DEVICES[0], BASE, range(30, 50))  # 10 duplicates of part 1, 10 new: part 2
    assert asyncio.run(Rotator(settings, open_archive(settings), None).pass_once()).new_parts == 1
    local = write(settings, DEVICES[0], BASE + 3 * 3600, range(0, 25))  # an hour not yet rotated
    return {"local": local.read_bytes()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, secret_key: str) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("carts")
    redis_server = make_redis(work / "redis")
    redis_server.start()
    bucket = s3_server.bucket()
    env = {
        **os.environ, "REDIS_URL": redis_server.url, "DATA_DIR": str(work / "data"), "SECRET_KEY": secret_key,
        "ARCHIVE_URL": f"s3://{bucket}/study", "S3_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1",
        "ARCHIVE_RETRIES": "2",
        "CARTS_BUILDING_PER_TOKEN": "10",  # these tests ask for several carts at once with one token
        "HEAVY_REQUESTS_PER_TOKEN": "2",
    }  # fmt: skip
    settings = Settings.from_env(env, dotenv_path=None)
    seed(settings)
    api = start_api(redis_server.url, secret_key, **{k: v for k, v in env.items() if k not in os.environ})
    s = Stack(settings, env, api, admin=make_token(redis_server.url, "admin"))
    s.start_worker()
    s.start_worker()
    yield s
    s.stop()
    redis_server.stop()


def download(s: Stack, cart_id: str, dest: Path, token: str | None = None) -> Path:
    """With curl -O -J, as the README says: the server's name for the file is used."""
    dest.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(
        ["curl", "-sS", "-f", "-O", "-J", "-H", f"Authorization: Bearer {token or s.admin}",
         f"{s.api.url}/api/carts/{cart_id}?filename=study.tar"],
        cwd=dest, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    return dest / "study.tar"


def test_a_jl_cart_from_request_to_verified_tar(stack: Stack, tmp_path: Path) -> None:
    cart_id = str(uuid.uuid4())
    body = {
        "devices": list(DEVICES),
        "start": BASE,
        "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW)),
    }
    made = stack.post(body, cart_id)
    assert made.status_code == 201, made.text
    assert made.headers["Location"] == f"/api/carts/{cart_id}"
    assert made.json()["status_url"] == f"/api/carts/{cart_id}"
    again = stack.post(body, cart_id)
    assert again.status_code == 200, "a retried identical POST is answered, not duplicated"
    head = stack.wait(cart_id)
    assert head.headers["X-Cart-Status"] == "ready", head.headers
    assert (
        head.headers["X-Cart-Progress"]
        == "files=11/11 bytes=" + head.headers["X-Cart-Progress"].split("=")[-1]
    )
    tar = download(stack, cart_id, tmp_path / "dl")
    assert int(head.headers["Content-Length"]) == tar.stat().st_size
    subprocess.run(["tar", "-xf", str(tar)], cwd=tmp_path / "dl", check=True)
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / "dl", capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    manifest = orjson.loads((tmp_path / "dl" / "MANIFEST.json").read_bytes())
    assert manifest["request"]["devices"] == list(DEVICES) and manifest["counts"]["parts"] == 11
    names = sorted(f["path"] for f in manifest["files"])
    first = hour_key(BASE)
    y, m, d = first[:4], first[5:7], first[8:10]
    assert f"0c0001/{y}/{m}/{d}/iseif-rainforest-0c0001-{first}.part2.jl" in names
    local_name = f"iseif-rainforest-0c0001-{hour_key(BASE + 3 * 3600)}.jl"
    assert any(n.endswith(local_name) for n in names), "hours not yet rotated are in the cart too"
    local = next(p for p in (tmp_path / "dl").rglob(local_name))
    assert local.read_bytes().count(b"\n") == 25
    sources = [s["source"] for s in manifest["sources"]]
    assert f"local:{hour_key(BASE + 3 * 3600)}/{local_name}" in sources
    assert str(stack.settings.data_dir) not in (tmp_path / "dl" / "MANIFEST.json").read_text(), (
        "a downloaded manifest must not show the server's own paths"
    )
    # 11 files, the manifest, (issue 14) COMPLETENESS.csv and README.txt, and (issue 21)
    # COMPLETENESS_DAYS.csv and datapackage.json in every cart
    assert check.stdout.count(": OK") == 16

    # only one of the two workers built it, once
    builds = stack.builds(cart_id, count=1)
    assert [b["outcome"] for b in builds] == ["ready"]


def test_a_csv_cart_merges_parts_and_drops_duplicates(stack: Stack, tmp_path: Path) -> None:
    # device_time is 2 s before polled_at, so the hour's first reading is timed before BASE
    made = stack.post({"devices": ["0c0001"], "start": BASE - 60, "end": BASE + 3600, "format": "csv"})
    assert made.status_code == 201, made.text
    cart_id = made.json()["id"]
    assert stack.wait(cart_id).headers["X-Cart-Status"] == "ready"
    got = requests.get(f"{stack.api.url}/api/carts/{cart_id}", headers=stack.h(), timeout=30)
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        rows = list(csv.reader(io.TextIOWrapper(tar.extractfile("0c0001.csv"), "utf-8")))  # type: ignore[arg-type]
        manifest = orjson.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
    assert rows[0][:3] == ["time_utc", "demand_kw", "cloud_id"]
    stamps = [int(r[5]) for r in rows[1:]]
    assert len(stamps) == 50 == len(set(stamps)), "40 + 20 lines with 10 repeated: 50 distinct readings"
    times = [int(r[3]) for r in rows[1:]]
    assert times == sorted(times) and all(BASE - 60 <= t < BASE + 3600 for t in times)
    assert rows[1][0] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(times[0]))
    assert manifest["counts"]["duplicates_dropped"] == 10


def test_range_requests_resume_a_download(stack: Stack) -> None:
    cart_id = stack.post({"devices": "all", "start": BASE, "end": BASE + 2 * 3600}).json()["id"]
    assert stack.wait(cart_id).headers["X-Cart-Status"] == "ready"
    url = f"{stack.api.url}/api/carts/{cart_id}"
    full = requests.get(url, headers=stack.h(), timeout=30)
    assert full.status_code == 200
    assert full.headers["Content-Disposition"].startswith('attachment; filename="data_')
    first = requests.get(url, headers={**stack.h(), "Range": "bytes=0-999"}, timeout=30)
    assert first.status_code == 206 and first.headers["Content-Range"] == f"bytes 0-999/{len(full.content)}"
    rest = requests.get(url, headers={**stack.h(), "Range": "bytes=1000-"}, timeout=30)
    assert rest.status_code == 206 and first.content + rest.content == full.content
    tail = requests.get(url, headers={**stack.h(), "Range": "bytes=-10"}, timeout=30)
    assert tail.content == full.content[-10:]
    beyond = requests.get(url, headers={**stack.h(), "Range": f"bytes={len(full.content)}-"}, timeout=30)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(full.content)}"
    named = requests.get(url, params={"filename": "données été.tar"}, headers=stack.h(), timeout=30)
    assert "filename*=UTF-8''donn%C3%A9es%20%C3%A9t%C3%A9.tar" in named.headers["Content-Disposition"]


def test_bad_ids_filenames_and_bodies_get_one_clear_sentence(stack: Stack) -> None:
    url = stack.api.url
    for path in ("/api/carts/not-a-uuid", "/api/carts/..%2F..%2Fetc%2Fpasswd", "/api/carts/%2e%2e"):
        got = requests.get(url + path, headers=stack.h(), timeout=5)
        assert got.status_code in (400, 404) and got.json()["message"], path
        assert got.status_code == 400 or "no route" in got.json()["message"]
    cart_id = stack.post({"devices": ["0c0002"], "start": BASE, "end": BASE + 3600}).json()["id"]
    for bad in ("../../etc/passwd", "a/b.tar", 'x".tar', ".hidden", "a\\b"):
        got = requests.get(
            f"{url}/api/carts/{cart_id}", params={"filename": bad}, headers=stack.h(), timeout=5
        )
        assert got.status_code == 400 and "filename" in got.json()["message"], bad
    cases = [
        ({"start": BASE, "end": BASE + 10}, "devices"),
        ({"devices": [], "start": BASE, "end": BASE + 10}, "devices"),
        ({"devices": ["zzz"], "start": BASE, "end": BASE + 10}, "cloud_id"),
        ({"devices": ["0c0fff"], "start": BASE, "end": BASE + 10}, "unknown cloud_id 0c0fff"),
        ({"devices": "all", "start": "yesterday", "end": BASE}, "ISO 8601"),
        ({"devices": "all", "start": BASE, "end": BASE - 5}, "end must be after start"),
        ({"devices": "all", "start": BASE, "end": BASE + 5, "format": "xlsx"}, "format"),
        ({"devices": "all", "start": BASE, "end": BASE + 5, "owner": "me"}, "unknown field 'owner'"),
    ]
    for body, words in cases:
        got = stack.post(body)
        assert got.status_code == 400 and words in got.json()["message"], (body, got.text)
    taken = stack.post({"devices": ["0c0003"], "start": BASE, "end": BASE + 3600}, cart_id)
    assert taken.status_code == 409


def test_an_empty_selection_is_an_error_not_an_empty_tar(stack: Stack) -> None:
    cart_id = stack.post(
        {"devices": ["0c0002"], "start": "2021-01-01T00:00:00Z", "end": "2021-01-02"}
    ).json()["id"]
    head = stack.wait(cart_id)
    assert head.headers["X-Cart-Status"] == "error" and head.headers["X-Cart-Reason"] == "EMPTY"
    got = requests.get(f"{stack.api.url}/api/carts/{cart_id}", headers=stack.h(), timeout=5)
    assert (
        got.status_code == 409 and got.json()["reason"] == "EMPTY" and "no readings" in got.json()["message"]
    )


def test_ownership(stack: Stack) -> None:
    alice, bob = (
        make_token(stack.settings.redis_url, "alice", True),
        make_token(stack.settings.redis_url, "bob", True),
    )
    made = stack.post({"devices": ["0c0003"], "start": BASE, "end": BASE + 3600}, token=alice)
    assert made.status_code == 201, "read-only tokens may make carts"
    cart_id = made.json()["id"]
    url = f"{stack.api.url}/api/carts/{cart_id}"
    assert stack.wait(cart_id, token=alice).headers["X-Cart-Status"] == "ready"
    for method in ("HEAD", "GET", "DELETE"):
        assert requests.request(method, url, headers=stack.h(bob), timeout=5).status_code == 403
    assert requests.get(url, headers=stack.h(), timeout=5).status_code == 200, "an admin may"
    assert requests.get(url, headers=stack.h(alice), timeout=5).status_code == 200
    gone = requests.delete(url, headers=stack.h(alice), timeout=5)
    assert gone.status_code == 200 and gone.json()["was"] == "ready"
    assert requests.head(url, headers=stack.h(alice), timeout=5).status_code == 404
    assert not (stack.settings.carts_dir / cart_id).exists()


def test_cancel_mid_build_removes_its_files(stack: Stack) -> None:
    for n in range(120):  # enough local hours that staging takes a moment
        write(stack.settings, "0c0003", BASE - (n + 10) * 3600, range(0, 200))
    cart_id = stack.post({"devices": ["0c0003"], "start": BASE - 140 * 3600, "end": BASE}).json()["id"]
    url = f"{stack.api.url}/api/carts/{cart_id}"

    def started() -> bool:
        return requests.head(url, headers=stack.h(), timeout=5).headers["X-Cart-Status"] in (
            "staging",
            "bundling",
        )

    wait_until(started, 30, what="the build to start")
    cancelled = requests.delete(url, headers=stack.h(), timeout=5)
    assert cancelled.status_code == 200 and cancelled.json()["was"] in ("staging", "bundling")
    head = requests.head(url, headers=stack.h(), timeout=5)
    assert head.headers["X-Cart-Status"] == "error" and head.headers["X-Cart-Reason"] == "CANCELLED"
    # once the build has ended, nothing of it may still be writing: its files are gone for good
    assert [b["outcome"] for b in stack.builds(cart_id, 1)] == ["cancelled"]
    assert not (stack.settings.carts_dir / cart_id).exists()
    assert requests.get(url, headers=stack.h(), timeout=5).status_code == 409
    assert requests.delete(url, headers=stack.h(), timeout=5).status_code == 200
    assert requests.head(url, headers=stack.h(), timeout=5).status_code == 404


def test_fixit_rebuilds_a_ready_cart_whose_tar_broke(stack: Stack) -> None:
    cart_id = stack.post({"devices": ["0c0002"], "start": BASE, "end": BASE + 3 * 3600}).json()["id"]
    assert stack.wait(cart_id).headers["X-Cart-Status"] == "ready"
    tar = stack.settings.carts_dir / cart_id / "cart.tar"
    good = hashlib.sha256(tar.read_bytes()).hexdigest()
    tar.write_bytes(b"broken")
    fixed = subprocess.run(
        [sys.executable, "-m", "app.cli", "carts", "fixit", cart_id],
        env=stack.env,
        capture_output=True,
        text=True,
    )
    assert fixed.returncode == 0 and "reused" in fixed.stdout, fixed.stderr
    assert stack.wait(cart_id).headers["X-Cart-Status"] == "ready"
    assert hashlib.sha256(tar.read_bytes()).hexdigest() == good
    builds = stack.builds(cart_id, count=2)
    # a ready cart keeps only its tar (its staged copies took the disk for nothing): fetched again
    assert builds[-1]["attempt"] == 2 and builds[-1]["reused_staged_files"] == 0, builds[-1]
    assert [p.name for p in tar.parent.iterdir()] == ["cart.tar"], "a ready cart keeps its tar alone"
    bad = subprocess.run([sys.executable, "-m", "app.cli", "carts", "fixit", "nope"], env=stack.env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "UUID" in bad.stderr


async def test_eviction_is_lru_and_spares_building_and_downloading_carts(stack: Stack) -> None:
    ids = [
        stack.post({"devices": ["0c0001"], "start": BASE, "end": BASE + 3600}).json()["id"] for _ in range(3)
    ]
    for cid in ids:
        assert stack.wait(cid).headers["X-Cart-Status"] == "ready"
    later = time.time() + 1000
    store = Store.from_url(stack.settings.redis_url)
    registry = CartRegistry(store.redis)
    try:
        assert await registry.start_download(ids[1], now=later - 10)  # downloaded recently: LRU keeps it
        # a download that began before the cutoff and is still streaming holds a lease
        await store.redis.hset(keys.cart(ids[2]), "download_until", str(later + 60))
        removed = await evict_idle(registry, stack.settings, 300, now=later)
        gone = {c.id for c in removed}
        assert ids[0] in gone and ids[1] not in gone and ids[2] not in gone
        assert (
            not (stack.settings.carts_dir / ids[0]).exists() and (stack.settings.carts_dir / ids[2]).exists()
        )
        listing = subprocess.run([sys.executable, "-m", "app.cli", "carts", "purge", "--older-than", "1d",
                                  "--dry-run"], env=stack.env, capture_output=True, text=True)  # fmt: skip
        assert listing.returncode == 0 and "0 carts would be removed" in listing.stdout
        queue = jobs.open_queue(stack.settings)
        try:  # a repeated job for a finished attempt finds it claimed and does nothing
            cart = await registry.get(ids[1])
            assert cart is not None
            before = len(stack.cartd_log())
            await jobs.submit(queue, stack.settings, ids[1], cart.attempt)
            await asyncio.sleep(1.5)
            again = await registry.get(ids[1])
            assert again is not None and again.status == "ready" and again.updated_at == cart.updated_at
            assert not [r for r in stack.cartd_log()[before:] if r.get("cart_id") == ids[1]]
        finally:
            await queue.disconnect()
    finally:
        await store.close()


def test_no_space_and_archive_down_fail_with_a_reason(stack: Stack, tmp_path: Path, secret_key: str) -> None:
    redis_server = make_redis(tmp_path / "redis")
    redis_server.start()
    env = {**stack.env, "REDIS_URL": redis_server.url}
    settings = Settings.from_env(env, dotenv_path=None)
    with sync_client(redis_server.url) as r:
        r.hset(keys.device("0c0001"), mapping={"cloud_id": "0c0001"})
        r.sadd(keys.devices_all(keys.group("0c0001")), "0c0001")
    api = start_api(redis_server.url, secret_key, **{k: v for k, v in env.items() if k not in os.environ})
    s = Stack(settings, env, api, admin=make_token(redis_server.url, "admin"))
    try:
        s.start_worker(CARTS_MAX_BYTES="5000")
        cart_id = s.post({"devices": ["0c0001"], "start": BASE, "end": BASE + 3600}).json()["id"]
        head = s.wait(cart_id)
        assert head.headers["X-Cart-Reason"] == "NO_SPACE"
        assert "need" in head.headers["X-Cart-Message"] and "have" in head.headers["X-Cart-Message"]
        s.workers[0].terminate()
        s.workers[0].wait(20)
        s.start_worker(S3_ENDPOINT_URL="http://127.0.0.1:9", ARCHIVE_TIMEOUT_S="1")
        cart_id = s.post({"devices": ["0c0001"], "start": BASE, "end": BASE + 3600}).json()["id"]
        head = s.wait(cart_id)
        assert head.headers["X-Cart-Reason"] == "ARCHIVE_UNAVAILABLE"
        got = requests.get(f"{s.api.url}/api/carts/{cart_id}", headers=s.h(), timeout=5).json()
        assert "unreachable" in got["message"] and "2 times" in got["message"]
    finally:
        s.stop()
        redis_server.stop()


def test_long_requests_are_bounded_per_token_and_health_stays_fast(stack: Stack) -> None:
    """Two downloads that a slow client holds open take this token's two slots (the reads run in a
    pool of their own): a third long request of the token gets a 429 in one sentence, another
    token is served, and /healthz answers at once throughout."""
    cart_id = stack.post({"devices": ["0c0002"], "start": BASE, "end": BASE + 3600}).json()["id"]
    assert stack.wait(cart_id).headers["X-Cart-Status"] == "ready"
    tar = stack.settings.carts_dir / cart_id / "cart.tar"
    with tar.open("r+b") as f:  # a large cart: a slow reader cannot take it all at once
        f.truncate(96 * 1024 * 1024)
    url = f"{stack.api.url}/api/carts/{cart_id}"
    held = [requests.get(url, headers=stack.h(), stream=True, timeout=30) for _ in range(2)]
    try:
        for resp in held:
            assert resp.status_code == 200
            next(resp.iter_content(1024))  # started, then left unread: the server waits on us
        third = requests.get(url, headers=stack.h(), timeout=30)
        assert third.status_code == 429 and third.json()["message"].endswith("."), third.text[:200]
        readings = requests.get(f"{stack.api.url}/api/users/0c0001/readings", headers=stack.h(), timeout=30)
        assert readings.status_code == 429, "readings count against the same slots"
        other = make_token(stack.settings.redis_url, "another-reader", read_only=True)
        served = requests.get(
            f"{stack.api.url}/api/users/0c0001/readings", headers=stack.h(other), timeout=30
        )
        assert served.status_code == 200
        assert requests.get(f"{stack.api.url}/healthz", timeout=2).status_code == 200
    finally:
        for resp in held:
            resp.close()

    def freed() -> bool:
        return (
            requests.head(url, headers=stack.h(), timeout=5).status_code == 200
            and requests.get(
                f"{stack.api.url}/api/users/0c0001/readings", headers=stack.h(), timeout=30
            ).status_code
            == 200
        )

    wait_until(freed, 30, what="the slots to be given back when the downloads ended")


def test_an_archived_object_that_does_not_match_its_digest_fails_the_cart(
    stack: Stack, s3_server: S3Server
) -> None:
    """Bit rot, or an object replaced behind the logger's back: its bytes no longer match the
    SHA-256 rotate recorded with it. Fetched twice, then HASH_MISMATCH in one sentence."""
    import gzip

    with sync_client(stack.settings.redis_url) as r:
        r.hset(keys.device("0c0009"), mapping={"cloud_id": "0c0009", "active": "1"})
        r.sadd(keys.devices_all(keys.group("0c0009")), "0c0009")
    write(stack.settings, "0c0009", BASE, range(0, 40))
    assert asyncio.run(Rotator(stack.settings, open_archive(stack.settings), None).pass_once()).stored >= 1
    client = s3_server.client()
    bucket = stack.env["ARCHIVE_URL"].split("/")[2]
    (obj,) = client.list_objects_v2(Bucket=bucket, Prefix="study/rainforest-logs/0c0009/")["Contents"]  # type: ignore[attr-defined]
    head = client.head_object(Bucket=bucket, Key=obj["Key"])  # type: ignore[attr-defined]
    forged = gzip.compress(line("0c0009", BASE + 1.5, 1, 999_999), mtime=0)
    client.put_object(Bucket=bucket, Key=obj["Key"], Body=forged, Metadata=head["Metadata"])  # type: ignore[attr-defined]
    cart_id = stack.post({"devices": ["0c0009"], "start": BASE, "end": BASE + 3600}).json()["id"]
    head = stack.wait(cart_id)
    assert head.headers["X-Cart-Reason"] == "HASH_MISMATCH", head.headers
    assert "SHA-256" in head.headers["X-Cart-Message"] and "fetched twice" in head.headers["X-Cart-Message"]
