"""A device's hourly lines as Arrow columns, merged by the rule of `app.research.merge` without a
Python object per line.

Arrow's JSON reader (C++) parses an object's lines straight into typed columns (`LINE_SCHEMA`);
the merge (repeats dropped, rows released in time order hour by hour) is then worked out on those
columns with numpy. The result is exactly the rows `DeviceLines` releases, in the same order, with
the same counts (tests/test_frames.py holds them side by side). Arrow's reader takes some lines
that the line-by-line reader does not (a `NaN`, two objects on one line, a blank line skipped
silently) and the rule needs a device time to name a reading, so lines not as this version writes
them raise `Unusual`, and such a device is read line by line instead. A long range (a cart's
device-month) is merged in pieces, each handing the next what its last hour holds back (`Carry`),
with the same result as one pass (tests/test_frames.py cuts ranges at every hour).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from app import lines as jl
from app.research.merge import DeviceLines
from app.research.schema import KINDS, SCHEMAS, TIME, Columns


class Unusual(ValueError):
    """Lines the columnar reader does not read exactly as `app.lines` does; the sentence says why."""


def _line_fields() -> list[tuple[str, pa.DataType]]:
    """Every field a line of any kind has, with its column's type; times as the lines hold them
    (Unix seconds, possibly fractional)."""
    found: dict[str, pa.DataType] = dict(device_time=pa.float64(), polled_at=pa.float64(), kind=pa.string())
    for kind in KINDS:
        for f in SCHEMAS[kind]:
            if f.name in ("time", "polled_at"):
                continue
            if found.setdefault(f.name, f.type) != f.type:
                raise TypeError(f"{f.name} has two types across line kinds")  # schema.py must agree
    return list(found.items())


LINE_SCHEMA = pa.schema(_line_fields())


def _narrow(kinds: frozenset[str]) -> pa.Schema:
    """The line fields of these kinds only: Arrow's reader is a fifth quicker without columns no
    line fills (a demand-only day), and ignores the fields it is not asked for."""
    wanted = {"device_time", "polled_at", "kind"} | {f.name for kind in kinds for f in SCHEMAS[kind]}
    return pa.schema([f for f in LINE_SCHEMA if f.name in wanted])


_PARSE = {
    kinds: pj.ParseOptions(explicit_schema=_narrow(kinds), unexpected_field_behavior="ignore")
    for kinds in (frozenset(c) for c in (("demand",), ("demand", "summation"), ("demand", "price"), KINDS))
}
_SAID = {kind: b'"kind":"%s"' % kind.encode() for kind in KINDS}  # as this version writes it
_BLOCK = 1 << 24  # lines parsed at once (Arrow's block): a device-day of lines is about 4 MB
_FLOATS = [f.name for f in LINE_SCHEMA if pa.types.is_floating(f.type)]
_NEWLINE = ord("\n")
_KIND_NULL = re.compile(rb'"kind"\s*:\s*null')


@dataclass
class Parsed:
    """One device's objects as one table of lines (in object order), and where each row came from."""

    table: pa.Table
    hours: np.ndarray  # the hour (Unix s) of each object's file, one per object, in order
    rows: np.ndarray  # rows per object
    partial: dict[int, int]  # hour → lines that could not be read (a cut last line)


def parse(objects: Iterable[tuple[int, bytes]]) -> Parsed:
    """The lines of a device's objects: (hour start, the object's `.jl` bytes) in hour and part
    order, taken as they come and read _BLOCK of lines at a time (a device-month of objects is
    never in memory at once). Raises `Unusual` when a line is not as this version writes it."""
    tables: list[pa.Table] = []
    hours: list[int] = []
    counts: list[int] = []
    partial: dict[int, int] = {}
    batch: list[bytes] = []
    lines = size = 0
    for hour, data in objects:
        body = jl.whole(data)
        if len(body) < len(data):  # a last line cut by a crash
            partial[hour] = partial.get(hour, 0) + 1
        ends = np.flatnonzero(np.frombuffer(body, np.uint8) == _NEWLINE)  # 5x quicker than `in`
        if len(ends) and (ends[0] == 0 or bool(np.any(np.diff(ends) == 1))):
            raise Unusual("a blank line")
        hours.append(hour)
        counts.append(len(ends))
        batch.append(body)
        lines, size = lines + counts[-1], size + len(body)
        if size >= _BLOCK:
            tables.append(_batch(batch, lines))
            batch, lines, size = [], 0, 0
    if batch or not tables:
        tables.append(_batch(batch, lines))
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if any(pc.any(pc.invert(pc.is_finite(table.column(name)))).as_py() for name in _FLOATS):
        raise Unusual("a NaN or Infinity, which JSON has not")  # Arrow's reader takes them
    if table.column("device_time").null_count:
        raise Unusual("a reading without a device time")
    return Parsed(table, np.array(hours, dtype=np.int64), np.array(counts, dtype=np.int64), partial)


def _batch(bodies: list[bytes], lines: int) -> pa.Table:
    """Some objects' lines as one table of every line field."""
    joined = b"".join(bodies)
    if not joined.isascii():
        raise Unusual("a line that is not plain ASCII")  # orjson and Arrow differ on bad UTF-8
    table = _read(joined) if joined else LINE_SCHEMA.empty_table()
    for name in LINE_SCHEMA.names:
        if name not in table.column_names:  # of a kind these lines do not hold
            table = table.append_column(
                LINE_SCHEMA.field(name), pa.nulls(table.num_rows, LINE_SCHEMA.field(name).type)
            )
    table = table.select(LINE_SCHEMA.names)
    if table.num_rows != lines:
        raise Unusual("a line that holds more or less than one JSON object")
    if table.column("kind").null_count and _KIND_NULL.search(joined):
        raise Unusual("a line whose kind is null")
    return table


def _read(data: bytes) -> pa.Table:
    """The lines' table, with the columns of the kinds they hold."""
    said = frozenset(kind for kind, text in _SAID.items() if kind == "demand" or text in data)
    table = _parsed(data, _PARSE[said])
    held = set(table.column("kind").unique().to_pylist()) & set(KINDS)
    if not held <= said:  # a kind spelled otherwise ("kind": "price"): read again with every column
        table = _parsed(data, _PARSE[frozenset(KINDS)])
    return table


def _parsed(data: bytes, options: pj.ParseOptions) -> pa.Table:
    try:
        read = pj.ReadOptions(use_threads=False, block_size=max(_BLOCK, len(data) + 1))
        return pj.read_json(pa.BufferReader(data), read_options=read, parse_options=options)  # type: ignore[arg-type]
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise Unusual(f"a line Arrow's reader refused: {str(exc).splitlines()[0]}") from None


@dataclass
class Merged:
    """A device's rows by kind, in the order `DeviceLines` releases them, and what each hour held."""

    tables: dict[str, pa.Table]  # SCHEMAS[kind]
    steps: dict[str, np.ndarray]  # per row: the hour (its index) whose reading released it
    hours: list[int]  # the hours read, in order
    duplicates: dict[int, int] = field(default_factory=dict)  # hour → repeats dropped
    partial: dict[int, int] = field(default_factory=dict)  # hour → unreadable lines
    lines: dict[int, dict[str, int]] = field(default_factory=dict)  # hour → distinct lines by kind
    late: int = 0
    times: dict[str, np.ndarray] = field(default_factory=dict)  # per row: its time (`lines.time_of`), s
    gaps: dict[int, float] = field(default_factory=dict)  # hour → longest wait for a demand reading, > 0
    carry: Carry | None = None  # merged with final=False: what the next piece starts from

    def units(self, kind: str) -> list[pa.Table]:
        """The kind's rows cut where `DeviceLines` releases them: one table per release."""
        table, steps = self.tables[kind], self.steps[kind]
        cuts = [0, *(np.flatnonzero(np.diff(steps)) + 1).tolist(), len(steps)]
        return [table.slice(a, b - a) for a, b in itertools.pairwise(cuts) if b > a]


@dataclass
class Carry:
    """What a range read in pieces passes from one piece to the next (`merge(..., final=False)`),
    so that the pieces release what one reading of the whole range would: the rows held back, each
    with the hour it was read in (counted back from the next piece: -1 is the last hour read), the
    other readings kept in the last hour (a repeat of one is dropped), the latest time released of
    each kind (a row before it is late) and the latest demand reading (the next wait starts there)."""

    table: pa.Table  # LINE_SCHEMA: the rows held back, in the order they were read
    rank: np.ndarray
    kept: list[tuple[str, float]]
    released_to: dict[str, float]
    demand: float | None


def merge(parsed: Parsed, carry: Carry | None = None, final: bool = True) -> Merged:
    """Repeats dropped and rows ordered as `DeviceLines.add_hour` and `finish` do, hour by hour:
    after the pieces `carry` comes from, if any; unless `final`, the rows the last hour holds back
    are not released but passed on in `Merged.carry`."""
    table = parsed.table
    if carry is not None and carry.table.num_rows:
        table = pa.concat_tables([carry.table, table])
    hour_list = sorted(set(parsed.hours.tolist()))
    starts = np.array(hour_list, dtype=np.float64)
    rank = np.repeat(np.searchsorted(starts, parsed.hours.astype(np.float64)), parsed.rows)
    if carry is not None:
        rank = np.concatenate([carry.rank, rank]).astype(np.int64)
    coded = table.column("kind").combine_chunks().fill_null("demand").dictionary_encode()
    kinds = np.asarray(coded.indices, dtype=np.int64)
    names = [str(name) for name in coded.dictionary.to_pylist()]
    if carry is not None:  # a kind only the last hour read still names gets a code of its own
        names += [kind for kind in dict.fromkeys(k for k, _ in carry.kept) if kind not in names]
    t = _floats(table.column("device_time"))
    dup = _without_repeats_of(carry, names, kinds, t, rank)
    fresh = rank >= 0  # rows of this piece: a carried row (of an hour before it) was counted in its own
    counted = dict(zip(*np.unique(rank[dup], return_counts=True), strict=True)) if dup.any() else {}
    merged = Merged({}, {}, hour_list, partial=dict(parsed.partial))
    merged.duplicates = {hour_list[int(r)]: int(c) for r, c in counted.items()}
    polled = np.nan_to_num(_floats(table.column("polled_at")), nan=0.0)
    keep = ~dup
    released_to = dict(carry.released_to) if carry is not None else {}
    demand = carry.demand if carry is not None else None
    holding: list[np.ndarray] = []
    for code, name in enumerate(names):
        mine = keep & (kinds == code)
        for r, c in zip(*np.unique(rank[mine & fresh], return_counts=True), strict=True):
            merged.lines.setdefault(hour_list[int(r)], {})[name] = int(c)
        rows = np.flatnonzero(mine)
        # released by the first hour read (its own or later) that starts after the reading's time
        step = np.maximum(rank[rows], np.searchsorted(starts, t[rows], side="right"))
        by = np.lexsort((rows, polled[rows], t[rows], step))  # ties: the order the lines were read
        order, steps = rows[by], step[by]
        if not final:  # held back by the last hour: the next piece releases them
            holding.append(order[steps == len(hour_list)])
            order, steps = order[steps < len(hour_list)], steps[steps < len(hour_list)]
        before = released_to.get(name, -np.inf)
        merged.late += _late(t[order], steps, before)  # of every kind, as DeviceLines counts them
        if len(order):
            released_to[name] = max(before, float(t[order].max()))
        if name == "demand":
            new = np.flatnonzero(mine & fresh)
            merged.gaps, demand = _gaps(rank[new], t[new], hour_list, demand)
        if name not in SCHEMAS:
            continue
        merged.steps[name] = steps
        merged.times[name] = t[order]
        merged.tables[name] = _columns(table.take(order), name)
    for name in KINDS:
        if name not in merged.tables:
            merged.tables[name] = SCHEMAS[name].empty_table()
            merged.steps[name] = np.zeros(0, dtype=np.int64)
            merged.times[name] = np.zeros(0, dtype=np.float64)
    if not final:
        kept_rows = np.sort(np.concatenate(holding)) if holding else np.zeros(0, dtype=np.int64)
        last = keep & (rank == len(hour_list) - 1)
        last[kept_rows] = False  # (those go on as rows)
        kept = [(names[int(k)], float(v)) for k, v in zip(kinds[last], t[last], strict=True)]
        merged.carry = Carry(
            table.take(kept_rows), rank[kept_rows] - len(hour_list), kept, released_to, demand
        )
    return merged


def _without_repeats_of(
    carry: Carry | None, names: list[str], kinds: np.ndarray, t: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """`_repeats` of the rows (the carried ones first), after the readings the carry says were
    kept in the last hour read (`names` codes the kinds of both). Each carried row and reading is
    found kept again: every one was kept in its own piece, so none repeats another within an hour."""
    if carry is None or not carry.kept:
        return _repeats(kinds, t, rank)
    ghosts = len(carry.kept)
    all_kinds = np.concatenate([np.array([names.index(k) for k, _ in carry.kept], dtype=np.int64), kinds])
    all_t = np.concatenate([np.array([v for _, v in carry.kept], dtype=np.float64), t])
    all_rank = np.concatenate([np.full(ghosts, -1, dtype=np.int64), rank])
    return _repeats(all_kinds, all_t, all_rank)[ghosts:]


class Gathers(Protocol):
    """Rows of one kind gathered from lines into typed columns (`schema.Columns` is one)."""

    def add(self, record: dict[str, Any]) -> None: ...
    def table(self) -> pa.Table: ...


def by_lines(objects: list[tuple[int, bytes]], columns: Callable[[str], Gathers] = Columns) -> Merged:
    """The same, read line by line (`app.lines`, `DeviceLines`, and `columns` for the typing): how
    a device with `Unusual` lines is read, and what compaction checks both readers against."""
    by_hour: dict[int, tuple[list[dict[str, Any]], int]] = {}
    for hour, data in objects:
        result = jl.parse(data)
        records, bad = by_hour.get(hour, ([], 0))
        by_hour[hour] = (records + result.records, bad + result.partial)
    hours = sorted(by_hour)
    merged = Merged({}, {}, hours)
    device = DeviceLines()
    gathered = {kind: columns(kind) for kind in KINDS}
    steps: dict[str, list[int]] = {kind: [] for kind in KINDS}
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}

    def take(step: int, released: dict[str, list[dict[str, Any]]]) -> None:
        for kind, rows in released.items():
            if kind in gathered:
                for row in rows:
                    gathered[kind].add(row)
                steps[kind] += [step] * len(rows)
                times[kind] += [jl.time_of(row) for row in rows]

    for step, hour in enumerate(hours):
        records, bad = by_hour[hour]
        count, released = device.add_hour(hour, records, bad)
        if count.duplicates:
            merged.duplicates[hour] = count.duplicates
        if bad:
            merged.partial[hour] = bad
        if count.lines:
            merged.lines[hour] = count.lines
        if count.longest_gap_s:
            merged.gaps[hour] = count.longest_gap_s
        take(step, released)
    take(len(hours), device.finish())
    merged.late = device.late
    for kind in KINDS:
        merged.tables[kind] = gathered[kind].table()
        merged.steps[kind] = np.array(steps[kind], dtype=np.int64)
        merged.times[kind] = np.array(times[kind], dtype=np.float64)
    return merged


def _floats(column: pa.ChunkedArray[Any]) -> np.ndarray:
    return np.asarray(column.combine_chunks().to_numpy(zero_copy_only=False), dtype=np.float64)


def _repeats(kinds: np.ndarray, t: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Which rows repeat a reading kept in their own hour or the one read before (the rule of
    `app.lines`): a repeat is not kept, so it does not extend the window for a later one."""
    n = len(t)
    dup = np.zeros(n, dtype=bool)
    if n < 2:
        return dup
    order = np.lexsort((np.arange(n), t, kinds))
    k, tt = kinds[order], t[order]
    again = np.flatnonzero((k[1:] == k[:-1]) & (tt[1:] == tt[:-1])) + 1
    last_kept, previous = 0, -2
    for j in again.tolist():  # repeats are few: a gateway's re-sends
        if j != previous + 1:  # the first of this reading's run is kept
            last_kept = int(rank[order[j - 1]])
        r = int(rank[order[j]])
        if last_kept >= r - 1:
            dup[order[j]] = True
        else:
            last_kept = r
        previous = j
    return dup


def _gaps(
    rank: np.ndarray, t: np.ndarray, hours: list[int], previous: float | None = None
) -> tuple[dict[int, float], float | None]:
    """The longest wait for a demand reading ending in each hour (`DeviceLines`' count): the hour's
    kept readings in time order, each against the latest one before it, of this hour or an earlier
    one read (`previous`, from a piece read before). Only the hours with a wait; and the latest."""
    order = np.lexsort((t, rank))
    rank, t = rank[order], t[order]
    bounds = np.flatnonzero(np.diff(rank)) + 1
    gaps: dict[int, float] = {}
    for hour, seg in zip(np.split(rank, bounds), np.split(t, bounds), strict=True):
        if not len(seg):
            continue
        latest = np.maximum.accumulate(seg if previous is None else np.concatenate(([previous], seg)))
        waits = seg[1:] - latest[:-1] if previous is None else seg - latest[:-1]
        if (waits > 0).any():
            gaps[hours[int(hour[0])]] = float(waits.max())
        previous = float(latest[-1])
    return gaps, previous


def _late(t: np.ndarray, steps: np.ndarray, since: float = -np.inf) -> int:
    """Rows released earlier in time than a row released before them (`DeviceLines.late`), after
    a piece read before that released up to `since`."""
    if len(t) == 0:
        return 0
    starts = np.concatenate(([0], np.flatnonzero(np.diff(steps)) + 1))
    # the latest released after each release
    highest = np.maximum(np.maximum.accumulate(np.maximum.reduceat(t, starts)), since)
    before = np.repeat(np.concatenate(([since], highest[:-1])), np.diff(np.append(starts, len(t))))
    return int(np.count_nonzero(t < before))


def _columns(lines: pa.Table, kind: str) -> pa.Table:
    """A kind's lines as its typed columns (`schema.SCHEMAS`): times in milliseconds, rounded as
    Python rounds (half to even)."""
    arrays: list[Any] = []
    for f in SCHEMAS[kind]:
        source = "device_time" if f.name == "time" else f.name
        column = lines.column(source)
        if f.type == TIME:
            millis = pc.round(pc.multiply(column, 1000.0), round_mode="half_to_even")
            column = millis.cast(pa.int64()).cast(TIME)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=SCHEMAS[kind])
