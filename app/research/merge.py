"""One device's lines, hour by hour: every part of an hour merged, repeats dropped, rows released
in time order, and what each hour held counted.

The unit is the hourly file (a device-hour, all its parts): that is how data arrives, how rotate
ships it and how completeness is counted. A repeat is dropped by the one rule of `app.lines`
(the same identity, in its own hour or the one before). Rows are held
back until the next hour has been read, so a reading that reached us in the next hour's file
still comes out in order; one that came later still (a gateway replaying old readings) comes out
where it arrived and is counted as `late`. Memory holds two hours of one device, whatever the range.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import lines

Record = dict[str, Any]


@dataclass
class HourCount:
    """What one device-hour's files held."""

    hour: int  # Unix s of the hour's start
    readings: int = 0  # distinct demand readings
    lines: dict[str, int] = field(default_factory=dict)  # distinct lines by kind
    longest_gap_s: float = 0.0  # the longest wait for a demand reading, ending in this hour
    duplicates: int = 0  # lines dropped as repeats (any kind)
    partial: int = 0  # unreadable lines skipped (a crash's cut last line)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _time(record: Record) -> float:
    return lines.time_of(record)


def _order(record: Record) -> tuple[float, float]:
    return _time(record), _number(record.get("polled_at"))


def read_identities(paths: Iterable[Path]) -> tuple[list[Record], int]:
    """Like `read_parts`, but each line only as its identity (`lines.identities`): enough to
    count, several times quicker than parsing every field."""
    records: list[Record] = []
    partial = 0
    for path in paths:
        result = lines.identities(path.read_bytes())
        records += result.records
        partial += result.partial
    return records, partial


def read_parts(paths: Iterable[Path]) -> tuple[list[Record], int]:
    """Every complete line of an hour's parts, in order, and how many lines could not be read."""
    result = lines.read_parts(paths)
    return result.records, result.partial


class DeviceLines:
    """Feed hours in order with `add_hour`; each call returns the rows now released, by kind."""

    def __init__(
        self, start: float = float("-inf"), end: float = float("inf"), kinds: Iterable[str] = ()
    ) -> None:
        self.start, self.end = start, end
        self.kinds = set(kinds) or None  # None: every kind
        self._pending: dict[str, list[Record]] = {}
        self._seen_before: set[lines.Identity] = set()  # the previous hour's identities
        self._seen: set[lines.Identity] = set()
        self._released_to: dict[str, float] = {}  # kind → the time of the last row released
        self._last_demand: float | None = None
        self.late = 0
        self.duplicates = 0

    def add_hour(
        self, hour: int, records: Iterable[Record], partial: int = 0
    ) -> tuple[HourCount, dict[str, list[Record]]]:
        """One device-hour's lines (all parts); returns its counts and the rows released."""
        count = HourCount(hour, partial=partial)
        self._seen_before, self._seen = self._seen, set()
        fresh: dict[str, list[Record]] = {}
        for record in records:
            ident = lines.identity(record)
            kind = ident[0]
            if ident in self._seen or ident in self._seen_before:
                count.duplicates += 1
                continue
            self._seen.add(ident)
            count.lines[kind] = count.lines.get(kind, 0) + 1
            if self.kinds is None or kind in self.kinds:
                fresh.setdefault(kind, []).append(record)
        self.duplicates += count.duplicates
        timed = (r["device_time"] for r in fresh.get("demand", []) if r.get("device_time") is not None)
        self._count_demand(count, sorted(_number(t) for t in timed))
        for rows in fresh.values():
            rows.sort(key=_order)
        released: dict[str, list[Record]] = {}
        for kind in set(self._pending) | set(fresh):
            merged = sorted([*self._pending.get(kind, []), *fresh.get(kind, [])], key=_order)
            cut = next((i for i, r in enumerate(merged) if _time(r) >= hour), len(merged))
            self._pending[kind] = merged[cut:]
            released[kind] = self._release(kind, merged[:cut])
        return count, released

    def finish(self) -> dict[str, list[Record]]:
        """Every row still held back."""
        pending, self._pending = self._pending, {}
        return {kind: self._release(kind, rows) for kind, rows in pending.items()}

    def _count_demand(self, count: HourCount, times: list[float]) -> None:
        count.readings = count.lines.get("demand", 0)
        previous = self._last_demand
        for t in times:
            if previous is not None and t > previous:
                count.longest_gap_s = max(count.longest_gap_s, t - previous)
            previous = t if previous is None else max(previous, t)
        self._last_demand = previous

    def _release(self, kind: str, rows: list[Record]) -> list[Record]:
        if not rows:
            return []
        last = self._released_to.get(kind)
        if last is not None:
            self.late += sum(1 for r in rows if _time(r) < last)
        self._released_to[kind] = max(last or float("-inf"), _time(rows[-1]))
        return [r for r in rows if self.start <= _time(r) < self.end]
