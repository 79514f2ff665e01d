"""A device's staged hours as the cart's format wants them, with what each hour held.

- `csv`: `<cloud_id>.csv`, its demand readings;
- `parquet`: `<cloud_id>/demand.parquet`, `summation.parquet` and `price.parquet` (when the device
  has such lines), typed columns (`app.research.schema`), sorted by time;
- `jl`: the staged files themselves go in the cart; they are read here only to be counted.

Every format reads the hours through `app.research.merge`, so parts are merged, repeats dropped
and rows ordered the same way, and the counts for COMPLETENESS.csv come from the same pass.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from app import lines
from app.archive.backend import file_sha256
from app.research.merge import DeviceLines, HourCount, read_identities, read_parts
from app.research.parquet import KindWriter
from app.research.schema import KINDS, cart_schema

UTC_ZONE = ZoneInfo("UTC")
CSV_HEADER = (
    "time_utc", "demand_kw", "cloud_id", "device_time", "polled_at",
    "TimeStamp", "Demand", "Multiplier", "Divisor", "local_time",
)  # fmt: skip


@dataclass(frozen=True)
class Made:
    name: str  # path inside the cart
    path: Path
    size: int
    sha256: str


@dataclass
class DeviceTables:
    """What one device contributed: its files, its hours' counts and its rows by kind."""

    cloud_id: str
    files: list[Made] = field(default_factory=list)
    hours: list[HourCount] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    late: int = 0
    partial: int = 0

    def counts(self) -> dict[str, int]:
        """The device's entry in MANIFEST.json (what README.txt says each count is)."""
        return {
            **{f"{kind}_rows": self.rows.get(kind, 0) for kind in KINDS},
            "hours_with_data": sum(1 for h in self.hours if h.lines),
            "duplicates_dropped": self.duplicates,
            "late_rows": self.late,
            "partial_lines": self.partial,
        }


# One device-hour's lines: (hour start, records, unreadable lines, repeats already dropped)
HourLines = tuple[int, list[dict[str, Any]], int, int]


def staged_hours(hours: dict[int, list[Path]], count_only: bool = False) -> Iterator[HourLines]:
    """Hours read from staged `.jl` parts, in hour order, one hour in memory at a time (for a jl
    cart, which only counts them: each line as its kind and time)."""
    read = read_identities if count_only else read_parts
    for hour in sorted(hours):
        records, partial = read(hours[hour])
        yield hour, records, partial, 0


def _count(rows: dict[str, int], released: dict[str, list[dict[str, Any]]]) -> None:
    for kind, records in released.items():
        rows[kind] = rows.get(kind, 0) + len(records)


def build_device(
    fmt: str,
    cloud_id: str,
    hours: Iterable[HourLines],
    start: float,
    end: float,
    out_dir: Path,
    label: tuple[str, str] = ("cloud_id", ""),
    zone: str = "UTC",
) -> DeviceTables:
    """Read a device's hours (in hour order) once, writing the format's files into `out_dir` and
    counting each hour. `label` is how the files name the household: its column and value (a
    pseudonymous cart's participant_id; by default its cloud_id); `zone` its IANA time zone, for
    the csv's local_time."""
    result = DeviceTables(cloud_id)
    lines = DeviceLines(start, end, kinds=("demand",) if fmt == "csv" else ())
    column, name = label[0], label[1] or cloud_id
    sink: _Sink | None = None
    if fmt == "csv":
        sink = _CsvSink(name, out_dir, column, ZoneInfo(zone))
    elif fmt == "parquet":
        sink = _ParquetSink(name, out_dir, column, ZoneInfo(zone))
    try:
        for hour, records, partial, dropped in hours:
            count, released = lines.add_hour(hour, records, partial)
            count.duplicates += dropped  # repeats the compaction already dropped
            result.duplicates += dropped
            result.hours.append(count)
            result.partial += partial
            if sink is not None:
                sink.add(released)
            else:  # a jl cart's files are the hourly files themselves: its rows are counted only
                _count(result.rows, released)
        if sink is not None:
            sink.add(lines.finish())
            result.rows, result.files = sink.close()
        else:
            _count(result.rows, lines.finish())
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    result.duplicates += lines.duplicates
    result.late = lines.late
    return result


class _Sink(Protocol):
    def add(self, released: dict[str, list[dict[str, Any]]]) -> None: ...
    def close(self) -> tuple[dict[str, int], list[Made]]: ...
    def abort(self) -> None: ...


def file_made(name: str, path: Path) -> Made:
    return Made(name, path, path.stat().st_size, file_sha256(path))


class _CsvSink:
    def __init__(
        self, cloud_id: str, out_dir: Path, column: str = "cloud_id", zone: ZoneInfo = UTC_ZONE
    ) -> None:
        self.zone = zone
        self.name = f"{cloud_id}.csv"
        self.dest = out_dir / self.name
        self.tmp = self.dest.with_name(self.name + ".tmp")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.file = self.tmp.open("w", newline="", encoding="utf-8")
        self.out = csv.writer(self.file, lineterminator="\n")
        self.out.writerow(tuple(column if h == "cloud_id" else h for h in CSV_HEADER))
        self.cloud_id, self.rows = cloud_id, 0

    def add(self, released: dict[str, list[dict[str, Any]]]) -> None:
        for r in released.get("demand", []):
            at, device_time = lines.time_of(r), r.get("device_time")  # no device time: when it came
            self.out.writerow((
                datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                r.get("demand_kw"), self.cloud_id, "" if device_time is None else int(device_time),
                r.get("polled_at"), r.get("TimeStamp"), r.get("Demand"), r.get("Multiplier"),
                r.get("Divisor"),
                datetime.fromtimestamp(at, self.zone).isoformat(timespec="seconds"),
            ))  # fmt: skip
            self.rows += 1

    def close(self) -> tuple[dict[str, int], list[Made]]:
        self.file.close()
        os.replace(self.tmp, self.dest)
        return {"demand": self.rows}, [file_made(self.name, self.dest)]

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class _ParquetSink:
    def __init__(self, name: str, out_dir: Path, column: str = "cloud_id", zone: ZoneInfo = UTC_ZONE) -> None:
        self.cloud_id, self.column, self.zone = name, column, zone
        schemas = {kind: cart_schema(kind, pseudonymous=column != "cloud_id") for kind in KINDS}
        self.writers = {
            kind: KindWriter(out_dir / name / f"{kind}.parquet", kind, schema=schemas[kind]) for kind in KINDS
        }

    def add(self, released: dict[str, list[dict[str, Any]]]) -> None:
        for kind, rows in released.items():
            if kind in self.writers:
                self.writers[kind].add(self._row(r) for r in rows)

    def _row(self, record: dict[str, Any]) -> dict[str, Any]:
        """A line as the cart's columns take it: its local time, and its household's name."""
        t = lines.time_of(record)
        local = datetime.fromtimestamp(t, self.zone).isoformat(timespec="seconds") if t else None
        return {**record, "local_time": local, self.column: self.cloud_id}

    def close(self) -> tuple[dict[str, int], list[Made]]:
        rows: dict[str, int] = {}
        made = []
        for kind, writer in self.writers.items():
            rows[kind] = writer.close()
            if rows[kind]:  # a kind the device never sent has no file
                made.append(file_made(f"{self.cloud_id}/{kind}.parquet", writer.path))
        return rows, made

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
