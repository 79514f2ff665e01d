"""Parquet carts read through the columnar reader (`app.carts.columnar`) against reading line by
line (`tables.build_device`, what every Parquet cart did before): the same files, rows, row groups
and counts for every window, naming and time zone, on the corpus of every line kind and on seeded
random ones; lines the columnar reader does not take are read line by line, with the same result."""

from __future__ import annotations

import random
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow.parquet as pq
import pytest

from app.carts import columnar
from app.carts.tables import DeviceTables, build_device, staged_hours
from app.research import frames
from tests.test_frames import H0, corpus, demand, random_objects

ZONES = ("UTC", "Europe/Berlin", "America/St_Johns", "Australia/Lord_Howe")
SPRING = 1_774_746_000  # 2026-03-29 01:00 UTC: Berlin's clocks go from 02:00 to 03:00
ST_JOHNS = 1_772_947_800  # 2026-03-08 05:30 UTC: St John's goes from -03:30 to -02:30
LORD_HOWE = 1_791_041_400  # 2026-10-03 15:30 UTC: Lord Howe Island goes from +10:30 to +11:00


def staged(objects: list[tuple[int, bytes]], folder: Path) -> dict[int, list[Path]]:
    """Objects as a cart stages them: an hour's parts as files, in order."""
    hours: dict[int, list[Path]] = {}
    folder.mkdir(parents=True)
    for n, (hour, data) in enumerate(objects):
        path = folder / f"{hour}-{n}.jl"
        path.write_bytes(data)
        hours.setdefault(hour, []).append(path)
    return hours


def both(
    objects: list[tuple[int, bytes]],
    tmp: Path,
    span: tuple[float, float],
    label: tuple[str, str],
    zone: str,
    unusual: bool = False,
) -> tuple[DeviceTables, DeviceTables]:
    """The device's cart by columns and line by line. The columnar reader must take the lines
    unless they are `unusual` (then it must hand them to the line-by-line reader)."""
    hours = staged(objects, tmp / "staged")
    by_lines = build_device("parquet", "0c0001", staged_hours(hours), *span, tmp / "lines", label, zone)
    asked: list[bool] = []

    def fallback() -> DeviceTables:
        asked.append(True)
        return build_device("parquet", "0c0001", staged_hours(hours), *span, tmp / "columns", label, zone)

    made = columnar.build_parquet_device(
        "0c0001", hours, [], set(), span, tmp / "columns", label, zone, fallback
    )
    assert asked == ([True] if unusual else []), "read line by line" if asked else "not read line by line"
    return made, by_lines


def assert_same_cart(got: DeviceTables, want: DeviceTables) -> None:
    assert (got.hours, got.rows, got.duplicates, got.late, got.partial) == (
        want.hours, want.rows, want.duplicates, want.late, want.partial,
    )  # fmt: skip
    assert [f.name for f in got.files] == [f.name for f in want.files]
    for mine, theirs in zip(got.files, want.files, strict=True):
        a, b = pq.ParquetFile(mine.path), pq.ParquetFile(theirs.path)
        assert a.schema_arrow == b.schema_arrow, mine.name
        assert a.metadata.num_row_groups == b.metadata.num_row_groups, mine.name
        assert a.read().equals(b.read()), (mine.name, a.read().to_pylist()[:3], b.read().to_pylist()[:3])


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("label", [("cloud_id", ""), ("participant_id", "p-0007")])
def test_the_corpus_makes_the_same_cart_both_ways(
    tmp_path: Path, label: tuple[str, str], zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    got, want = both(corpus(), tmp_path, (H0 + 45, H0 + 4 * 3600 + 10), label, zone)
    assert_same_cart(got, want)
    monkeypatch.setattr(columnar, "PIECE_BYTES", 1)  # a piece an hour: what each holds back goes on
    got, _ = both(corpus(), tmp_path / "pieces", (H0 + 45, H0 + 4 * 3600 + 10), label, zone)
    assert_same_cart(got, want)
    # the corpus holds what the comparison needs: every kind, repeats, cut lines, late rows, waits
    assert want.rows == {"demand": 30, "summation": 2, "price": 2} and want.duplicates == 7
    assert want.partial == 2 and want.late >= 1 and any(h.longest_gap_s for h in want.hours)
    names = {f.name for f in want.files}
    assert names == {f"{label[1] or '0c0001'}/{k}.parquet" for k in ("demand", "summation", "price")}


@pytest.mark.parametrize("seed", range(60))
def test_random_hours_make_the_same_cart_both_ways(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read whole, an hour at a time, or in pieces of a few hours (each handing on what it holds)."""
    rng = random.Random(seed)
    monkeypatch.setattr(columnar, "PIECE_BYTES", rng.choice([1, 700, 2000, 10**9]))
    span = rng.choice([(H0 - 7200, H0 + 10 * 3600), (H0 + 100, H0 + 3 * 3600 + 0.5), (H0 + 50, H0 + 50)])
    label = rng.choice([("cloud_id", ""), ("participant_id", "p-1")])
    got, want = both(random_objects(seed), tmp_path, span, label, rng.choice(ZONES))
    assert_same_cart(got, want)


def test_a_day_over_a_clock_change_makes_the_same_cart_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings every 7.3 s through the hour Berlin's clocks jump, read in four pieces: local
    times as Python writes them."""
    monkeypatch.setattr(columnar, "PIECE_BYTES", 2**20)
    day = SPRING // 86400 * 86400
    objects = []
    for h in range(24):
        start = day + h * 3600
        objects.append(
            (start, b"".join(demand(int(start + 7.3 * i), start + 7.3 * i + 0.4) for i in range(493)))
        )
    got, want = both(objects, tmp_path, (day, day + 86400), ("cloud_id", ""), "Europe/Berlin")
    assert_same_cart(got, want)
    local = pq.read_table(got.files[0].path).column("local_time").to_pylist()
    assert {t[-6:] for t in local} == {"+01:00", "+02:00"} and want.rows["demand"] > 11_000


def test_lines_the_columnar_reader_does_not_take_are_read_line_by_line(tmp_path: Path) -> None:
    objects = [
        (
            H0,
            demand(H0, H0 + 1)
            + b'{"device_time":%d,"demand_kw":NaN}\n' % (H0 + 6)
            + demand(H0 + 12, H0 + 13),
        )
    ]
    got, want = both(objects, tmp_path, (H0, H0 + 3600), ("cloud_id", ""), "UTC", unusual=True)
    assert_same_cart(got, want)
    assert got.rows["demand"] == 2 and got.partial == 1  # the NaN line is no reading


@pytest.mark.parametrize("zone", ZONES)
def test_local_times_are_written_as_python_writes_them(zone: str) -> None:
    rng = np.random.default_rng(7)
    # clock changes in Berlin (on a UTC hour), St John's and Lord Howe (half past one); none
    around = np.array([SPRING, SPRING + 210 * 86400, ST_JOHNS, LORD_HOWE, 1_800_000_000], dtype=np.float64)
    times = np.concatenate([
        (around[:, None] + rng.uniform(-7200, 7200, (len(around), 500))).ravel(),
        around + 0.9999995, around - 0.0000004, around + 0.5, np.array([0.0, 1.0, 86399.999]),
    ])  # fmt: skip
    got = columnar.local_times(times, ZoneInfo(zone)).to_pylist()
    want = [
        datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat(timespec="seconds") if t else None for t in times
    ]
    assert got == want


def test_compacted_days_and_hourly_files_make_the_same_cart_both_ways(tmp_path: Path) -> None:
    """Three days of a device: the first and last compacted (their repeats dropped by compaction,
    counted from its manifest), the middle one as hourly files; readings timed before their hour
    carried over midnight; a late part of an hour in each, a reading a day late in two, history
    refilled a day later. By columns as line by line."""
    import asyncio
    import gzip

    from app.archive.factory import open_archive
    from app.archive.layout import parse_key
    from app.carts.build import _device_hours
    from app.hourly import HourlyWriter
    from app.hours import Hour
    from app.research.compact import Compactor
    from app.research.days import DayReader, current
    from app.rotate.runner import Rotator
    from app.settings import Settings

    def write_hour(at: int, lines: int, start: int = 0) -> None:
        """Lines as the pinger writes them: a reading every 6 s, each timed 1.75 s before it was
        polled (the first of an hour is timed in the hour before)."""
        writer = HourlyWriter(settings.logs_dir, settings.file_prefix, 16)
        for i in range(start, start + lines):
            polled = at + i * 6 % 3600 + 0.25
            writer.append("0c0001", polled, demand(int(polled - 1.75), polled, 400 + i % 7))
        writer.close()

    env = {"DATA_DIR": str(tmp_path / "data"), "ARCHIVE_URL": f"file://{tmp_path / 'archive'}",
           "ROTATE_GRACE_S": "0", "REDIS_URL": "redis://127.0.0.1:1/0"}  # fmt: skip
    settings = Settings.from_env(env, dotenv_path=None)
    first = (int(time.time()) // 86400 - 5) * 86400
    days = [time.strftime("%Y-%m-%d", time.gmtime(first + d * 86400)) for d in range(3)]
    for d in range(3):
        for h in range(24):
            write_hour(first + d * 86400 + h * 3600, lines=200)
    archive = open_archive(settings)
    asyncio.run(Rotator(settings, archive, None).pass_once())
    for d in range(3):  # a late part of hour 5 of each day: 100 repeats, 50 new
        write_hour(first + d * 86400 + 5 * 3600, lines=150, start=100)
    writer = HourlyWriter(settings.logs_dir, settings.file_prefix, 16)
    for d in (1, 2):  # a reading of the day before that reached us a day late: late where it lands
        polled = first + d * 86400 + 3 * 3600 + 10.5
        writer.append("0c0001", polled, demand(first + (d - 1) * 86400 + 10 * 3600 + 3, polled))
    for d in (0, 1):  # refilled history, fetched the day after: filed in the hour of its own time
        at = first + d * 86400 + 8 * 3600 + 9
        writer.append("0c0001", at, demand(at, at + 86400 - 3600, source="history"))
    writer.close()
    asyncio.run(Rotator(settings, archive, None).pass_once())
    for day in (days[0], days[2]):
        assert Compactor(settings, archive).compact(day).duplicates == 100
    staged: dict[int, list[Path]] = {}
    y, m, d = days[1].split("-")
    for n, obj in enumerate(archive.list(f"rainforest-logs/0c0001/{y}/{m}/{d}/")):
        with archive.open_read(obj.key) as f:
            path = tmp_path / "staged" / f"{n}.jl"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(gzip.decompress(f.read()))
        parsed = parse_key(obj.key)
        assert parsed is not None
        staged.setdefault(Hour.parse(parsed[0].hour).start, []).append(path)
    readers = []
    for day in (days[0], days[2]):
        manifest = current(archive, day)
        assert manifest is not None
        readers.append(DayReader(archive, manifest))
    wanted = {first + h * 3600 for h in range(3 * 24) if h < 60}  # the last twelve hours not asked for
    span, label = (first + 3 * 3600 + 0.5, first + 70 * 3600), ("participant_id", "p-3")
    try:
        lines = _device_hours(staged, readers, "0c0001", wanted)
        want = build_device("parquet", "0c0001", lines, *span, tmp_path / "lines", label, "Europe/Berlin")
        refused = lambda: pytest.fail("read line by line")  # noqa: E731
        got = columnar.build_parquet_device(
            "0c0001", staged, readers, wanted, span, tmp_path / "columns", label, "Europe/Berlin", refused
        )
    finally:
        for reader in readers:
            reader.close()
    assert_same_cart(got, want)
    assert want.duplicates == 300 and len(want.hours) == 60 and want.late == 2


def test_a_compacted_reading_without_a_time_is_read_line_by_line(tmp_path: Path) -> None:
    """Compaction keeps a reading sent without a time (its `time` null); the columnar reader
    names readings by their time, so such a device's cart is made line by line, with it."""
    import asyncio

    from app.archive.factory import open_archive
    from app.carts.build import _device_hours
    from app.hourly import HourlyWriter
    from app.research.compact import Compactor
    from app.research.days import DayReader, compacted_columns, current
    from app.rotate.runner import Rotator
    from app.settings import Settings

    env = {"DATA_DIR": str(tmp_path / "data"), "ARCHIVE_URL": f"file://{tmp_path / 'archive'}",
           "ROTATE_GRACE_S": "0", "REDIS_URL": "redis://127.0.0.1:1/0"}  # fmt: skip
    settings = Settings.from_env(env, dotenv_path=None)
    day = (int(time.time()) // 86400 - 3) * 86400
    writer = HourlyWriter(settings.logs_dir, settings.file_prefix, 16)
    for i in range(20):
        writer.append("0c0001", day + 60 * i + 0.5, demand(day + 60 * i, day + 60 * i + 0.5))
    untimed = b'{"cloud_id":"0c0001","polled_at":%.1f,"kind":"demand","demand_kw":1.25}\n' % (day + 90.5)
    writer.append("0c0001", day + 90.5, untimed)
    writer.close()
    archive = open_archive(settings)
    asyncio.run(Rotator(settings, archive, None).pass_once())
    name = time.strftime("%Y-%m-%d", time.gmtime(day))
    assert Compactor(settings, archive).compact(name).rows["demand"] == 21
    manifest = current(archive, name)
    assert manifest is not None
    reader, wanted = DayReader(archive, manifest), {day + h * 3600 for h in range(24)}
    asked: list[bool] = []

    def by_lines() -> DeviceTables:
        asked.append(True)
        hours = _device_hours({}, [reader], "0c0001", wanted)
        return build_device(
            "parquet", "0c0001", hours, day, day + 86400, tmp_path / "b", ("cloud_id", ""), "UTC"
        )

    try:
        with pytest.raises(frames.Unusual, match="without a device time"):
            compacted_columns(reader, "0c0001", wanted)
        got = columnar.build_parquet_device(
            "0c0001",
            {},
            [reader],
            wanted,
            (day, day + 86400),
            tmp_path / "a",
            ("cloud_id", ""),
            "UTC",
            by_lines,
        )
    finally:
        reader.close()
    assert asked == [True] and got.rows["demand"] == 21, "made line by line, the untimed reading kept"
