"""Compaction on both archives (a folder and moto's S3 over HTTP): read back with DuckDB and with
pyarrow's own S3 filesystem, the Parquet equals the hourly objects; a late part makes a new version
without losing or doubling a row; the command refuses what it must with one sentence."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import duckdb
import orjson
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from app import keys
from app.archive.backend import Archive
from app.archive.factory import open_archive
from app.research.claims import CompactionBook
from app.research.compact import Compactor
from app.research.days import current
from app.rotate.daily import DailyCompaction
from app.rotate.runner import Rotator
from app.settings import Settings
from app.store import Store
from tests.conftest import S3_KEY_ID, S3_SECRET, S3Server
from tests.redis_cluster import sync_client
from tests.test_rotate import write_hour

DAY_START = int(time.time() // 86400 - 2) * 86400  # the day before yesterday, long closed
DAY = time.strftime("%Y-%m-%d", time.gmtime(DAY_START))
DEVICES = ("0d0001", "0d0002", "0d0003")


def summation(cid: str, at: float, kwh: float) -> bytes:
    return orjson.dumps({"cloud_id": cid, "polled_at": at, "device_time": int(at) - 1, "kind": "summation",
                         "source": "eagle200-local", "delivered_kwh": kwh, "received_kwh": None,
                         "MeterMacId": 7}) + b"\n"  # fmt: skip


def fill_day(settings: Settings) -> None:
    """Three devices × 24 hours of demand (300 a hour), a few summations, shipped by rotate."""
    asyncio.run(ship_day(settings))


async def ship_day(settings: Settings) -> None:
    for cid in DEVICES:
        for h in range(24):
            path = write_hour(settings, cid, at=DAY_START + h * 3600 + 5, lines=300)
            with path.open("ab") as f:
                f.write(summation(cid, DAY_START + h * 3600 + 1800.5, 1000.0 + h))
    report = await Rotator(settings.replace(rotate_grace_s=0.0), open_archive(settings), None).pass_once()
    assert report.stored == len(DEVICES) * 24, report.fields()


def hourly_truth(archive: Archive, tmp_path: Path) -> set[tuple[str, str, int, object]]:
    """Distinct (cloud_id, kind, device_time, value) of every hourly object of the day."""
    found = set()
    y, m, d = DAY.split("-")
    for cid in DEVICES:
        for obj in archive.list(f"rainforest-logs/{cid}/{y}/{m}/{d}/"):
            dest = tmp_path / "obj.gz"
            archive.fetch(obj.key, dest)
            for raw in gzip.decompress(dest.read_bytes()).splitlines():
                r = orjson.loads(raw)
                kind = r.get("kind", "demand")
                value = r["demand_kw"] if kind == "demand" else r["delivered_kwh"]
                found.add((r["cloud_id"], kind, int(r["device_time"]), value))
    return found


def parquet_rows(settings: Settings, s3: S3Server | None) -> set[tuple[str, str, int, object]]:
    """The compacted day as a researcher reads it: DuckDB on a folder, pyarrow's S3 filesystem on S3."""
    url = urlsplit(settings.archive_url)
    rows: set[tuple[str, str, int, object]] = set()
    if s3 is None:
        root = Path(url.path) / "rainforest-parquet"
        for kind, value in (("demand", "demand_kw"), ("summation", "delivered_kwh")):
            got = duckdb.sql(
                f"SELECT cloud_id, kind, epoch_ms(time) // 1000, {value} FROM read_parquet("
                f"'{root}/kind={kind}/date={DAY}/*.parquet', hive_partitioning = true)"
            ).fetchall()  # fmt: skip
            rows |= {(c, k, t, v) for c, k, t, v in got}
        return rows
    fs = pafs.S3FileSystem(access_key=S3_KEY_ID, secret_key=S3_SECRET, region="us-east-1",
                           endpoint_override=s3.endpoint, scheme="http")  # fmt: skip
    base = f"{url.netloc}{url.path}/rainforest-parquet"
    for kind, value in (("demand", "demand_kw"), ("summation", "delivered_kwh")):
        table = pq.read_table(f"{base}/kind={kind}/date={DAY}/", filesystem=fs)
        for r in table.select(["cloud_id", "time", value]).to_pylist():
            rows.add((r["cloud_id"], kind, int(r["time"].timestamp()), r[value]))
    return rows


def test_a_compacted_day_equals_its_hourly_objects(
    archive_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = archive_settings
    fill_day(settings)
    archive = open_archive(settings)
    done = Compactor(settings, archive).compact(DAY)
    assert done.version == 1 and done.rows["demand"] == 3 * 24 * 300 and done.rows["summation"] == 3 * 24
    s3 = request.getfixturevalue("s3_server") if settings.archive_url.startswith("s3://") else None
    truth = hourly_truth(archive, tmp_path)
    assert parquet_rows(settings, s3) == truth and len(truth) == sum(done.rows.values())
    manifest = current(archive, DAY)
    assert manifest is not None and manifest.version == 1
    # sorted by cloud_id then time, so one household's rows sit in few row groups
    with archive.open_read(manifest.files[0]["key"]) as f:
        table = pq.read_table(f)
    order = list(zip(table.column("cloud_id").to_pylist(), table.column("time").to_pylist(), strict=True))
    assert order == sorted(order)
    again = Compactor(settings, archive).compact(DAY)
    assert again.version is None and "already compacted" in again.note, "idempotent: nothing twice"


def test_a_late_part_recompacts_without_losing_or_doubling_a_row(
    archive_settings: Settings, tmp_path: Path
) -> None:
    settings = archive_settings
    fill_day(settings)
    archive = open_archive(settings)
    first = Compactor(settings, archive).compact(DAY)
    assert first.version == 1
    # a late part for one hour: 100 readings repeated, 50 new
    write_hour(settings, DEVICES[1], at=DAY_START + 5 * 3600 + 5, lines=150, start=200)
    assert (
        asyncio.run(Rotator(settings.replace(rotate_grace_s=0.0), archive, None).pass_once()).new_parts == 1
    )
    second = Compactor(settings, archive).compact(DAY)
    assert second.version == 2 and "recompacted" in second.note
    assert second.rows["demand"] == first.rows["demand"] + 50 and second.duplicates == 100
    manifest = current(archive, DAY)
    assert manifest is not None and manifest.version == 2
    kept = [o.key for o in archive.list("rainforest-parquet/")]
    assert kept and all("/v0002" in k for k in kept), "the older version goes once the new one is confirmed"
    assert len(hourly_truth(archive, tmp_path)) == sum(second.rows.values())


def test_the_command_refuses_what_it_must_in_one_sentence(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}")
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(settings.data_dir),
        "ARCHIVE_URL": settings.archive_url,
    }

    def compact(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", "compact", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    bad = compact("--day", "30/11/2026")
    assert bad.returncode == 1 and "YYYY-MM-DD" in bad.stderr and "Traceback" not in bad.stderr
    today = compact("--day", time.strftime("%Y-%m-%d", time.gmtime()))
    assert today.returncode == 1 and "not over and shipped yet" in today.stderr
    write_hour(settings, DEVICES[0], at=DAY_START + 3600)  # a file of that day this host still holds
    unshipped = compact("--day", DAY)
    assert (
        unshipped.returncode == 1
        and "not shipped yet" in unshipped.stderr
        and "rainforest rotate" in unshipped.stderr
    )
    asyncio.run(Rotator(settings, open_archive(settings), None).pass_once())
    ok = compact("--day", DAY)
    assert ok.returncode == 0 and "version 1" in ok.stdout and "verified" in ok.stdout, ok.stderr
    assert "nothing to do" in compact("--day", DAY).stdout


async def test_the_rotate_loop_compacts_the_days_it_shipped(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}", rotate_grace_s=0.0)
    store = Store.from_url(redis_url)
    for h in range(3):
        write_hour(settings, DEVICES[0], at=DAY_START + h * 3600 + 5, lines=50)
    archive = open_archive(settings)
    await Rotator(settings, archive, store).pass_once()  # notes the day
    with sync_client(redis_url, decode_responses=True) as r:
        assert r.smembers(keys.compaction_due()) == {DAY}
    daily = DailyCompaction(settings, archive, store)
    assert await daily.maybe_run(asyncio.Event()) == 1
    assert (current(archive, DAY) or pytest.fail("no manifest")).rows["demand"] == 150
    assert await CompactionBook(store.redis).due() == {}
    assert await daily.maybe_run(asyncio.Event()) == 0, "checked at most once an hour"
    await store.close()


async def build_cart(settings: Settings, store: Store, fmt: str, start: float, end: float) -> Path:
    """A cart built by the real builder (as cartd runs it); returns its unpacked folder."""
    import tarfile
    import uuid

    from app.carts.build import Builder, tar_path
    from app.carts.model import Cart, CartRequest
    from app.carts.registry import CartRegistry

    registry = CartRegistry(store.redis)
    cart = Cart(str(uuid.uuid4()), "t", 0.0, CartRequest(DEVICES, start, end, fmt), created_at=time.time(),
                last_access=time.time())  # fmt: skip
    assert await registry.create(cart)
    outcome = await Builder(settings, open_archive(settings), registry, store, "w1").build(cart.id, 1)
    assert outcome == "ready", await registry.get(cart.id)
    out = settings.data_dir / f"unpacked-{fmt}-{cart.id}"
    with tarfile.open(tar_path(settings, cart.id)) as tar:
        tar.extractall(out, filter="data")
    return out


async def test_carts_read_compacted_days_and_equal_carts_of_hourly_objects(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}", rotate_grace_s=0.0)
    with sync_client(redis_url) as r:
        for cid in DEVICES:
            r.hset(keys.device(cid), mapping={"cloud_id": cid, "active": "1"})
            r.sadd(keys.devices_all(keys.group(cid)), cid)
    await ship_day(settings)
    store = Store.from_url(redis_url)
    start, end = DAY_START + 3 * 3600, DAY_START + 9 * 3600
    before = {fmt: await build_cart(settings, store, fmt, start, end) for fmt in ("csv", "parquet")}
    assert Compactor(settings, open_archive(settings)).compact(DAY).version == 1
    after = {fmt: await build_cart(settings, store, fmt, start, end) for fmt in ("csv", "parquet")}
    await store.close()
    for fmt in ("csv", "parquet"):
        manifest = orjson.loads((after[fmt] / "MANIFEST.json").read_bytes())
        assert manifest["counts"]["compacted_days_read"] == [DAY] and manifest["counts"]["parts"] == 0
        assert (before[fmt] / "COMPLETENESS.csv").read_text() == (after[fmt] / "COMPLETENESS.csv").read_text()

    def rows(folder: Path, cid: str) -> list[tuple[object, ...]]:
        import csv

        with (folder / f"{cid}.csv").open(newline="") as f:
            return [(r["time_utc"], r["demand_kw"], r["TimeStamp"], round(float(r["polled_at"]), 3))
                    for r in csv.DictReader(f)]  # fmt: skip

    for cid in DEVICES:  # the same rows; polled_at is kept to the millisecond in the compacted archive
        # six hours of 300, but the first: timed 1.75 s before its hour began, so before the range
        assert (
            rows(before["csv"], cid) == rows(after["csv"], cid)
            and len(rows(after["csv"], cid)) == 6 * 300 - 1
        )
        for kind in ("demand", "summation"):
            one, two = (
                pq.read_table(d / cid / f"{kind}.parquet") for d in (before["parquet"], after["parquet"])
            )
            assert one.equals(two), f"{cid} {kind}"


# The DuckDB query docs/archive.md shows: the current version of each day, through its manifest
CURRENT_FILES = """
SET VARIABLE demand_files = (
  SELECT list('{root}/' || f.key) FROM (
    SELECT unnest(files) AS f FROM read_json('{root}/rainforest-parquet/_manifests/date=*/v*.json')
    QUALIFY version = max(version) OVER (PARTITION BY day)
  ) WHERE f.kind = 'demand');
"""


def documented_count(root: Path) -> int:
    con = duckdb.connect()
    con.execute(CURRENT_FILES.format(root=root))
    got = con.execute(
        "SELECT count(*) FROM read_parquet(getvariable('demand_files'), hive_partitioning = true)"
    ).fetchone()
    return int(got[0]) if got else 0


class RefusesDeletes:
    """A bucket whose policy refuses deletes (the IAM policy of an earlier version of the docs)."""

    def __init__(self, inner: Archive) -> None:
        self.inner, self.refusing = inner, True

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def delete(self, key: str) -> None:
        from app.errors import ArchiveError

        if self.refusing:
            raise ArchiveError(f"the archive refused to delete {key} (AccessDenied).", kind="credentials")
        self.inner.delete(key)


async def test_a_refused_delete_never_counts_a_day_twice_and_is_retried(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    """v2 published, v1's delete refused: the documented query still counts the day once, the
    day stays due, and once deletes are allowed the next run removes v1."""
    root = tmp_path / "archive"
    settings = make_settings(redis_url, archive_url=f"file://{root}", rotate_grace_s=0.0)
    store = Store.from_url(redis_url)
    await ship_day(settings)
    archive = open_archive(settings)
    Compactor(settings, archive).compact(DAY)
    once = documented_count(root)
    write_hour(settings, DEVICES[1], at=DAY_START + 5 * 3600 + 5, lines=150, start=200)  # 50 new readings
    await Rotator(settings, archive, store).pass_once()  # notes the day
    refusing = RefusesDeletes(archive)
    daily = DailyCompaction(settings, refusing, store)  # type: ignore[arg-type]
    assert await daily.maybe_run(asyncio.Event()) == 0, "a compaction whose old version stays is not done"
    assert {o.key.split("/")[-1][:5] for o in archive.list("rainforest-parquet/kind=demand/")} == {
        "v0001",
        "v0002",
    }
    assert documented_count(root) == once + 50, "the documented query counted a day twice"
    assert DAY in await CompactionBook(store.redis).due(), "the day must stay due until v1 is gone"
    refusing.refusing = False
    daily._checked_at = -1e18  # the next hourly check
    assert await daily.maybe_run(asyncio.Event()) == 1
    assert {o.key.split("/")[-1][:5] for o in archive.list("rainforest-parquet/kind=demand/")} == {"v0002"}
    assert await CompactionBook(store.redis).due() == {}
    await store.close()


async def test_two_rotate_hosts_never_compact_one_day_at_once_and_a_late_note_is_kept(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}", rotate_grace_s=0.0)
    store = Store.from_url(redis_url)
    await ship_day(settings)
    book = CompactionBook(store.redis)
    await book.note(DAY)
    (noted,) = (await book.due()).values()
    assert await book.claim(DAY, "host-a:1", 60)
    other = DailyCompaction(settings, open_archive(settings), store)
    assert await other.maybe_run(asyncio.Event()) == 0, "host b compacted a day host a holds"
    assert current(open_archive(settings), DAY) is None
    await book.note(DAY)  # a late part arrives while host a compacts
    assert not await book.done(DAY, noted), "host a's finish must not forget the later note"
    assert DAY in await book.due()
    await book.release(DAY, "host-a:1")
    other._checked_at = -1e18
    assert await other.maybe_run(asyncio.Event()) == 1 and await book.due() == {}
    await store.close()


def test_a_stop_ends_a_compaction_between_devices_and_a_killed_ones_folder_is_cleaned(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    from app.errors import Interrupted

    settings = make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}", rotate_grace_s=0.0)
    fill_day(settings)
    archive = open_archive(settings)
    asked: list[int] = []

    def stop_after_one_device() -> bool:
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(Interrupted):
        Compactor(settings, archive).compact(DAY, should_stop=stop_after_one_device)
    assert current(archive, DAY) is None, "nothing is published by a stopped compaction"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = settings.data_dir / "tmp" / f"compact-{DAY}-{dead.pid}-x1y2z3"
    (left / "demand").mkdir(parents=True)
    (left / "demand" / "part.parquet").write_bytes(b"half a file")
    assert Compactor(settings, archive).compact(DAY).version is not None
    assert not left.exists(), "a killed compaction's work folder stays forever"


def test_a_compacted_file_that_reads_back_otherwise_is_never_published(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    """The read-back check fails when the archive gives back other rows than were made (a storage
    fault, a bug in the writer): nothing is published, the hourly objects stay the truth, and the
    error names the day and both counts."""
    import io

    from app.archive.files import FileArchive
    from app.errors import ArchiveError

    class LosesARow(FileArchive):
        """A store whose Parquet comes back one row short."""

        def open_read(self, key: str) -> BinaryIO:
            f = super().open_read(key)
            if not key.endswith(".parquet") or "kind=demand" not in key:
                return f
            with f:
                table = pq.read_table(f)
            out = io.BytesIO()
            pq.write_table(table.slice(0, table.num_rows - 1), out)
            return io.BytesIO(out.getvalue())

    root = tmp_path / "archive"
    settings = make_settings(redis_url, archive_url=f"file://{root}", rotate_grace_s=0.0)
    fill_day(settings)
    with pytest.raises(ArchiveError, match=f"compacted demand files of {DAY} read back as") as caught:
        Compactor(settings, LosesARow(root)).compact(DAY)
    assert caught.value.kind == "integrity" and "nothing was replaced" in str(caught.value)
    assert current(open_archive(settings), DAY) is None, "a version that failed its check was published"


@pytest.mark.parametrize("column", ["time", "DigitsRight"])
def test_a_column_the_writer_converts_wrongly_is_never_published(
    make_settings: Callable[..., Settings],
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    column: str,
) -> None:
    """The read-back check compares every column with what the source lines say it must hold, so a
    fault in the writer's conversion (a time a millisecond off, a column left null) is caught
    before anything is published, not copied faithfully into the digest."""
    from app.errors import ArchiveError
    from app.research import schema

    real = schema.Columns.add

    def faulty(self: schema.Columns, record: dict[str, Any]) -> None:
        if self.kind != "demand":
            return real(self, record)
        wrong = dict(record)
        if column == "time":
            wrong["device_time"] = record["device_time"] + 0.001
        else:
            wrong.pop("DigitsRight", None)
        real(self, wrong)

    monkeypatch.setattr(schema.Columns, "add", faulty)
    settings = make_settings(redis_url, archive_url=f"file://{tmp_path / 'archive'}", rotate_grace_s=0.0)
    fill_day(settings)
    with pytest.raises(ArchiveError, match=f"compacted demand files of {DAY} read back as") as caught:
        Compactor(settings, open_archive(settings)).compact(DAY)
    assert caught.value.kind == "integrity"
    assert current(open_archive(settings), DAY) is None


def test_an_hourly_object_that_is_not_gzip_is_named_and_nothing_is_published(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    """An object damaged in the archive (or put there by another tool) stops the day with one
    sentence naming it; the day is compacted once the object is whole again."""
    from app.errors import ArchiveError

    root = tmp_path / "archive"
    settings = make_settings(redis_url, archive_url=f"file://{root}", rotate_grace_s=0.0)
    fill_day(settings)
    archive = open_archive(settings)
    y, m, d = DAY.split("-")
    victim = archive.list(f"rainforest-logs/{DEVICES[1]}/{y}/{m}/{d}/")[5].key
    whole = (root / victim).read_bytes()
    (root / victim).write_bytes(b"not gzip: a stray text file\n" * 10)
    with pytest.raises(ArchiveError, match=f"^{victim} is not a readable gzip object: ") as caught:
        Compactor(settings, archive).compact(DAY)
    assert caught.value.kind == "integrity" and "\n" not in str(caught.value)
    assert current(archive, DAY) is None
    (root / victim).write_bytes(whole)
    assert Compactor(settings, archive).compact(DAY).rows["demand"] == 3 * 24 * 300
