"""The fleet table behind /fleet: rows from the registry, filtered, sorted and paged server-side.

Pure functions of records and counts, so the page, its CSV export and the tests agree. The
server keeps one snapshot of the registry and its rows for a few seconds, so paging through
10,000 devices does not re-read Redis for every page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from app import health
from app.devices import PUSH, DeviceRecord

STATUSES = health.STATES  # the status column is the device's health (app.health)
WORST_FIRST = (
    "unreachable", "frozen", "meter_offline", "auth", "bad_reply", "push_silent", "unpolled", "never",
    "ok", "inactive",
)  # the status column's order: the households that need someone first  # fmt: skip
COLUMNS = (
    "cloud_id",
    "email",
    "protocol",
    "status",
    "age",
    "complete",
    "error",
    "model",
    "firmware",
    "pinger",
)
log = logging.getLogger(__name__)
PER_PAGE = 50
SNAPSHOT_TTL_S = 5.0


@dataclass(frozen=True)
class FleetRow:
    cloud_id: str
    email: str
    protocol: str
    status: str
    seen_at: float | None  # when the last reading (or upload) arrived
    complete: float | None  # today's polls ok ÷ scheduled, percent; None when nothing was scheduled
    readings_today: int
    error: str
    model: str
    firmware: str
    pinger: str = ""  # host:pid of the pinger holding its lease ("" for none, or a push device)
    since: float | None = None  # when its state began
    study: str = "default"  # the study it belongs to

    def age_s(self, now: float) -> float | None:
        return None if self.seen_at is None else max(0.0, now - self.seen_at)

    def sort_key(self, column: str) -> tuple[bool, Any]:
        if column == "age":  # youngest first: the latest arrival
            return (self.seen_at is None, -(self.seen_at or 0.0))
        if column == "status":  # the devices that need someone first
            return (False, WORST_FIRST.index(self.status) if self.status in WORST_FIRST else len(WORST_FIRST))
        value = {"email": self.email, "error": self.error, "pinger": self.pinger}.get(column)
        if value is None and column not in ("email", "error", "pinger"):
            value = getattr(self, column)
        return (value is None or value == "", value if value is not None else 0)

    def csv(self, now: float) -> list[object]:
        age_s = self.age_s(now)
        age = "" if age_s is None else round(age_s)
        complete = "" if self.complete is None else self.complete
        return [self.cloud_id, self.email, self.protocol, self.status, age, complete,
                self.readings_today, self.error, self.model, self.firmware, self.pinger]  # fmt: skip


class Table(list[FleetRow]):
    """A snapshot's rows, and the views sorted out of them (kept as long as the rows are)."""

    def __init__(self, rows: Iterable[FleetRow] = ()) -> None:
        super().__init__(rows)
        self.views: dict[tuple[Any, ...], list[FleetRow]] = {}


def rows(
    records: Iterable[DeviceRecord],
    today: dict[str, tuple[int, int, int]],
    now: float,
    thresholds: health.Thresholds,
    held: dict[str, float] | None = None,
    owners: dict[str, str] | None = None,
) -> Table:
    out = Table()
    for r in records:
        state = health.view(r, now, thresholds, held)
        scheduled, ok, readings = today.get(r.cloud_id, (0, 0, 0))
        seen = r.last_success_at if r.protocol == PUSH else (r.last_success_at and r.last_timestamp)
        out.append(
            FleetRow(
                cloud_id=r.cloud_id, email=r.user_email, protocol=r.protocol,
                status=state.state, since=state.since, study=r.study,
                seen_at=float(seen) if seen else None,
                complete=round(100.0 * ok / scheduled, 1) if scheduled else None,
                readings_today=readings, error=state.detail or r.last_error,
                model=str((r.crawl or {}).get("model", "")),
                firmware=str((r.crawl or {}).get("firmware", "")),
                pinger=(owners or {}).get(r.cloud_id, "") if r.active and r.protocol != PUSH else "",
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class View:
    status: str = ""
    protocol: str = ""
    q: str = ""
    sort: str = "status"  # failing devices first, then by cloud_id
    desc: bool = False
    page: int = 1
    study: str = ""  # only this study's households ("" all those the session may see)

    def apply(self, everything: list[FleetRow]) -> tuple[list[FleetRow], int]:
        """(the rows of this page, how many match)."""
        matching = self.matching(everything)
        start = (self.page - 1) * PER_PAGE
        return matching[start : start + PER_PAGE], len(matching)

    def matching(self, everything: list[FleetRow]) -> list[FleetRow]:
        """The rows this view shows, in its order: of a snapshot's Table, worked out once per view
        and kept with the Table (a study's rows, a plain list, are sorted each time)."""
        if not isinstance(everything, Table):
            return self._match(everything)
        key = (self.status, self.study, self.protocol, self.q, self.sort, self.desc)
        found = everything.views.get(key)
        if found is None:
            found = everything.views[key] = self._match(everything)
        return found

    def _match(self, everything: list[FleetRow]) -> list[FleetRow]:
        q = self.q.strip().lower()
        found = [
            row
            for row in everything
            if (not self.status or row.status == self.status)
            and (not self.study or row.study == self.study)
            and (not self.protocol or row.protocol == self.protocol)
            and (not q or q in row.cloud_id or q in row.email.lower())
        ]
        found.sort(key=lambda row: row.cloud_id)
        found.sort(key=lambda row: row.sort_key(self.sort), reverse=self.desc)
        if self.desc:  # empty values last, whichever the direction
            found.sort(key=lambda row: row.sort_key(self.sort)[0])
        return found


class Snapshot:
    """The registry, today's counts and the table's rows, re-read in the background once older
    than SNAPSHOT_TTL_S: every request is answered from the last snapshot at once (only the
    first waits for one), so no request waits for a refresh."""

    def __init__(
        self, load: Callable[[], Coroutine[Any, Any, Any]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.load, self.clock = load, clock
        self._at = -1e9
        self._value: Any = None
        self._loading: asyncio.Task[Any] | None = None

    async def get(self) -> Any:
        stale = self.clock() - self._at > SNAPSHOT_TTL_S
        if (stale or self._value is None) and self._loading is None:
            self._loading = asyncio.create_task(self._refresh())
            self._loading.add_done_callback(_retrieved)
        if self._value is None:
            assert self._loading is not None
            await asyncio.shield(self._loading)  # the first snapshot (its error reaches this request)
        return self._value

    async def _refresh(self) -> None:
        try:
            value = await self.load()
            self._value, self._at = value, self.clock()
        finally:
            self._loading = None


def _retrieved(task: asyncio.Task[None]) -> None:
    """A refresh that failed (Redis away) leaves the last snapshot in use; say why once."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("the fleet table was not refreshed", extra={"reason": str(task.exception())})
