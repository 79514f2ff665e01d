"""A server's background work for push devices: counters to Redis in batches, files of closed
hours fsynced and closed, and silent devices marked failing ("no upload for N s")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from app.errors import StoreError
from app.hourly import HourlyWriter
from app.pinger.ledger import flush_tally
from app.push.receiver import PushReceiver
from app.store import PollUpdate, Store

log = logging.getLogger(__name__)
FLUSH_EVERY_S = 0.5
WATCH_EVERY_S = 10.0


async def mark_silent(store: Store, stale_s: float, now: float) -> int:
    """Mark push devices with no upload for `stale_s` as failing; returns how many."""
    records = await store.devices.load_devices(await store.push.push_device_ids())
    updates = []
    for record in records:
        if record.last_success_at is None:
            continue  # never uploaded: "never", not failing
        silent_s = now - record.last_success_at
        if silent_s >= stale_s:
            updates.append(
                PollUpdate(
                    record.cloud_id,
                    consecutive_failures=max(1, int(silent_s // stale_s)),
                    last_error=f"no upload for {int(silent_s)} s",
                )
            )
    if updates:
        await store.devices.record_polls(updates)
    return len(updates)


class PushUpkeep:
    """Runs beside the HTTP server until its stop event is set, then flushes what is held."""

    def __init__(
        self,
        store: Store,
        receiver: PushReceiver,
        stale_s: float,
        keep_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.stale_s, self.keep_s, self.clock = store, stale_s, keep_s, clock
        self.writer, self.ledger, self.tally = receiver.writer, receiver.ledger, receiver.tally

    async def run(self, stop: asyncio.Event) -> None:
        watch_every_s = min(WATCH_EVERY_S, self.stale_s / 2)
        next_watch = self.clock() + watch_every_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY_S)
            now = self.clock()
            await self.ledger.flush(now)
            await self._add_completeness()
            closed = self.writer.close_hours_before(now)
            if closed:
                await asyncio.to_thread(HourlyWriter.sync, closed)
            if now >= next_watch:
                next_watch = now + watch_every_s
                try:
                    await mark_silent(self.store, self.stale_s, now)
                except StoreError as exc:
                    log.warning("could not check push devices for silence", extra={"reason": str(exc)})
        await self.ledger.flush(self.clock())
        await self._add_completeness()
        await asyncio.to_thread(HourlyWriter.sync, self.writer.close())

    async def _add_completeness(self) -> None:
        with contextlib.suppress(StoreError):  # held, or in doubt: sent again at the next flush
            await flush_tally(self.store, self.tally, self.keep_s)
