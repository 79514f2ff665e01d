"""The rotate loop's daily chore: compact each closed, shipped day to Parquet (app.research.compact).

Rotate notes the day of every hourly object it stores (`Store.want_compaction`); once an hour the
loop compacts the noted days that are over and fully shipped from this host, one at a time, in a
thread, and forgets a day once it is compacted. A late part notes its day again, so that day is
compacted anew into a further version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from app.archive.backend import Archive
from app.errors import ArchiveError, StoreError, ValidationError
from app.research.compact import Compactor
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)
CHECK_EVERY_S = 3600.0


class DailyCompaction:
    def __init__(
        self, settings: Settings, archive: Archive, store: Store, clock: Callable[[], float] = time.time
    ) -> None:
        self.compactor = Compactor(settings, archive, clock)
        self.store, self.clock = store, clock
        self.enabled = settings.compact_archive
        self._checked_at = -1e18

    async def maybe_run(self, stopping: asyncio.Event) -> int:
        """Compact what is due, at most once every CHECK_EVERY_S; returns the days compacted."""
        if not self.enabled or self.clock() - self._checked_at < CHECK_EVERY_S:
            return 0
        self._checked_at = self.clock()
        try:
            due = await self.store.compaction_due()
        except StoreError as exc:
            log.warning("cannot tell which days to compact: Redis unreachable", extra={"reason": str(exc)})
            return 0
        done = 0
        for day in due:
            if stopping.is_set():
                break
            try:
                self.compactor.check_closed(day)
            except ValidationError:
                continue  # not over, or not all shipped yet: next time
            try:
                await asyncio.to_thread(self.compactor.compact, day)
                await self.store.compacted(day)
                done += 1
            except ArchiveError as exc:
                log.error("compaction failed; tried again in an hour", extra={"day": day, "reason": str(exc)})
            except StoreError as exc:
                log.warning(
                    "compacted, but could not note it (done again next time)",
                    extra={"day": day, "reason": str(exc)},
                )
        return done
