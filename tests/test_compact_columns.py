"""Compaction through the columnar reader makes, byte for byte, the files, row groups and manifest
that reading every device line by line makes (how compaction worked before); a device with lines
the columnar reader does not take is read line by line in the same run; and a conversion fault in
either reader is caught by the sample check before anything is published."""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.archive.factory import open_archive
from app.archive.layout import DeviceHour
from app.errors import ArchiveError
from app.hours import Hour
from app.research import compact, frames
from app.research.compact import Compactor
from app.research.days import current
from app.settings import Settings
from tests.test_frames import H0, corpus

DAY = Hour.at(H0).day.key
DEVICES = ("0c0001", "0c0002", "0c0003", "0c0004")


def put_day(root: Path) -> None:
    """The corpus's hours for three devices (each its own values), and one whose lines carry a
    number where a text is due (read line by line), as hourly objects in a folder archive."""
    for n, cid in enumerate(DEVICES):
        parts: dict[int, int] = {}
        for hour, data in corpus():
            data = data.replace(b'"0c0001"', f'"{cid}"'.encode()).replace(b":500,", f":{500 + n},".encode())
            if cid == "0c0004":
                data = data.replace(b'"SuppressLeadingZero":"Y"', b'"SuppressLeadingZero":1')
            parts[hour] = parts.get(hour, 0) + 1
            key = DeviceHour(Hour.at(hour).key, cid, "rf").key(parts[hour])
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(gzip.compress(data))


def made(root: Path) -> dict[str, Any]:
    """What a compaction published: the manifest (but its times) and every file's row groups."""
    manifest = current(open_archive(Settings(archive_url=f"file://{root}")), DAY)
    assert manifest is not None
    files = {}
    for entry in manifest.files:
        pf = pq.ParquetFile(root / entry["key"])
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        files[entry["key"]] = (groups, hashlib.sha256((root / entry["key"]).read_bytes()).hexdigest())
    fields = {k: v for k, v in manifest.__dict__.items() if k not in ("created_at", "seconds")}
    return {"manifest": fields, "files": files}


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups of 16 rows and files rolled at 8 kB, so the day is many of each."""
    monkeypatch.setattr(compact, "ROW_GROUP_ROWS", 16)
    monkeypatch.setattr(compact, "FILE_BYTES", 8192)


def test_compaction_by_columns_makes_what_reading_line_by_line_made(
    make_settings: Callable[..., Settings],
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    small_files: None,
) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    put_day(before)
    shutil.copytree(before, after)

    def unusual(objects: list[tuple[int, bytes]]) -> frames.Parsed:
        raise frames.Unusual("every device read line by line")

    with monkeypatch.context() as m:
        m.setattr(frames, "parse", unusual)
        settings = make_settings(redis_url, archive_url=f"file://{before}", data_dir=tmp_path / "d1")
        Compactor(settings, open_archive(settings)).compact(DAY)
    caplog.set_level(logging.INFO, logger="app.research.compact")
    settings = make_settings(redis_url, archive_url=f"file://{after}", data_dir=tmp_path / "d2")
    done = Compactor(settings, open_archive(settings)).compact(DAY)
    by_lines = [r for r in caplog.records if r.getMessage() == "read a device's day line by line"]
    assert [r.cloud_id for r in by_lines] == ["0c0004"], "the usual lines were not read by columns"  # type: ignore[attr-defined]
    assert "Arrow's reader refused" in by_lines[0].reason  # type: ignore[attr-defined]
    old, new = made(before), made(after)
    assert new == old
    assert done.rows == {"demand": 4 * 45, "summation": 8, "price": 8} and done.duplicates == 4 * 7
    groups = [groups for groups, _ in new["files"].values()]
    assert len(groups) > 1 and all(set(g[:-1]) <= {16} for g in groups) and max(map(len, groups)) > 3
    assert new["manifest"]["partial"]["0c0001"] == {str(H0): 1, str(H0 + 4 * 3600): 1}


@pytest.mark.parametrize("fault", ["columns", "lines"])
def test_a_conversion_fault_in_either_reader_is_caught_before_publishing(
    make_settings: Callable[..., Settings],
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    """The columnar reader's times a millisecond late, or `Columns` (the line-by-line reader's
    typing) dropping a value: the sampled device's rows, made by the contract restated, differ."""
    root = tmp_path / "archive"
    put_day(root)
    if fault == "columns":
        real = frames._columns

        def late(lines: pa.Table, kind: str) -> pa.Table:
            table = real(lines, kind)
            millis = pa.compute.add(table.column("time").cast(pa.int64()), 1)
            shifted = millis.cast(table.schema.field("time").type)
            return table.set_column(table.schema.get_field_index("time"), "time", shifted)

        monkeypatch.setattr(frames, "_columns", late)
    else:
        from app.research import schema

        add = schema.Columns.add

        def drops(self: schema.Columns, record: dict[str, Any]) -> None:
            add(self, {k: v for k, v in record.items() if k != "MeterMacId"})

        monkeypatch.setattr(schema.Columns, "add", drops)
        monkeypatch.setattr(compact, "SAMPLE_EVERY", 1)  # 0c0004, read line by line, is sampled
    settings = make_settings(redis_url, archive_url=f"file://{root}")
    message = f"compacted demand files of {DAY} read back as 45 rows of"
    with pytest.raises(ArchiveError, match=message) as caught:
        Compactor(settings, open_archive(settings)).compact(DAY)
    assert caught.value.kind == "integrity" and "read line by line; nothing was replaced" in str(caught.value)
    assert current(open_archive(settings), DAY) is None


def test_the_row_digest_does_not_depend_on_where_rows_are_cut() -> None:
    """Columns without nulls are digested straight from their buffers, columns with some through
    Arrow's null handling; either way a table digested whole, or from an offset in pieces (as row
    groups and releases cut it), gives one digest, and another value gives another."""
    table = frames.merge(frames.parse(corpus())).tables["demand"]
    assert table.column("DeviceMacId").null_count and not table.column("cloud_id").null_count
    whole = compact.RowDigest("demand")
    whole.table(table)
    cut = compact.RowDigest("demand")
    for a, b in ((0, 3), (3, 10), (10, table.num_rows)):
        cut.table(table.slice(a, b - a))
    assert cut.rows == whole.rows and cut.hexdigest() == whole.hexdigest()
    other = compact.RowDigest("demand")
    other.table(table.set_column(0, "cloud_id", pa.array(["0c0009"] * table.num_rows)))
    assert other.hexdigest() != whole.hexdigest()
