"""A household withdraws and is erased: no byte of its readings left in any file or object (hourly
files on two hosts, archived objects and a further part, two compacted days, one shared with 50
other households, two carts, Redis), every other household's rows unchanged, a receipt that lists
each place, a host that was away deletes on return, nothing comes back; a kill -9 half-way and a
rerun finish it. On a folder and on moto's S3 (a versioned bucket, so old versions are searched)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from app.archive.factory import open_archive
from app.carts.build import Builder
from app.carts.model import ERASED, Cart, CartRequest
from app.carts.registry import CartRegistry
from app.credentials import Vault
from app.db.alerts import alert_id
from app.devices import DeviceInput
from app.erasure.local import LocalSweep
from app.errors import ValidationError
from app.hourly import HourlyWriter
from app.research.compact import Compactor
from app.research.days import DayReader, current
from app.rotate.runner import Rotator
from app.settings import Settings
from app.store import PollUpdate, Store
from app.studies import Enrolment, Study
from app.tokens import Tokens
from tests.conftest import S3_KEY_ID, S3_SECRET

TARGET, PID = "0e0001", "wd-7"
OTHERS = tuple(f"0e1{n:03x}" for n in range(50))
METER, DEVICE_MAC = 0x00135003AB12CD34, 0xD8D5B900FEED0001
DAY1_START = int(time.time() // 86400 - 3) * 86400
DAY2_START = DAY1_START + 86400
DAY1, DAY2 = (time.strftime("%Y-%m-%d", time.gmtime(d)) for d in (DAY1_START, DAY2_START))
STUDY = Study("withdraw-test", "Withdrawal", "UTC")
NEEDLES = (TARGET.encode(), PID.encode(), str(METER).encode(), f"{METER:x}".encode(), f"{METER:X}".encode())


def write(settings: Settings, cid: str, hour_start: float, lines: int, first: int = 0) -> None:
    writer = HourlyWriter(settings.logs_dir, settings.file_prefix, 4)
    meter = METER if cid == TARGET else 0x0013500300000000 + int(cid, 16)
    for i in range(first, first + lines):
        polled = hour_start + i * 6 + 0.25
        record = {
            "cloud_id": cid,
            "polled_at": polled,
            "device_time": int(polled - 2),
            "demand_kw": 0.5 + i / 100,
            "DeviceMacId": DEVICE_MAC if cid == TARGET else 1,
            "MeterMacId": meter,
            "TimeStamp": 900_000_000 + i,
            "Demand": 500 + i,
            "Multiplier": 1,
            "Divisor": 1000,
        }
        writer.append(cid, polled, orjson.dumps(record) + b"\n")
    writer.close()


def hosts(base: Settings, tmp_path: Path) -> tuple[Settings, Settings]:
    a, b = (
        base.replace(
            data_dir=tmp_path / name,
            archive_url=base.archive_url,
            carts_dir=tmp_path / name / "carts",
            rotate_grace_s=0.0,
        )
        for name in ("host-a", "host-b")
    )
    return a, b


async def seed(a: Settings, b: Settings, store: Store, vault: Vault) -> list[str]:
    """The household and 50 others: archived days (one part further on host B), compacted, two
    carts, open hours on both hosts, and its traces in Redis. Returns the cart ids."""
    await store.studies.save(STUDY)
    for cid in (TARGET, *OTHERS):
        await store.devices.save_device(
            DeviceInput.from_mapping({"cloud_id": cid, "user_email": f"{cid}@example.org", "user_pw": "pw"}),
            vault,
        )
    enrolment = {"enrolled_from": DAY1_START - 86400, "participant_id": PID}
    await store.studies.enrol(TARGET, Enrolment.from_mapping(enrolment, STUDY, TARGET))
    for cid in (TARGET, *OTHERS):
        for h in (0, 1):
            write(a, cid, DAY1_START + h * 3600, 40)
    write(b, TARGET, DAY1_START, 10, first=100)  # the same hour from a second host: a further part
    for cid in (TARGET, OTHERS[0]):
        write(a, cid, DAY2_START + 5 * 3600, 30)
    archive = open_archive(a)
    for host in (a, b):
        report = await Rotator(host, archive, None).pass_once()
        assert report.stored and not report.failed, report.fields()
    now = time.time()
    write(a, TARGET, now, 3)  # the open hour, on both pinger hosts
    write(b, TARGET, now, 3)
    compactor = Compactor(a, archive)
    for day in (DAY1, DAY2):
        assert compactor.compact(day, check=False).version == 1
    await store.devices.record_polls([PollUpdate(TARGET, fields={"last_timestamp": repr(now)})])
    await store.crawls.record_crawl(TARGET, {"at": now, "fields": {"MeterMacId": hex(METER)}}, 10)
    await store.alerts.open_alert(TARGET, alert_id(TARGET, 1000), 1000.0, {"kind": "unreachable"}, None)
    registry, made = CartRegistry(store.redis), []
    for devices, fmt in (((TARGET, OTHERS[0]), "jl"), ((TARGET,), "parquet")):
        cart = Cart(
            str(uuid.uuid4()),
            "t",
            0.0,
            CartRequest(devices, DAY1_START, DAY2_START + 86400, fmt),
            created_at=now,
            last_access=now,
        )
        assert await registry.create(cart)
        assert await Builder(a, archive, registry, store, "w1").build(cart.id, 1) == "ready"
        made.append(cart.id)
    return made


def others_rows(settings: Settings) -> dict[str, str]:
    """A digest of every other household's rows in each compacted day."""
    archive, found = open_archive(settings), {}
    for day in (DAY1, DAY2):
        manifest = current(archive, day)
        assert manifest is not None
        reader = DayReader(archive, manifest)
        for cid in OTHERS[:5]:
            found[f"{day}/{cid}"] = hashlib.sha256(
                orjson.dumps(sorted(reader.rows(cid), key=orjson.dumps))
            ).hexdigest()
        reader.close()
    return found


def every_byte(settings: Settings, roots: list[Path], tmp_path: Path) -> list[tuple[str, bytes]]:
    """(where, content) of every file under the roots and every stored version in the bucket:
    gzip decompressed, Parquet as its rows."""
    found: list[tuple[str, bytes]] = []

    def add(where: str, data: bytes) -> None:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        elif data[:4] == b"PAR1":
            data = orjson.dumps(pq.read_table(pa.BufferReader(data)).to_pylist(), default=str)
        found.append((where, data))

    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                add(str(path), path.read_bytes())
                if path.suffix == ".tar":
                    import tarfile

                    with tarfile.open(path) as tar:
                        for m in tar.getmembers():
                            if m.isfile():
                                add(f"{path}:{m.name}", tar.extractfile(m).read())  # type: ignore[union-attr]
    if settings.archive_url.startswith("s3://"):
        client = _client(settings)
        bucket = settings.archive_url[5:].split("/")[0]
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for v in page.get("Versions", []):
                body = client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
                add(f"s3:{v['Key']}@{v['VersionId']}", body)
    return found


def _client(settings: Settings) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )


def env_of(settings: Settings) -> dict[str, str]:
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.secret_key,
        "DATA_DIR": str(settings.data_dir),
        "ARCHIVE_URL": settings.archive_url,
        "CARTS_DIR": str(settings.carts_dir),
    }
    if settings.s3_endpoint_url:
        env |= {
            "S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_REGION": "us-east-1",
        }
    return env


def rf(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env_of(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_withdraw_and_erase_leaves_no_byte_of_the_household_anywhere(
    archive_settings: Settings, tmp_path: Path, secret_key: str
) -> None:
    if archive_settings.archive_url.startswith("s3://"):  # a versioned bucket keeps old versions
        bucket = archive_settings.archive_url[5:].split("/")[0]
        _client(archive_settings).put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    a, b = hosts(archive_settings, tmp_path)
    store = Store.from_url(a.redis_url)
    try:
        carts = await seed(a, b, store, Vault(secret_key))
        before = others_rows(a)
        roots = [tmp_path]
        assert any(TARGET.encode() in data for _, data in every_byte(a, roots, tmp_path)), (
            "the search can see it"
        )

        done = rf(a, "participants", "withdraw", STUDY.id, PID, "--erase", "--yes")
        assert done.returncode == 0, done.stderr
        for step in ("hourly", "parquet", "carts", "redis", "local"):
            assert f"  {step} " in done.stdout, done.stdout
        # host B was away: it deletes its copies when it comes back, and reports
        assert sum((await LocalSweep(b, store).once()).values()) == 1  # its open hour

        left = [(where, n) for where, data in every_byte(a, roots, tmp_path) for n in NEEDLES if n in data]
        assert not left, left[:5]
        assert others_rows(a) == before, "every other household's rows are as they were"
        for cart_id in carts:
            cart = await CartRegistry(store.redis).get(cart_id)
            assert cart is not None and cart.status == ERASED and "withdrew" in cart.message
        assert await store.devices.get_device(TARGET) is None
        assert (await store.erasures.sweep(TARGET, remove=False)).public() == {"keys": 0, "fields": 0}

        receipt = rf(a, "participants", "erasure-report", STUDY.id, PID)
        assert receipt.returncode == 0, receipt.stdout + receipt.stderr
        report = orjson.loads(receipt.stdout)
        assert report["erased"] is True and report["tombstone"]["state"] == "done"
        erased = report["tombstone"]["erased"]
        assert (
            erased["hourly"]["objects"] == 4
            and erased["parquet"]["days"] == 2
            and erased["carts"]["carts"] == 2
        )
        assert len(report["tombstone"]["hosts"]) == 2, report["tombstone"]["hosts"]
        assert TARGET not in receipt.stdout and str(METER) not in receipt.stdout
        await store.redis.hset("rf:planted", "note", f"a trace of {TARGET}")  # the receipt looks again
        planted = rf(a, "participants", "erasure-report", STUDY.id, PID)
        assert planted.returncode == 1 and orjson.loads(planted.stdout)["left"]["redis"] == 1
        await store.redis.delete("rf:planted")

        # nothing comes back: a host's old file is deleted, not shipped; a re-enrolment is a new participant
        write(b, TARGET, DAY2_START + 7 * 3600, 5)
        shipped = await Rotator(b, open_archive(b), store).pass_once()
        assert shipped.stored == 0 and not list((b.logs_dir).rglob(f"*{TARGET}*"))
        again = rf(a, "participants", "withdraw", STUDY.id, PID, "--erase", "--yes")
        assert again.returncode == 0 and "done" in again.stdout, "running it twice is harmless"
        body = {"enrolled_from": 0, "participant_id": PID}
        await store.devices.save_device(
            DeviceInput.from_mapping({"cloud_id": TARGET, "user_email": "new@example.org", "user_pw": "pw"}),
            Vault(secret_key),
        )
        with pytest.raises(ValidationError, match="new participant_id"):
            await store.studies.enrol(TARGET, Enrolment.from_mapping(body, STUDY, TARGET))
        # an old object shipped back by a host that knows nothing of Redis: compaction leaves it out
        c = a.replace(data_dir=tmp_path / "host-c", archive_url=a.archive_url)
        write(c, TARGET, DAY1_START + 3 * 3600, 5)
        assert (await Rotator(c, open_archive(c), None).pass_once()).stored == 1
        marks = await store.erasures.marks(secret_key)
        assert Compactor(a, open_archive(a), marks=marks).compact(DAY1, check=False).version is None
        assert Compactor(a, open_archive(a)).compact(DAY1, check=False).version == 3, "(it would without)"
    finally:
        await store.close()


def test_an_erasure_killed_half_way_is_finished_by_the_next_run(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path, secret_key: str
) -> None:
    base = make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}")
    a, b = hosts(base, tmp_path)

    async def prepare() -> None:
        store = Store.from_url(redis_url)
        try:
            await seed(a, b, store, Vault(secret_key))
        finally:
            await store.close()

    asyncio.run(prepare())
    cmd = [sys.executable, "-m", "app.cli", "participants", "withdraw", STUDY.id, PID, "--erase", "--yes"]
    with subprocess.Popen(
        cmd, env=env_of(a), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("  hourly "):
                os.kill(proc.pid, signal.SIGKILL)  # the archive's objects gone, the days not yet rewritten
                break
        proc.wait(60)
    assert proc.returncode == -signal.SIGKILL

    async def tombstone() -> Any:
        store = Store.from_url(redis_url)
        try:
            return await store.erasures.get(STUDY.id, PID)
        finally:
            await store.close()

    half = asyncio.run(tombstone())
    assert (
        half is not None and half.state == "running" and "hourly" in half.steps and "redis" not in half.steps
    )
    done = rf(a, "participants", "withdraw", STUDY.id, PID, "--erase", "--yes")
    assert done.returncode == 0, done.stderr
    assert "  hourly " not in done.stdout and "  redis " in done.stdout, "it goes on where it stopped"
    receipt = rf(a, "participants", "erasure-report", STUDY.id, PID)
    assert receipt.returncode == 0 and orjson.loads(receipt.stdout)["erased"], receipt.stdout


async def test_an_erasure_asked_through_the_api_is_carried_out_by_rotate(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path, secret_key: str
) -> None:
    from tests.api_helpers import start_api

    a = make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}", rotate_grace_s=0.0)
    store = Store.from_url(redis_url)
    await store.studies.save(STUDY)
    await store.devices.save_device(
        DeviceInput.from_mapping({"cloud_id": TARGET, "user_email": "t@example.org", "user_pw": "pw"}),
        Vault(secret_key),
    )
    await store.studies.enrol(
        TARGET, Enrolment.from_mapping({"enrolled_from": 0, "participant_id": PID}, STUDY, TARGET)
    )
    write(a, TARGET, DAY1_START, 20)
    assert (await Rotator(a, open_archive(a), None).pass_once()).stored == 1
    lead = await Tokens(store).create("lead", study=STUDY.id)
    server = start_api(redis_url, secret_key)
    try:
        url = f"{server.url}/api/studies/{STUDY.id}/participants/{TARGET}/withdraw"
        h = {"Authorization": f"Bearer {lead}"}
        refused = await asyncio.to_thread(requests.post, url, json={"erase": "yes"}, headers=h, timeout=10)
        assert refused.status_code == 400 and "erase" in refused.json()["message"]
        asked = await asyncio.to_thread(requests.post, url, json={"erase": True}, headers=h, timeout=10)
        assert asked.status_code == 202 and asked.json()["left"] == [
            "hourly",
            "parquet",
            "carts",
            "redis",
            "local",
        ]
        assert TARGET not in asked.text
        record = await store.devices.get_device(TARGET)
        assert record is not None and record.enrolment is not None and record.enrolment.state == "withdrawn"
        rotator = Rotator(a, open_archive(a), store)
        running = asyncio.create_task(rotator.run(every_s=0.2))
        receipt = f"{server.url}/api/studies/{STUDY.id}/erasures/{PID}"

        async def state() -> str:
            got = await asyncio.to_thread(requests.get, receipt, headers=h, timeout=10)
            return str(got.json()["state"])

        deadline = time.monotonic() + 60
        while await state() != "done" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        rotator.request_stop()
        await running
        done = (await asyncio.to_thread(requests.get, receipt, headers=h, timeout=10)).json()
        assert done["state"] == "done" and done["erased"]["hourly"]["objects"] == 1, done
        assert not list((tmp_path / "archive").rglob(f"*{TARGET}*"))
    finally:
        server.stop()
        await store.close()


async def test_a_host_sweeps_when_an_erasure_begins_or_ends_not_every_time(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    """The pinger's and server's loop sweep their DATA_DIR once per change of the erasures (a new
    mark, an erasure finished), not every 30 s over again; rotate sweeps before every pass."""
    from app.erasure.marks import Mark, digests
    from app.erasure.tombstone import Tombstone

    a = make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}")
    store = Store.from_url(redis_url)
    try:
        tomb = Tombstone(STUDY.id, PID, time.time(), "test", True, digest=digests(a.secret_key, TARGET)[0])
        await store.erasures.begin(tomb, Mark(time.time(), tomb.id))
        sweep = LocalSweep(a, store)
        write(a, TARGET, DAY1_START, 3)
        assert sum((await sweep.once(changed_only=True)).values()) == 1
        write(a, TARGET, DAY1_START + 3600, 3)
        assert sum((await sweep.once(changed_only=True)).values()) == 0, "nothing changed: no sweep"
        await store.erasures.finish(tomb, time.time())
        assert sum((await sweep.once(changed_only=True)).values()) == 1, "the erasure ended: swept again"
        write(a, TARGET, DAY1_START + 7200, 3)
        assert sum((await sweep.once()).values()) == 1, "rotate's sweep is unconditional"
    finally:
        await store.close()
