"""Poll outcomes on their way to Redis, and readings on their way to disk, held until they land.

Outcomes are merged per device, so a Redis outage costs memory per device rather than per
poll, and the counters catch up in one pipelined write when Redis is back. Readings whose
append failed (a full or failing disk) are kept in order and retried; while that backlog is
full the pinger stops polling rather than drop a reading it already received.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from app.errors import StoreError, WriteError
from app.hourly import HourlyWriter
from app.store import PollUpdate, Store

log = logging.getLogger(__name__)


class Ledger:
    """Per-device counter updates not yet written to Redis."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[str, PollUpdate] = {}
        self._flushing = False
        self._down_since: float | None = None

    def add(self, update: PollUpdate) -> None:
        held = self.pending.get(update.cloud_id)
        if held is None:
            self.pending[update.cloud_id] = update
        else:
            held.merge(update)

    async def flush(self, now: float) -> bool:
        """Write everything pending; on failure keep it for the next try. True when written."""
        if self._flushing or not self.pending:
            return not self.pending
        self._flushing = True
        batch, self.pending = self.pending, {}
        try:
            await self.store.record_polls(list(batch.values()))
        except StoreError as exc:
            for cid, newer in self.pending.items():  # updates that arrived during the attempt
                if cid in batch:
                    batch[cid].merge(newer)
                else:
                    batch[cid] = newer
            self.pending = batch
            if self._down_since is None:
                self._down_since = now
                log.error("Redis unreachable: holding counter updates", extra={"reason": str(exc)})
            return False
        finally:
            self._flushing = False
        if self._down_since is not None:
            log.info(
                "Redis reachable again: counters caught up",
                extra={"devices": len(batch), "outage_s": round(now - self._down_since, 1)},
            )
            self._down_since = None
        return True


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
            "readings saved to a rescue file: append them to their hourly files once the disk is fixed",
            extra={"readings": len(self.items), "rescue_file": str(path)},
        )
        self.items.clear()
        return path
