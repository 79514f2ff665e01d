"""A Parquet cart's device read through Arrow's JSON reader (`app.research.frames`), not line by line.

The same files, rows and counts as `tables.build_device` makes from the same hours (the columnar
reader merges them by the rule `DeviceLines` keeps: repeats, release order, late rows, cut lines,
waits between readings); tests/test_cart_columns.py holds the two side by side. A device's hours
are read in pieces, each handing the next what it holds back (`frames.Carry`), so memory holds one
piece whatever the range: staged hourly files about PIECE_BYTES of lines at a time, and a
compacted day whole, from its Parquet rows (`days.compacted_columns`). A device with lines or rows
the columnar reader does not take (`frames.Unusual`) is read line by line as before.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.carts.tables import DeviceTables, file_made
from app.hours import Day, Hour, hour_starts
from app.research import frames
from app.research.days import DayReader, compacted_columns
from app.research.merge import HourCount
from app.research.parquet import KindWriter
from app.research.schema import KINDS, cart_schema

log = logging.getLogger(__name__)
# lines merged at once: about two days of one household's 6-second readings. A device-month's cart
# peaks near 220 MB against 188 MB read line by line (279 MB with 32 MB pieces), in a quarter of the time
PIECE_BYTES = 8 * 2**20


Fallback = Callable[[], DeviceTables]  # the same device read line by line


def build_parquet_device(
    cloud_id: str,
    staged: dict[int, list[Path]],
    days: Sequence[DayReader],
    wanted: set[int],
    window: tuple[float, float],
    out_dir: Path,
    label: tuple[str, str],
    zone: str,
    by_lines: Fallback,
) -> DeviceTables:
    """`tables.build_device("parquet", ...)` of a device's hours in the cart: its staged hourly
    parts (hour → its parts in order) and its compacted days (their hours in `wanted`), read
    through the columnar reader; or `by_lines()` when it does not take them."""
    column, name = label[0], label[1] or cloud_id
    result = DeviceTables(cloud_id)
    writers = {
        kind: KindWriter(out_dir / name / f"{kind}.parquet", kind,
                         schema=cart_schema(kind, pseudonymous=column != "cloud_id"))
        for kind in KINDS
    }  # fmt: skip
    local = ZoneInfo(zone)
    try:
        carry: frames.Carry | None = None
        for read, last in _pieces(staged, days, cloud_id, wanted):
            parsed, dropped = read()
            merged = frames.merge(parsed, carry, last)
            carry = merged.carry
            _count(result, merged, dropped)
            for kind, writer in writers.items():
                times = merged.times[kind]
                inside = (times >= window[0]) & (times < window[1])  # the range, clamped to consent
                rows = (
                    merged.tables[kind].filter(pa.array(inside)) if not inside.all() else merged.tables[kind]
                )
                if rows.num_rows:
                    schema = writer.columns.schema
                    writer.add_table(_cart_columns(rows, times[inside], schema, column, name, local))
        for kind, writer in writers.items():
            result.rows[kind] = writer.close()
            if result.rows[kind]:  # a kind the device never sent has no file
                result.files.append(file_made(f"{name}/{kind}.parquet", writer.path))
    except BaseException as exc:
        for writer in writers.values():
            writer.abort()
        if not isinstance(exc, frames.Unusual):
            raise
        log.info("read a device's cart hours line by line", extra={"cloud_id": cloud_id, "reason": str(exc)})
        return by_lines()
    return result


Piece = Callable[[], tuple[frames.Parsed, dict[int, int]]]  # its lines, and repeats dropped before


def _pieces(
    staged: dict[int, list[Path]], days: Sequence[DayReader], cloud_id: str, wanted: set[int]
) -> Iterator[tuple[Piece, bool]]:
    """The device's hours in order, in pieces: a compacted day whole (it is one device-day of
    rows), staged hours in runs of about PIECE_BYTES of files (an hour is never split); and
    whether a piece is the last."""
    starts: list[tuple[int, DayReader | None]] = [(hour, None) for hour in staged]
    for reader in days:  # (a device-day is in the cart either compacted or as hourly files, never both)
        day = Day.parse(reader.manifest.day)
        if any(hour.start in wanted for hour in day.hours()):
            starts.append((day.start, reader))
    starts.sort(key=lambda item: item[0])
    pieces: list[Piece] = []
    run: list[int] = []
    size = 0

    def staged_run(hours: list[int]) -> Piece:
        return lambda: (frames.parse((h, p.read_bytes()) for h in hours for p in staged[h]), {})

    for hour, compacted in starts:
        if run and (compacted is not None or size >= PIECE_BYTES):
            pieces.append(staged_run(run))
            run, size = [], 0
        if compacted is not None:
            pieces.append(functools.partial(compacted_columns, compacted, cloud_id, wanted))
        else:
            run.append(hour)
            size += sum(path.stat().st_size for path in staged[hour])
    if run or not pieces:
        pieces.append(staged_run(run))
    for n, piece in enumerate(pieces):
        yield piece, n == len(pieces) - 1


def _count(result: DeviceTables, merged: frames.Merged, dropped: dict[int, int]) -> None:
    """A piece's hours' counts into the device's (with the repeats compaction dropped before)."""
    for hour in merged.hours:
        held = dict(merged.lines.get(hour, {}))
        repeats = merged.duplicates.get(hour, 0) + dropped.get(hour, 0)
        result.hours.append(HourCount(
            hour, readings=held.get("demand", 0), lines=held, longest_gap_s=merged.gaps.get(hour, 0.0),
            duplicates=repeats, partial=merged.partial.get(hour, 0),
        ))  # fmt: skip
    result.duplicates += sum(merged.duplicates.values()) + sum(dropped.values())
    result.partial += sum(merged.partial.values())
    result.late += merged.late


def _cart_columns(
    rows: pa.Table, times: np.ndarray, schema: pa.Schema, column: str, name: str, zone: ZoneInfo
) -> pa.Table:
    """A kind's rows as the cart's columns: the household named by `column`, its local time."""
    arrays: list[Any] = []
    for f in schema:
        if f.name == column:
            arrays.append(pa.array([name] * rows.num_rows, pa.string()))
        elif f.name == "local_time":
            arrays.append(local_times(times, zone))
        else:
            arrays.append(rows.column(f.name))
    return pa.Table.from_arrays(arrays, schema=schema)


def local_times(times: np.ndarray, zone: ZoneInfo) -> pa.Array[Any]:
    """`datetime.fromtimestamp(t, zone).isoformat(timespec="seconds")` of each time (null for 0,
    as a cart's row without a time has none), worked out once per UTC hour: an hour whose offset is
    the same at its first and last second takes it for all its rows; any other, row by row."""
    whole, fraction = np.divmod(times, 1.0)
    micros = np.round(fraction * 1e6)  # as fromtimestamp rounds: half to even, to the microsecond
    seconds = whole.astype(np.int64) + (micros >= 1e6)
    offsets = np.zeros(len(times), dtype=np.int64)
    odd: list[str | None] = [None] * len(times)  # rows of an hour with a clock change, as Python writes them
    hours = hour_starts(seconds)
    for start in np.unique(hours).tolist():
        hour = Hour.at(start)
        first, last = _offset(hour.start, zone), _offset(hour.end - 1, zone)
        if first == last and first % 60 == 0:
            offsets[hours == start] = first
            continue
        for i in np.flatnonzero(hours == start).tolist():
            odd[i] = datetime.fromtimestamp(float(times[i]), zone).isoformat(timespec="seconds")
    written = np.datetime_as_string((seconds + offsets).astype("datetime64[s]"), unit="s")
    local = pa.array(written.tolist(), pa.string())
    kinds, which = np.unique(offsets, return_inverse=True)
    suffix = pa.array([_written(o) for o in kinds.tolist()], pa.string()).take(which.astype(np.int64))
    made: Any = pc.binary_join_element_wise(local, suffix, "")  # type: ignore[call-overload]  # (stubs: no str separator)
    if any(t is not None for t in odd):
        exact = pa.array(odd, pa.string())
        made = pc.if_else(pc.is_null(exact), made, exact)
    return cast("pa.Array[Any]", pc.if_else(pa.array(times == 0), pa.nulls(len(times), pa.string()), made))


def _offset(at: int, zone: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(at, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _written(offset_s: int) -> str:
    """A whole-minute UTC offset as isoformat writes it: +01:00, -03:30."""
    sign, minutes = ("-" if offset_s < 0 else "+"), abs(offset_s) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
