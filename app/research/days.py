"""The compacted archive's layout, its day manifests, and reading a device's rows back from it.

    rainforest-parquet/kind=<kind>/date=YYYY-MM-DD/v0001-000.parquet      the day's rows of a kind
    rainforest-parquet/_manifests/date=YYYY-MM-DD/v0001.json              what version 1 holds

Hive-style partitions (`kind=`, `date=`) so DuckDB, Spark, Trino and Athena read them in place;
folders and files starting with `_` are ignored by those readers. `date` is the UTC day of the
hourly files the rows came from (the day they reached us), so a reading timed just before midnight
can sit in the next day's partition: filter on `time`. Rows are sorted by cloud_id, then time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.archive.backend import Archive
from app.archive.layout import parse_key
from app.errors import ArchiveError
from app.hours import Hour, hour_starts
from app.research import frames
from app.research.schema import KINDS

ROOT = "rainforest-parquet"
_VERSION_RE = re.compile(r"^v(\d{4})")


def file_key(kind: str, day: str, version: int, n: int) -> str:
    return f"{ROOT}/kind={kind}/date={day}/v{version:04d}-{n:03d}.parquet"


def manifest_key(day: str, version: int) -> str:
    return f"{ROOT}/_manifests/date={day}/v{version:04d}.json"


@dataclass
class DayManifest:
    """What one version of a compacted day holds, and where it came from."""

    day: str
    version: int
    sources_sha256: str  # of every hourly object the day was made from (key and size)
    sources: dict[str, list[list[Any]]]  # cloud_id → [[key, size], ...]
    files: list[dict[str, Any]]  # {key, kind, rows, bytes, sha256}
    rows: dict[str, int]  # by kind
    digests: dict[str, str]  # by kind: of every row's cloud_id, times and value, as verified
    duplicates: dict[str, dict[str, int]] = field(default_factory=dict)  # cloud_id → hour → dropped
    partial: dict[str, dict[str, int]] = field(default_factory=dict)  # cloud_id → hour → unreadable lines
    created_at: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__) + b"\n"  # one line: Athena's JSON SerDe reads it so

    @classmethod
    def from_json(cls, data: bytes) -> DayManifest:
        return cls(**orjson.loads(data))


def versions(archive: Archive, day: str) -> list[int]:
    """Every version number used for a day, by a manifest or by a file (a crashed attempt's)."""
    found = set()
    for prefix in (f"{ROOT}/_manifests/date={day}/", *(f"{ROOT}/kind={k}/date={day}/" for k in KINDS)):
        for name in archive.children(prefix):
            match = _VERSION_RE.match(name)
            if match:
                found.add(int(match.group(1)))
    return sorted(found)


def current(archive: Archive, day: str) -> DayManifest | None:
    """The newest confirmed version of a compacted day (a manifest is written once verified)."""
    names = [n for n in archive.children(f"{ROOT}/_manifests/date={day}/") if _VERSION_RE.match(n)]
    if not names:
        return None
    key = f"{ROOT}/_manifests/date={day}/{max(names)}"
    with archive.open_read(key) as f:
        try:
            return DayManifest.from_json(f.read())
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ArchiveError(f"{key} is not a readable day manifest: {exc}", kind="integrity") from exc


class DayReader:
    """A device's rows of a compacted day, reading only the row groups that can hold it."""

    def __init__(self, archive: Archive, manifest: DayManifest) -> None:
        self.archive, self.manifest = archive, manifest
        self._files: dict[str, pq.ParquetFile] = {}
        self._handles: list[BinaryIO] = []

    def rows(self, cloud_id: str) -> list[dict[str, Any]]:
        """Every row of the device, of every kind, as lines of the hourly files would hold them."""
        return [as_line(row, kind) for kind, table in self.tables(cloud_id) for row in table.to_pylist()]

    def tables(self, cloud_id: str) -> list[tuple[str, pa.Table]]:
        """The device's rows of each of the day's files that holds some: (kind, rows), file by file."""
        out: list[tuple[str, pa.Table]] = []
        for entry in self.manifest.files:
            pf = self._open(entry["key"])
            groups = [
                i for i in range(pf.metadata.num_row_groups) if may_hold(pf.metadata.row_group(i), cloud_id)
            ]
            if groups:
                table = pf.read_row_groups(groups)
                out.append(
                    (entry["kind"], table.filter(pc.equal(table.column("cloud_id"), pa.scalar(cloud_id))))
                )
        return out

    def close(self) -> None:
        for pf in self._files.values():
            pf.close()
        for handle in self._handles:
            handle.close()
        self._files.clear()
        self._handles.clear()

    def _open(self, key: str) -> pq.ParquetFile:
        pf = self._files.get(key)
        if pf is None:
            handle = self.archive.open_read(key)
            self._handles.append(handle)
            pf = self._files[key] = pq.ParquetFile(handle)
        return pf


def may_hold(group: pq.RowGroupMetaData, cloud_id: str) -> bool:
    stats = group.column(0).statistics  # cloud_id is the first column
    if stats is None or not stats.has_min_max or stats.min is None or stats.max is None:
        return True
    return bool(stats.min <= cloud_id <= stats.max)


def as_line(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """A compacted row back in the hourly files' form (Unix-second times, `kind`)."""
    line = {k: v for k, v in row.items() if v is not None and k not in ("time", "polled_at")}
    at = row["time"].timestamp() if row.get("time") is not None else None  # None: sent without a time
    line["device_time"] = None if at is None else int(at) if at.is_integer() else at  # whole seconds
    line["polled_at"] = row["polled_at"].timestamp() if row.get("polled_at") is not None else None
    line["kind"] = kind
    return line


def compacted_device_days(
    archive: Archive, archived: dict[tuple[str, str], list[tuple[str, int]]], local: set[tuple[str, str]]
) -> dict[tuple[str, str], DayManifest]:
    """The (cloud_id, day)s a cart can read from compacted Parquet instead of hourly objects: the
    day's current version was made from exactly the hourly objects there now, and this host has no
    unshipped file of that device-day. `archived` is what the cart's plan listed per device-day."""
    manifests: dict[str, DayManifest | None] = {}
    found: dict[tuple[str, str], DayManifest] = {}
    for (cid, day), objects in archived.items():
        if (cid, day) in local:
            continue
        if day not in manifests:
            manifests[day] = current(archive, day)
        manifest = manifests[day]
        if manifest is None:
            continue
        hours = {_hour_of(key) for key, _ in objects}
        held = {(key, size) for key, size in manifest.sources.get(cid, []) if _hour_of(key) in hours}
        if held == set(objects):  # every object of those hours, and nothing since
            found[(cid, day)] = manifest
    return found


def _hour_of(key: str) -> str:
    parsed = parse_key(key)
    return parsed[0].hour if parsed is not None else ""


def compacted_hours(reader: DayReader, cloud_id: str) -> list[tuple[int, list[dict[str, Any]], int, int]]:
    """A device's compacted day as hours of lines (hour, lines, unreadable, repeats dropped), as
    the hourly files held them."""
    by_hour: dict[int, list[dict[str, Any]]] = {}
    for line in reader.rows(cloud_id):
        by_hour.setdefault(file_hour(line), []).append(line)
    dropped = reader.manifest.duplicates.get(cloud_id, {})
    partial = reader.manifest.partial.get(cloud_id, {})
    hours = set(by_hour) | {int(h) for h in dropped} | {int(h) for h in partial}
    return [(h, by_hour.get(h, []), partial.get(str(h), 0), dropped.get(str(h), 0)) for h in sorted(hours)]


def compacted_columns(
    reader: DayReader, cloud_id: str, wanted: set[int]
) -> tuple[frames.Parsed, dict[int, int]]:
    """`compacted_hours` for the columnar reader: the device's rows in the lines' form
    (`frames.LINE_SCHEMA`, times in seconds as `as_line` gives them), grouped in the same order by
    the hour whose file each was in (`file_hour`), of the hours in `wanted`; and the repeats
    compaction dropped, by hour. `frames.Unusual` for a row without a time."""
    parts = [_line_columns(table, kind) for kind, table in reader.tables(cloud_id)]
    table = pa.concat_tables(parts) if parts else frames.LINE_SCHEMA.empty_table()
    if table.column("device_time").null_count:
        raise frames.Unusual("a compacted reading without a device time")
    device = table.column("device_time").to_numpy()
    polled = np.asarray(table.column("polled_at").to_numpy(zero_copy_only=False), dtype=np.float64)
    source = table.column("source").combine_chunks()
    history = np.asarray(pc.equal(source.fill_null(""), pa.scalar("history")).to_numpy(zero_copy_only=False))
    at = np.where(history | np.isnan(polled), device, polled)
    hour = hour_starts(at)
    dropped = {int(h): n for h, n in reader.manifest.duplicates.get(cloud_id, {}).items() if int(h) in wanted}
    partial = {int(h): n for h, n in reader.manifest.partial.get(cloud_id, {}).items() if int(h) in wanted}
    hours = sorted((set(hour.tolist()) & wanted) | set(dropped) | set(partial))
    order = np.argsort(hour, kind="stable")
    order = order[np.isin(hour[order], hours)]
    rows = [
        int(n)
        for n in np.searchsorted(hour[order], hours, side="right") - np.searchsorted(hour[order], hours)
    ]
    parsed = frames.Parsed(
        table.take(order), np.array(hours, dtype=np.int64), np.array(rows, dtype=np.int64), partial
    )
    return parsed, dropped


def _line_columns(table: pa.Table, kind: str) -> pa.Table:
    """A kind's compacted rows as lines' columns: times back to Unix seconds, the kind named."""
    arrays: list[Any] = []
    for f in frames.LINE_SCHEMA:
        if f.name in ("device_time", "polled_at"):
            micros = pc.multiply(
                table.column("time" if f.name == "device_time" else f.name).cast(pa.int64()), 1000
            )
            arrays.append(pc.divide(micros.cast(pa.float64()), 1e6))  # as datetime.timestamp() gives it
        elif f.name == "kind":
            arrays.append(pa.array([kind] * table.num_rows, pa.string()))
        elif f.name in table.column_names:
            arrays.append(table.column(f.name))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(arrays, schema=frames.LINE_SCHEMA)


def file_hour(line: dict[str, Any]) -> int:
    """The hour whose file a line was in: refilled history lines are filed by their own time, the
    rest by when they reached us."""
    at = (
        line["device_time"]
        if line.get("source") == "history" or line.get("polled_at") is None
        else line["polled_at"]
    )
    return Hour.at(at).start
