"""How complete each device's data is, hour by hour, counted as the data arrives.

Per device and UTC hour (of arrival, the hour of the file the lines are in): polls scheduled
(slots in the pinger's schedule, whether polled, skipped, held or backing off), polls ok,
distinct demand readings written, the longest gap between two consecutive readings (s), and
duplicates: readings a further part of the device-hour holds again (two pingers wrote the same
device-hour, one cut off from Redis), counted by rotate when it stores that part.
Processes count in memory and add their counts to Redis in batches (HINCRBY, so several
pingers or servers add up; the longest gap is kept as a maximum), where they live for
COMPLETENESS_DAYS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.hours import Hour


@dataclass
class HourCounts:
    scheduled: int = 0
    ok: int = 0
    readings: int = 0
    longest_gap_s: float = 0.0
    duplicates: int = 0

    def add(self, other: HourCounts) -> None:
        self.scheduled += other.scheduled
        self.ok += other.ok
        self.readings += other.readings
        self.longest_gap_s = max(self.longest_gap_s, other.longest_gap_s)


@dataclass
class Tally:
    """Counts not yet in Redis, by (cloud_id, hour number: `Hour.number`)."""

    counts: dict[tuple[str, int], HourCounts] = field(default_factory=dict)
    # counts sent under a token whose write failed: they may have landed (app.pinger.ledger)
    in_doubt: tuple[str, dict[tuple[str, int], HourCounts]] | None = None

    def _at(self, cloud_id: str, at: float) -> HourCounts:
        key = (cloud_id, Hour.at(at).number)
        found = self.counts.get(key)
        if found is None:
            found = self.counts[key] = HourCounts()
        return found

    def scheduled(self, cloud_id: str, at: float) -> None:
        self._at(cloud_id, at).scheduled += 1

    def ok(self, cloud_id: str, at: float) -> None:
        self._at(cloud_id, at).ok += 1

    def reading(self, cloud_id: str, at: float, gap_s: float | None) -> None:
        hour = self._at(cloud_id, at)
        hour.readings += 1
        if gap_s is not None and gap_s > hour.longest_gap_s:
            hour.longest_gap_s = gap_s

    def take(self) -> dict[tuple[str, int], HourCounts]:
        taken, self.counts = self.counts, {}
        return taken


def longest_gap_s(readings: int, measured_s: float, hour_start: float, now: float) -> float:
    """An hour's longest gap: the longest wait between its readings as measured, or, for an hour
    without a reading, the whole hour (as much of it as has passed): silence is one long gap,
    not none."""
    if readings:
        return measured_s
    return round(max(0.0, min(3600.0, now - hour_start)), 3)


def percent(row: dict[str, Any]) -> float | None:
    """Polls ok ÷ polls scheduled, in percent (None for a push device: nothing is scheduled)."""
    scheduled = int(row.get("scheduled", 0))
    return round(100.0 * int(row.get("ok", 0)) / scheduled, 1) if scheduled else None


def hour_label(hour: int) -> str:
    """Hour number → `YYYY-MM-DD-HH`, the hourly files' spelling."""
    return Hour(hour).key


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A device-hour as the API and the CLI show it."""
    return {
        "hour": hour_label(int(row["hour"])),
        "start": Hour(int(row["hour"])).start,
        "scheduled": row["scheduled"],
        "ok": row["ok"],
        "percent": percent(row),
        "readings": row["readings"],
        "longest_gap_s": row["longest_gap_s"],
        "duplicates": row.get("duplicates", 0),
    }
