"""Gaps refilled from a gateway's own history (EAGLE-100: `get_history_data`).

When a device that was silent for more than BACKFILL_AFTER_S answers again (or a pinger takes
over a device nobody polled for that long), its summations for the gap are asked from the
gateway and written as `kind: "summation"`, `source: "history"` lines into the hours they
belong to. Each is written once: lines at or before the device's `history_through` (kept in
Redis with `last_backfill`) and lines an hour's file already holds are skipped, so a refill
that runs twice, or again after a restart, writes nothing new. An hour rotate already shipped
gets the lines in a fresh file, which rotate stores as that hour's next part.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from app import lines
from app.eagle.client import GatewayClient
from app.eagle.readings import HistoryEntry, plausible_time
from app.errors import DeviceError, StoreError
from app.hourly import reading_path
from app.hours import hour_key
from app.pinger.fleet import DeviceState
from app.pinger.ledger import Unwritten, WriteBacklog
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)
MIN_REQUEST_GAP_S = 60.0  # at most one history request per device per minute
MAX_ATTEMPTS = 5
CONCURRENCY = 16  # history requests in flight at once, fleet-wide (a relay outage ends for all at once)


class Refiller:
    """Decides when a device's gap is refilled, and runs the refills off the poll path."""

    def __init__(
        self, settings: Settings, store: Store, backlog: WriteBacklog, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.store = store
        self.backlog = backlog
        self.clock = clock
        self.tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(CONCURRENCY)

    def on_failure(self, state: DeviceState, now: float) -> None:
        if state.failing_since is None:
            state.failing_since = now

    def on_success(
        self, cid: str, state: DeviceState, client: GatewayClient, now: float, reading_time: int | None
    ) -> None:
        """Called on every successful poll: notes a gap that ended, starts a due refill.

        The gap ends just before the reading that ended it (`reading_time`, the device's own
        clock): what came from that poll on is captured as usual, never twice."""
        if state.failing_since is not None:
            silent_s = now - state.failing_since
            if client.has_history and silent_s > self.settings.backfill_after_s:
                gap_start = state.failing_since
                if state.last_demand is not None:
                    gap_start = min(gap_start, float(state.last_demand))
                state.refill_from = gap_start
                state.refill_until = (reading_time or int(now)) - 1
                state.refill_attempts = 0
            state.failing_since = None
        if (
            state.refill_from is not None
            and not state.refilling
            and now - state.history_asked_at >= MIN_REQUEST_GAP_S
        ):
            state.refilling = True
            until = state.refill_until or int(now) - 1
            task = asyncio.create_task(self._refill(cid, state, client, state.refill_from, until))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _refill(
        self, cid: str, state: DeviceState, client: GatewayClient, gap_start: float, end: int
    ) -> None:
        start = int(max(gap_start, end - self.settings.backfill_max_s, state.history_through + 1))
        if state.enrolment is not None:  # history from outside the consent window is never fetched
            inside = state.enrolment.clamp(start, end)
            start, end = (math.ceil(inside[0]), int(min(inside[1], end))) if inside else (end, end)
        if start >= end:
            state.refill_from = None
            state.refilling = False
            return
        try:
            async with self._slots:
                state.history_asked_at = self.clock()
                entries = await client.history(
                    state.gateway, start, end, int(self.settings.summation_interval_s)
                )
            written, through = await self._write(cid, state, entries, start, end)
        except DeviceError as exc:
            state.refill_attempts += 1
            give_up = state.refill_attempts >= MAX_ATTEMPTS
            if give_up:
                state.refill_from = None
            log.warning(
                "history refill failed" + ("; giving up on this gap" if give_up else "; will retry"),
                extra={"cloud_id": cid, "reason": exc.reason, "attempt": state.refill_attempts},
            )
            return
        finally:
            state.refilling = False
        state.refill_from = state.refill_until = None
        state.history_through = max(state.history_through, through)
        summary = {
            "start": start, "end": end, "lines": written, "received": len(entries),
            "through": state.history_through, "at": round(self.clock(), 3),
        }  # fmt: skip
        log.info("history refill", extra={"cloud_id": cid, **summary})
        try:
            await self.store.devices.record_backfill(cid, summary)
        except StoreError as exc:  # the in-memory mark and the files still keep lines single
            log.warning("could not record a history refill", extra={"cloud_id": cid, "reason": str(exc)})

    async def _write(
        self, cid: str, state: DeviceState, entries: list[HistoryEntry], start: int, end: int
    ) -> tuple[int, int]:
        now = self.clock()
        fresh = sorted(  # history needs a time: an entry without one is no history
            (
                (t, e)
                for e in entries
                if (t := e.device_time) is not None
                and start <= t <= end
                and t > state.history_through
                and plausible_time(t, now)
            ),
            key=lambda te: te[0],
        )
        if not fresh:
            return 0, state.history_through
        hours = {hour_key(t) for t, _ in fresh}
        paths = [reading_path(self.settings.logs_dir, self.settings.file_prefix, cid, h) for h in hours]
        already = await asyncio.to_thread(known_readings, paths)
        polled_at = round(now, 3)
        written = 0
        for t, entry in fresh:
            if (entry.kind, t) in already:
                continue
            record = entry.record(cid, polled_at, source="history")
            line = orjson.dumps(record) + b"\n"
            # filed under the hour the reading belongs to, not the hour it reached us
            self.backlog.write(Unwritten(cid, float(t), line, None))
            written += 1
        return written, fresh[-1][0]

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def known_readings(paths: Iterable[Path]) -> set[lines.Identity]:
    """The identity (kind, device time) of every line in these hourly files (those that exist)."""
    found: set[lines.Identity] = set()
    for path in paths:
        if path.exists():
            found.update(lines.identity(r) for r in lines.identities(path.read_bytes()).records)
    return found
