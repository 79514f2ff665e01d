"""Poll outcomes on their way to Redis, and readings on their way to disk, held until they land.

Outcomes are merged per device, so a Redis outage costs memory per device rather than per
poll, and the counters catch up in one pipelined write when Redis is back. A batch whose write
failed may have landed all the same (the reply lost with the connection): it is kept aside,
unmerged, with the token it was sent under, and sent again with that token before anything
newer, so Redis applies it exactly once (app.store's scripts skip a token they have seen).
Completeness counts go the same way (`flush_tally`). Readings whose
append failed (a full or failing disk) are kept in order and retried; while that backlog is
full the pinger stops polling rather than drop a reading it already received.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from app.completeness import HourCounts, Tally
from app.errors import StoreError, WriteError
from app.hourly import HourlyWriter
from app.store import PollUpdate, Store

log = logging.getLogger(__name__)


class Ledger:
    """Per-device counter updates not yet written to Redis."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[str, PollUpdate] = {}
        self.in_doubt: tuple[str, list[PollUpdate]] | None = None  # sent, not known to have landed
        self._flushing = False
        self._down_since: float | None = None

    def add(self, update: PollUpdate) -> None:
        held = self.pending.get(update.cloud_id)
        if held is None:
            self.pending[update.cloud_id] = update
        else:
            held.merge(update)

    async def flush(self, now: float) -> bool:
        """Write the batch in doubt, then everything pending; on failure keep what was not
        written for the next try (and what may have been, in doubt). True when all is written."""
        if self._flushing or (not self.pending and self.in_doubt is None):
            return not self.pending and self.in_doubt is None
        self._flushing = True
        try:
            if self.in_doubt is not None:
                token, updates = self.in_doubt
                await self.store.devices.record_polls(updates, token)
                self.in_doubt = None
            batch, self.pending = self.pending, {}
            if batch:
                self.in_doubt = (uuid.uuid4().hex, list(batch.values()))
                await self.store.devices.record_polls(self.in_doubt[1], self.in_doubt[0])
                self.in_doubt = None
        except StoreError as exc:
            if self._down_since is None:
                self._down_since = now
                log.error("Redis unreachable: holding counter updates", extra={"reason": str(exc)})
            return False
        finally:
            self._flushing = False
        if self._down_since is not None:
            log.info(
                "Redis reachable again: counters caught up",
                extra={"outage_s": round(now - self._down_since, 1)},
            )
            self._down_since = None
        return True


async def flush_tally(store: Store, tally: Tally, keep_s: float) -> None:
    """Add a tally's counts to Redis: first the batch in doubt under its own token, then what was
    counted since under a new one; a batch that fails stays in doubt (never merged, never added
    twice). Raises StoreError when Redis cannot take them now."""
    if tally.in_doubt is not None:
        token, counts = tally.in_doubt
        await store.completeness.add_completeness(counts, keep_s, token)
        tally.in_doubt = None
    taken: dict[tuple[str, int], HourCounts] = tally.take()
    if taken:
        tally.in_doubt = (uuid.uuid4().hex, taken)
        await store.completeness.add_completeness(taken, keep_s, tally.in_doubt[0])
        tally.in_doubt = None


@dataclass(frozen=True, slots=True)
class Unwritten:
    cloud_id: str
    polled_at: float  # picks the hourly file (a history line's own time)
    line: bytes
    update: PollUpdate | None  # counters to send once the line is on disk


class WriteBacklog:
    """Readings received but not yet on disk, retried in order; bounded, never dropped."""

    def __init__(self, writer: HourlyWriter, ledger: Ledger, limit: int = 100_000) -> None:
        self.writer = writer
        self.ledger = ledger
        self.limit = limit
        self.items: deque[Unwritten] = deque()

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def write(self, item: Unwritten) -> bool:
        """Append a reading now, or hold it behind older held ones (the cycle's `retry` writes
        them in order). True when written."""
        if self.items:
            self.items.append(item)
            return False
        try:
            self.writer.append(item.cloud_id, item.polled_at, item.line)
        except WriteError as exc:
            log.error("cannot append readings: holding them in memory", extra={"reason": str(exc)})
            self.items.append(item)
            return False
        if item.update is not None:
            self.ledger.add(item.update)
        return True

    def retry(self) -> int:
        """Write held readings oldest first until one fails; returns how many were written."""
        written = 0
        while self.items:
            item = self.items[0]
            try:
                self.writer.append(item.cloud_id, item.polled_at, item.line)
            except WriteError:
                break
            self.items.popleft()
            if item.update is not None:
                self.ledger.add(item.update)
            written += 1
        if written:
            log.info("held readings written", extra={"written": written, "still_held": len(self.items)})
        return written

    def rescue(self, folder: Path, now: float) -> Path | None:
        """At shutdown, put readings the hourly files never took into one file of their own, so a
        process exit does not lose them; returns it (None when nothing was held or it failed)."""
        if not self.items:
            return None
        path = folder / f"unwritten-{int(now)}-{os.getpid()}.jl"
        try:
            with path.open("ab") as f:
                f.writelines(item.line for item in self.items)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            log.error(
                "readings lost: neither their hourly files nor a rescue file could be written",
                extra={"readings": len(self.items), "rescue_file": str(path), "reason": str(exc)},
            )
            return None
        log.error(
            "readings saved to a rescue file; when the disk is fixed, `rainforest rescue FILE` files them",
            extra={"readings": len(self.items), "rescue_file": str(path)},
        )
        self.items.clear()
        return path
