"""Rotate against real archives: a folder (file://) and moto's S3 server over HTTP (s3://).

Every test runs on both backends unless it is about one of them. Hours are real past hours,
so no test waits for a clock.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from app import keys
from app.archive.backend import Archive, StoredObject, gunzip_chunks
from app.archive.factory import open_archive
from app.archive.layout import DeviceHour
from app.errors import WriteError
from app.hourly import HourlyWriter
from app.hours import hour_key
from app.lines import read as read_lines
from app.rotate.claim import Claim
from app.rotate.runner import Rotator
from app.rotate.ship import place
from app.settings import Settings
from app.store import Store
from tests.conftest import ROOT, S3Server
from tests.redis_cluster import sync_client

PAST = time.time() - 3 * 3600  # an hour that closed long ago
HOUR = hour_key(PAST)


def write_hour(settings: Settings, cloud_id: str, at: float = PAST, lines: int = 600, start: int = 0) -> Path:
    """Realistic reading lines for one device-hour, written the way the pinger writes them."""
    writer = HourlyWriter(settings.logs_dir, settings.file_prefix, 16)
    base = int(at // 3600 * 3600)
    path = Path()
    for i in range(start, start + lines):
        polled = base + i * 6 % 3600 + 0.25
        record = {
            "cloud_id": cloud_id, "polled_at": polled, "device_time": polled - 2, "demand_kw": 0.5 + i / 1000,
            "DeviceMacId": 0xD8D5B9000000ABCD, "MeterMacId": 0x00135003007A1234, "TimeStamp": 900_000_000 + i,
            "Demand": 500 + i, "Multiplier": 1, "Divisor": 1000, "DigitsRight": 3, "DigitsLeft": 6,
            "SuppressLeadingZero": 1,
        }  # fmt: skip
        path = writer.append(cloud_id, polled, orjson.dumps(record) + b"\n")
    writer.close()
    return path


def register(settings: Settings, *cloud_ids: str) -> None:
    with sync_client(settings.redis_url) as r:
        for cid in cloud_ids:
            r.hset(keys.device(cid), mapping={"cloud_id": cid, "active": "1"})


def device_hash(settings: Settings, cloud_id: str) -> dict[str, str]:
    with sync_client(settings.redis_url, decode_responses=True) as r:
        return r.hgetall(keys.device(cloud_id))  # type: ignore[return-value]


def archived(archive: Archive, key: str, tmp_path: Path) -> bytes:
    dest = tmp_path / f"fetched-{key.replace('/', '_')}"
    archive.fetch(key, dest)
    return gzip.decompress(dest.read_bytes())


def keys_under(archive: Archive, cloud_id: str) -> list[str]:
    return [o.key for o in archive.list(f"rainforest-logs/{cloud_id}/")]


@pytest.fixture
async def rotate(archive_settings: Settings) -> AsyncIterator[Callable[..., Rotator]]:
    stores: list[Store] = []

    def make(settings: Settings = archive_settings, **kw: object) -> Rotator:
        store = Store.from_url(settings.redis_url, max_connections=4)
        stores.append(store)
        return Rotator(settings, open_archive(settings), store, **kw)  # type: ignore[arg-type]

    yield make
    for store in stores:
        await store.close()


async def test_round_trip_ships_closed_hours_and_leaves_the_open_one(
    archive_settings: Settings, rotate: Callable[..., Rotator], tmp_path: Path
) -> None:
    settings = archive_settings
    register(settings, "00a001", "00a002")
    shipped = {cid: write_hour(settings, cid) for cid in ("00a001", "00a002")}
    originals = {cid: p.read_bytes() for cid, p in shipped.items()}
    earlier = write_hour(settings, "00a001", at=PAST - 3600, lines=10)
    open_now = write_hour(settings, "00a001", at=time.time(), lines=5)
    just_ended = write_hour(settings, "00a002", at=time.time() - 3600, lines=5)

    rotator = rotate(settings.replace(rotate_grace_s=3600.0))  # the hour that just ended is in grace
    report = await rotator.pass_once()

    assert report.ok and report.stored == 3 and report.files == 3, report.fields()
    for cid, original in originals.items():
        key = DeviceHour(HOUR, cid, settings.file_prefix).key()
        assert archived(rotator.archive, key, tmp_path) == original, "archived gzip must hold the exact bytes"
    assert not shipped["00a001"].exists() and not earlier.exists()
    assert not shipped["00a001"].parent.exists(), "an emptied hour folder is removed"
    assert open_now.exists() and just_ended.exists(), "open hours and hours in grace are never touched"
    assert device_hash(settings, "00a001")["archived_hours"] == "2"
    assert device_hash(settings, "00a001")["last_archived_hour"] == HOUR
    assert report.source_bytes == sum(len(b) for b in originals.values()) + len(gzip.decompress(
        (lambda p: (rotator.archive.fetch(p, tmp_path / "e"), (tmp_path / "e").read_bytes())[1])(
            DeviceHour(hour_key(PAST - 3600), "00a001", settings.file_prefix).key()
        )
    ))  # fmt: skip

    again = await rotator.pass_once()
    assert again.files == 0 and again.ok, "a second pass has nothing to do"


async def test_crash_between_upload_and_delete_is_finished_by_the_next_pass(
    archive_settings: Settings, rotate: Callable[..., Rotator], tmp_path: Path
) -> None:
    settings = archive_settings
    register(settings, "00b001")
    path = write_hour(settings, "00b001")
    original = path.read_bytes()
    rotator = rotate()
    # What a pass does up to the moment it is killed: claim, pack, store, confirm; no delete.
    claim = Claim(path)
    upload, _ = claim.pack(settings.data_dir / "tmp")
    placed = place(rotator.archive, DeviceHour(HOUR, "00b001", settings.file_prefix), upload)
    claim.release()  # the process died here: the lock goes with it
    assert placed.stored and path.exists()

    report = await rotator.pass_once()

    assert report.ok and report.already == 1 and report.stored == 0, report.fields()
    assert not path.exists()
    assert keys_under(rotator.archive, "00b001") == [placed.key], "no duplicate part"
    assert archived(rotator.archive, placed.key, tmp_path) == original


async def test_same_key_with_different_content_becomes_a_further_part(
    archive_settings: Settings, rotate: Callable[..., Rotator], tmp_path: Path
) -> None:
    settings = archive_settings
    register(settings, "00c001")
    rotator = rotate()
    first = write_hour(settings, "00c001", lines=100).read_bytes()
    assert (await rotator.pass_once()).stored == 1
    write_hour(settings, "00c001", lines=3, start=500)  # a late write, or another host's file
    second = write_hour(settings, "00c001", lines=2, start=700).read_bytes()
    report = await rotator.pass_once()
    assert report.stored == 1 and report.new_parts == 1, report.fields()
    write_hour(settings, "00c001", lines=3, start=500)  # part 2's very content again
    write_hour(settings, "00c001", lines=2, start=700)
    report = await rotator.pass_once()
    assert report.already == 1 and report.stored == 0, report.fields()

    dh = DeviceHour(HOUR, "00c001", settings.file_prefix)
    assert keys_under(rotator.archive, "00c001") == [dh.key(1), dh.key(2)]
    assert dh.key(2).endswith(f"-{HOUR}.part2.jl.gz")
    assert archived(rotator.archive, dh.key(1), tmp_path) == first, "part 1 is never overwritten"
    assert archived(rotator.archive, dh.key(2), tmp_path) == second
    assert device_hash(settings, "00c001")["archived_hours"] == "1", "a further part is not a further hour"


async def test_two_hosts_writing_one_device_hour_count_its_duplicates(
    archive_settings: Settings, rotate: Callable[..., Rotator]
) -> None:
    settings = archive_settings
    register(settings, "00c002")
    rotator = rotate()
    write_hour(settings, "00c002", lines=100)  # host A: readings 0..99
    assert (await rotator.pass_once()).stored == 1
    write_hour(settings, "00c002", lines=50, start=80)  # host B, cut off from Redis: 80..129
    report = await rotator.pass_once()
    assert report.new_parts == 1, report.fields()
    env = {"REDIS_URL": settings.redis_url, "DATA_DIR": str(settings.data_dir)}
    shown = subprocess.run(
        [sys.executable, "-m", "app.cli", "completeness", "--since", "1d", "--json", "--device", "00c002"],
        cwd=settings.data_dir, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    rows = [orjson.loads(line) for line in shown.stdout.splitlines()]
    assert [(r["hour"], r["duplicates"]) for r in rows] == [(HOUR, 20)], shown.stdout + shown.stderr
    text = subprocess.run(
        [sys.executable, "-m", "app.cli", "completeness", "--since", "1d", "--device", "00c002"],
        cwd=settings.data_dir, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert "duplicates 20" in text


async def test_archive_down_keeps_every_file_and_the_next_pass_ships_them(
    archive_settings: Settings, rotate: Callable[..., Rotator], tmp_path: Path
) -> None:
    settings = archive_settings
    paths = [write_hour(settings, cid, lines=50) for cid in ("00d001", "00d002", "00d003")]
    if settings.archive_url.startswith("s3://"):
        down = settings.replace(s3_endpoint_url="http://127.0.0.1:9", archive_timeout_s=1.0)
        kind = "unreachable"
    else:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the archive folder should be")
        down = settings.replace(archive_url=f"file://{blocker}/archive")
        kind = "unreachable"
    report = await rotate(down).pass_once()
    assert not report.ok and report.error is not None and report.error.kind == kind
    assert report.left == 3 and report.stored == 0
    assert all(p.exists() for p in paths), "nothing is deleted while the archive is down"

    report = await rotate().pass_once()
    assert report.ok and report.stored == 3 and not any(p.exists() for p in paths)


async def test_missing_bucket_is_named(
    make_settings: Callable[..., Settings], redis_url: str, s3_server: S3Server
) -> None:
    settings = make_settings(
        redis_url, archive_url="s3://no-such-bucket-here/x", s3_endpoint_url=s3_server.endpoint,
        aws_access_key_id="a", aws_secret_access_key="b", aws_region="us-east-1",
    )  # fmt: skip
    path = write_hour(settings, "00e001", lines=5)
    report = await Rotator(settings, open_archive(settings), None).pass_once()
    assert report.error is not None and report.error.kind == "no_bucket"
    assert "no-such-bucket-here" in str(report.error) and path.exists()


async def test_a_truncated_last_line_is_shipped_intact_and_counted(
    archive_settings: Settings, rotate: Callable[..., Rotator], tmp_path: Path
) -> None:
    settings = archive_settings
    path = write_hour(settings, "00f001", lines=20)
    with path.open("ab") as f:
        f.write(b'{"cloud_id": "00f001", "polled_at": 17')  # power cut mid-line
    original = path.read_bytes()
    rotator = rotate()
    report = await rotator.pass_once()
    assert report.ok and report.partial_lines == 1
    key = DeviceHour(HOUR, "00f001", settings.file_prefix).key()
    data = archived(rotator.archive, key, tmp_path)
    assert data == original
    (tmp_path / "back.jl").write_bytes(data)
    result = read_lines(tmp_path / "back.jl")
    assert len(result.records) == 20 and result.partial == 1


async def test_a_file_open_for_writing_is_left_for_the_next_pass(
    archive_settings: Settings, rotate: Callable[..., Rotator]
) -> None:
    settings = archive_settings
    path = write_hour(settings, "00a0f1", lines=5)
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what the pinger holds on every file it has open
    try:
        report = await rotate().pass_once()
        assert report.busy == 1 and report.stored == 0 and path.exists()
    finally:
        os.close(fd)
    assert (await rotate().pass_once()).stored == 1


def test_the_writer_backs_off_while_rotate_holds_a_file(tmp_path: Path) -> None:
    writer = HourlyWriter(tmp_path, "iseif-rainforest", 4)
    path = writer.append("00a0f2", PAST, b'{"a": 1}\n')
    writer.close()
    claim = Claim(path)
    try:
        with pytest.raises(WriteError, match="rotate is archiving"):
            writer.append("00a0f2", PAST + 1, b'{"a": 2}\n')
    finally:
        claim.finish()
    writer.append("00a0f2", PAST + 2, b'{"a": 3}\n')  # a fresh file: the late reading becomes a new part
    assert path.read_bytes() == b'{"a": 3}\n'
    writer.close()


def test_multipart_uploads_are_confirmed_too(
    make_settings: Callable[..., Settings], redis_url: str, s3_server: S3Server, tmp_path: Path
) -> None:
    from app.archive import s3 as s3mod

    s3_server_bucket = s3_server.bucket()
    settings = make_settings(
        redis_url, s3_endpoint_url=s3_server.endpoint,
        aws_access_key_id="a", aws_secret_access_key="b", aws_region="us-east-1",
    )  # fmt: skip
    path = settings.logs_dir / HOUR / f"iseif-rainforest-00a0f3-{HOUR}.jl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(orjson.dumps({"n": os.urandom(64).hex()}) + b"\n" for _ in range(80_000)))
    archive = s3mod.S3Archive(settings, s3_server_bucket, "", multipart_threshold=5 * 1024 * 1024)
    claim = Claim(path)
    upload, _ = claim.pack(tmp_path)
    assert upload.size > 5 * 1024 * 1024
    try:
        placed = place(archive, DeviceHour(HOUR, "00a0f3", "iseif-rainforest"), upload)
        again = place(archive, DeviceHour(HOUR, "00a0f3", "iseif-rainforest"), upload)
    finally:
        claim.finish()
    head = s3_server.client().head_object(Bucket=s3_server_bucket, Key=placed.key)  # type: ignore[attr-defined]
    assert head["ETag"].strip('"').endswith("-2"), "went up in parts"
    assert placed.stored and not again.stored and again.key == placed.key


def test_the_aws_cli_reads_back_what_rotate_stored(
    s3_server: S3Server, redis_url: str, tmp_path: Path
) -> None:
    """The CLI end to end: `rainforest rotate` ships, the AWS CLI (not our code) lists and fetches."""
    bucket = s3_server.bucket()
    data = tmp_path / "data"
    env = {
        **os.environ, **s3_server.env(), "REDIS_URL": redis_url, "DATA_DIR": str(data),
        "ARCHIVE_URL": f"s3://{bucket}/study-a", "S3_ENDPOINT_URL": s3_server.endpoint,
        "SECRET_KEY": "unused-by-rotate",
    }  # fmt: skip
    settings = Settings(redis_url=redis_url, data_dir=data)
    originals = {cid: write_hour(settings, cid, lines=30).read_bytes() for cid in ("00ac01", "00ac02")}
    cli = [sys.executable, "-m", "app.cli", "rotate"]

    dry = subprocess.run(
        [*cli, "--dry-run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0 and "2 files" in dry.stdout, dry.stderr
    assert all(p.exists() for p in data.joinpath("logs", HOUR).iterdir()), "a dry run touches nothing"

    run = subprocess.run(cli, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "2 stored" in run.stdout
    assert not data.joinpath("logs", HOUR).exists()

    aws = [str(Path(sys.executable).with_name("aws")), "--endpoint-url", s3_server.endpoint, "s3"]
    listing = subprocess.run(
        [*aws, "ls", "--recursive", f"s3://{bucket}/study-a/"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    for cid, original in originals.items():
        key = f"study-a/{DeviceHour(HOUR, cid, 'iseif-rainforest').key()}"
        assert key in listing.stdout
        got = subprocess.run(
            [*aws, "cp", f"s3://{bucket}/{key}", "-"], env=env, capture_output=True, timeout=60
        )
        assert got.returncode == 0, got.stderr
        assert gzip.decompress(got.stdout) == original


def test_cli_refuses_bad_hours_and_reports_archive_trouble(redis_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(data)}
    cli = [sys.executable, "-m", "app.cli", "rotate"]

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], env={**env, **extra}, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    bad = run("--hour", "2026-13-01-00")
    assert bad.returncode == 2 and "not a real hour" in bad.stderr
    bad = run("--hour", "yesterday")
    assert bad.returncode == 2 and "YYYY-MM-DD-HH" in bad.stderr
    now = run("--hour", hour_key(time.time()))
    assert now.returncode == 1 and "still open" in now.stderr

    write_hour(Settings(redis_url=redis_url, data_dir=data), "00ad01", lines=3)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    down = run(ARCHIVE_URL=f"file://{blocker}/archive")
    assert down.returncode == 1 and "archive trouble (unreachable)" in down.stderr
    assert (data / "logs" / HOUR).exists()
    import fcntl

    held = (data / "logs" / HOUR).glob("*.jl").__next__().open("rb")
    fcntl.flock(held.fileno(), fcntl.LOCK_SH)  # a pinger still writing it
    busy = run("--hour", HOUR)
    held.close()
    assert busy.returncode == 1 and "1 busy" in busy.stdout, "a pass that left a busy file must say so"
    ok = run("--hour", HOUR)
    assert ok.returncode == 0 and "1 stored" in ok.stdout, ok.stderr
    assert (data / "archive" / "rainforest-logs" / "00ad01").is_dir(), "file:// is the default archive"
    assert ROOT.exists()


def test_kill_9_mid_pass_then_rerun_loses_nothing_and_stores_nothing_twice(
    redis_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    settings = Settings(redis_url=redis_url, data_dir=data)
    originals: dict[str, bytes] = {}
    for n in range(400):
        cid = f"{0xB00000 + n:06x}"
        originals[cid] = write_hour(settings, cid, lines=120).read_bytes()
    env = {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(data), "ROTATE_CONCURRENCY": "1"}
    cli = [sys.executable, "-m", "app.cli", "rotate"]
    archive_dir = data / "archive" / "rainforest-logs"
    proc = subprocess.Popen(cli, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(archive_dir.glob("*/*/*/*/*.gz"))) < 40 and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.kill()  # SIGKILL: no cleanup, wherever it was
    finally:
        proc.wait(10)
    left = len(list((data / "logs" / HOUR).glob("*.jl")))
    assert 0 < left < 400, "killed mid-pass (some shipped, some not)"

    rerun = subprocess.run(cli, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert not (data / "logs" / HOUR).exists()
    stored = sorted(archive_dir.glob("*/*/*/*/*"))
    assert len(stored) == 400, "exactly one object per device-hour: nothing lost, nothing twice"
    for path in stored:
        assert gzip.decompress(path.read_bytes()) == originals[path.parts[-5]]


async def test_readback_mode_heads_every_object_and_ships_the_same(
    make_settings: Callable[..., Settings], redis_url: str, s3_server: S3Server, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url, archive_url=f"s3://{s3_server.bucket()}", s3_endpoint_url=s3_server.endpoint,
        aws_access_key_id="a", aws_secret_access_key="b", aws_region="us-east-1", rotate_readback=True,
    )  # fmt: skip
    original = write_hour(settings, "00ae01", lines=40).read_bytes()
    archive = open_archive(settings)
    heads: list[str] = []
    stat = archive.stat
    archive.stat = lambda key: (heads.append(key), stat(key))[1]  # type: ignore[method-assign]
    report = await Rotator(settings, archive, None).pass_once()
    key = DeviceHour(HOUR, "00ae01", settings.file_prefix).key()
    assert report.ok and report.stored == 1 and heads == [key]
    assert archived(archive, key, tmp_path) == original


def test_a_multipart_write_racing_another_never_replaces_it(
    make_settings: Callable[..., Settings], redis_url: str, s3_server: S3Server, tmp_path: Path
) -> None:
    """Two hosts both find a key free and both upload it in parts: the second completion is
    refused by S3 itself (If-None-Match on CompleteMultipartUpload), not by a look beforehand."""
    from app.archive import s3 as s3mod
    from app.archive.backend import Upload, file_digests

    bucket = s3_server.bucket()
    settings = make_settings(
        redis_url, s3_endpoint_url=s3_server.endpoint,
        aws_access_key_id="a", aws_secret_access_key="b", aws_region="us-east-1",
    )  # fmt: skip

    class LookedTooEarly(s3mod.S3Archive):
        def stat(self, key: str) -> StoredObject | None:
            return None  # the key was free when this host looked

    def upload_of(name: str, fill: bytes) -> Upload:
        path = tmp_path / name
        path.write_bytes(fill * (6 * 1024 * 1024))
        sha, md5 = file_digests(path)
        return Upload(path, path.stat().st_size, sha, md5, sha, path.stat().st_size, 1)

    first = s3mod.S3Archive(settings, bucket, "", multipart_threshold=5 * 1024 * 1024)
    second = LookedTooEarly(settings, bucket, "", multipart_threshold=5 * 1024 * 1024)
    key = "rainforest-parquet/kind=demand/date=2026-11-30/v0001-000.parquet"
    assert first.put_new(key, upload_of("a", b"a")) is not None
    assert second.put_new(key, upload_of("b", b"b")) is None, "the racing write must be refused"
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read(16)  # type: ignore[attr-defined]
    assert body == b"a" * 16, "the first object was replaced"


async def test_an_object_that_reads_back_otherwise_is_never_deleted_locally(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    """rotate's confirmation: an archive that says it stored other bytes than were sent (a
    truncated write, a storage fault) fails the pass with an integrity error, and the local file
    stays for the next pass."""
    from app.archive.files import FileArchive

    class StoresOtherBytes(FileArchive):
        def stat(self, key: str) -> StoredObject | None:
            found = super().stat(key)
            return None if found is None else StoredObject(key, found.size - 1, sha256="0" * 64)

    root = tmp_path / "archive"
    settings = make_settings(redis_url, archive_url=f"file://{root}", rotate_grace_s=0.0)
    path = write_hour(settings, "00ae01", lines=50)
    report = await Rotator(settings, StoresOtherBytes(root), None).pass_once()
    assert report.error is not None and report.error.kind == "integrity", report.fields()
    assert "does not match what was sent" in str(report.error)
    assert path.exists(), "a file whose copy did not verify must stay"


def test_gzip_streams_inflate_whole_however_they_are_cut_and_anything_else_is_refused() -> None:
    """Every member of a stream (a further part appended to an object is a second member), cut at
    any byte, and zlib.error, as the archive's readers expect, for bytes that are not gzip."""
    plain = [b"".join(b'{"device_time":%d}\n' % (t + 1000 * m) for t in range(200)) for m in range(3)]
    stream = b"".join(gzip.compress(p) for p in plain)
    for cut in (1, 7, 10, 64, len(stream) // 2, len(stream) - 1):
        chunks = [stream[i : i + cut] for i in range(0, len(stream), cut)]
        assert b"".join(gunzip_chunks(chunks)) == b"".join(plain), cut
    with pytest.raises(zlib.error, match="gzip"):
        b"".join(gunzip_chunks([b"this is not gzip at all\n"]))
    with pytest.raises(zlib.error):
        b"".join(gunzip_chunks([stream[:40] + bytes(40) + stream[80:]]))  # damaged inside a member
