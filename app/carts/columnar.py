"""A Parquet cart's device read through Arrow's JSON reader (`app.research.frames`), not line by line.

The same files, rows and counts as `tables.build_device` makes from the same hourly files (the
columnar reader merges them by the rule `DeviceLines` keeps: repeats, release order, late rows,
cut lines, waits between readings); tests/test_cart_columns.py holds the two side by side. A device
is read this way when all its hours in the cart are hourly files (none from a compacted day), in
pieces of about PIECE_BYTES of lines, each piece handing the next what it holds back
(`frames.Carry`): memory holds one piece, whatever the range. A device with lines the columnar
reader does not take (`frames.Unusual`) is read line by line as before, an hour at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.carts.tables import DeviceTables, build_device, file_made, staged_hours
from app.research import frames
from app.research.merge import HourCount
from app.research.parquet import KindWriter
from app.research.schema import KINDS, cart_schema

log = logging.getLogger(__name__)
# lines merged at once: about two days of one household's 6-second readings. A device-month's cart
# peaks near 220 MB against 188 MB read line by line (279 MB with 32 MB pieces), in a quarter of the time
PIECE_BYTES = 8 * 2**20


def build_parquet_device(
    cloud_id: str,
    hours: dict[int, list[Path]],
    start: float,
    end: float,
    out_dir: Path,
    label: tuple[str, str] = ("cloud_id", ""),
    zone: str = "UTC",
) -> DeviceTables:
    """`tables.build_device("parquet", ...)` of a device's staged hourly parts (hour → its parts
    in order), read through the columnar reader when it can."""
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
        for piece, last in _pieces(hours):
            merged = frames.merge(
                frames.parse((h, p.read_bytes()) for h in piece for p in hours[h]), carry, last
            )
            carry = merged.carry
            _count(result, merged)
            for kind, writer in writers.items():
                times = merged.times[kind]
                inside = (times >= start) & (times < end)  # the cart's range, clamped to the consent window
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
    except frames.Unusual as why:
        for writer in writers.values():
            writer.abort()
        log.info("read a device's cart hours line by line", extra={"cloud_id": cloud_id, "reason": str(why)})
        return build_device("parquet", cloud_id, staged_hours(hours), start, end, out_dir, label, zone)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return result


def _pieces(hours: dict[int, list[Path]]) -> Iterator[tuple[list[int], bool]]:
    """The hours in order, in runs of about PIECE_BYTES of files (an hour is never split); and
    whether a run is the last."""
    piece: list[int] = []
    size = 0
    for hour in sorted(hours):
        if piece and size >= PIECE_BYTES:
            yield piece, False
            piece, size = [], 0
        piece.append(hour)
        size += sum(path.stat().st_size for path in hours[hour])
    yield piece, True


def _count(result: DeviceTables, merged: frames.Merged) -> None:
    """A piece's hours' counts into the device's."""
    for hour in merged.hours:
        held = dict(merged.lines.get(hour, {}))
        result.hours.append(HourCount(
            hour, readings=held.get("demand", 0), lines=held, longest_gap_s=merged.gaps.get(hour, 0.0),
            duplicates=merged.duplicates.get(hour, 0), partial=merged.partial.get(hour, 0),
        ))  # fmt: skip
    result.duplicates += sum(merged.duplicates.values())
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
    hours = seconds // 3600
    for hour in np.unique(hours).tolist():
        first, last = _offset(hour * 3600, zone), _offset(hour * 3600 + 3599, zone)
        if first == last and first % 60 == 0:
            offsets[hours == hour] = first
            continue
        for i in np.flatnonzero(hours == hour).tolist():
            odd[i] = datetime.fromtimestamp(float(times[i]), zone).isoformat(timespec="seconds")
    written = np.datetime_as_string((seconds + offsets).astype("datetime64[s]"), unit="s")
    local = pa.array(written.tolist(), pa.string())
    kinds, which = np.unique(offsets, return_inverse=True)
    suffix = pa.array([_written(o) for o in kinds.tolist()], pa.string()).take(which.astype(np.int64))
    made: Any = pc.binary_join_element_wise(local, suffix, "")  # type: ignore[call-overload]  # (stubs: no str separator)
    if any(t is not None for t in odd):
        made = pc.if_else(pc.is_null(pa.array(odd, pa.string())), made, pa.array(odd, pa.string()))
    return cast("pa.Array[Any]", pc.if_else(pa.array(times == 0), pa.nulls(len(times), pa.string()), made))


def _offset(at: int, zone: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(at, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _written(offset_s: int) -> str:
    """A whole-minute UTC offset as isoformat writes it: +01:00, -03:30."""
    sign, minutes = ("-" if offset_s < 0 else "+"), abs(offset_s) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
