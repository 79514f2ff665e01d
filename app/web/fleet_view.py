"""The fleet table behind /fleet: rows from the registry, filtered, sorted and paged server-side.

Pure functions of records and counts, so the page, its CSV export and the tests agree. The
server keeps one snapshot of the registry for a couple of seconds, so paging through 10,000
devices does not re-read Redis for every page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from app.devices import PUSH, DeviceRecord

STATUSES = ("ok", "failing", "stale", "never", "inactive")
COLUMNS = ("cloud_id", "email", "protocol", "status", "age", "complete", "error", "model", "firmware")
PER_PAGE = 50
SNAPSHOT_TTL_S = 2.0


@dataclass(frozen=True)
class FleetRow:
    cloud_id: str
    email: str
    protocol: str
    status: str
    age_s: float | None  # since the last reading (or upload)
    complete: float | None  # today's polls ok ÷ scheduled, percent; None when nothing was scheduled
    readings_today: int
    error: str
    model: str
    firmware: str

    def sort_key(self, column: str) -> tuple[bool, Any]:
        value = {"email": self.email, "age": self.age_s, "error": self.error}.get(column)
        if value is None and column not in ("email", "age", "error"):
            value = getattr(self, column)
        return (value is None or value == "", value if value is not None else 0)

    def csv(self) -> list[object]:
        age = "" if self.age_s is None else round(self.age_s)
        complete = "" if self.complete is None else self.complete
        return [self.cloud_id, self.email, self.protocol, self.status, age, complete,
                self.readings_today, self.error, self.model, self.firmware]  # fmt: skip


def status_of(record: DeviceRecord, now: float, stale_after_s: float) -> str:
    """ok / failing / never as recorded, inactive, or stale: ok but silent (no pinger polling it)."""
    if not record.active:
        return "inactive"
    status = record.status
    if status == "ok" and record.last_success_at is not None and now - record.last_success_at > stale_after_s:
        return "stale"
    return status


def rows(
    records: Iterable[DeviceRecord],
    today: dict[str, tuple[int, int, int]],
    now: float,
    stale_after_s: float,
) -> list[FleetRow]:
    out = []
    for r in records:
        scheduled, ok, readings = today.get(r.cloud_id, (0, 0, 0))
        seen = r.last_success_at if r.protocol == PUSH else (r.last_success_at and r.last_timestamp)
        out.append(
            FleetRow(
                cloud_id=r.cloud_id, email=r.user_email, protocol=r.protocol,
                status=status_of(r, now, stale_after_s),
                age_s=None if not seen else max(0.0, now - float(seen)),
                complete=round(100.0 * ok / scheduled, 1) if scheduled else None,
                readings_today=readings, error=r.last_error,
                model=str((r.crawl or {}).get("model", "")),
                firmware=str((r.crawl or {}).get("firmware", "")),
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class View:
    status: str = ""
    protocol: str = ""
    q: str = ""
    sort: str = "cloud_id"
    desc: bool = False
    page: int = 1

    def apply(self, everything: list[FleetRow]) -> tuple[list[FleetRow], int]:
        """(the rows of this page, how many match)."""
        matching = self.matching(everything)
        start = (self.page - 1) * PER_PAGE
        return matching[start : start + PER_PAGE], len(matching)

    def matching(self, everything: list[FleetRow]) -> list[FleetRow]:
        q = self.q.strip().lower()
        found = [
            row
            for row in everything
            if (not self.status or row.status == self.status)
            and (not self.protocol or row.protocol == self.protocol)
            and (not q or q in row.cloud_id or q in row.email.lower())
        ]
        found.sort(key=lambda row: row.cloud_id)
        found.sort(key=lambda row: row.sort_key(self.sort), reverse=self.desc)
        if self.desc:  # empty values last, whichever the direction
            found.sort(key=lambda row: row.sort_key(self.sort)[0])
        return found


class Snapshot:
    """The registry and today's counts, re-read when older than SNAPSHOT_TTL_S."""

    def __init__(self, load: Callable[[], Any], clock: Callable[[], float] = time.monotonic) -> None:
        self.load, self.clock = load, clock
        self._at = -1e9
        self._value: Any = None

    async def get(self) -> Any:
        if self.clock() - self._at > SNAPSHOT_TTL_S:
            self._value = await self.load()
            self._at = self.clock()
        return self._value
