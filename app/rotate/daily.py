"""The rotate loop's daily chore: compact each closed, shipped day to Parquet (app.research.compact).

Rotate notes the day of every hourly object it stores (`CompactionBook.note`); once an hour the
loop compacts the noted days that are over and fully shipped from this host, one at a time, in a
thread, each under a claim that other rotate hosts respect (app.research.claims), and forgets a
day once it is compacted, unless a late part noted it again meanwhile: that day is compacted
anew into a further version. A stop request ends a compaction between two devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from app.archive.backend import Archive
from app.errors import ArchiveError, ConfigError, Interrupted, StoreError, ValidationError
from app.heartbeat import process_id
from app.research.claims import CompactionBook
from app.research.compact import Compactor
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)
CHECK_EVERY_S = 3600.0
CLAIM_S = 300.0  # a compaction claim runs this long unrenewed (renewed every third of it)


class DailyCompaction:
    def __init__(
        self, settings: Settings, archive: Archive, store: Store, clock: Callable[[], float] = time.time
    ) -> None:
        self.compactor = Compactor(settings, archive, clock)
        self.store, self.secret_key = store, settings.secret_key
        self.book = CompactionBook(store.redis)
        self.clock = clock
        self.enabled = settings.compact_archive
        self.holder = process_id()
        self._checked_at = -1e18

    async def maybe_run(self, stopping: asyncio.Event) -> int:
        """Compact what is due, at most once every CHECK_EVERY_S; returns the days compacted."""
        if not self.enabled or self.clock() - self._checked_at < CHECK_EVERY_S:
            return 0
        self._checked_at = self.clock()
        try:
            due = await self.book.due()
        except StoreError as exc:
            log.warning("cannot tell which days to compact: Redis unreachable", extra={"reason": str(exc)})
            return 0
        done = 0
        for day, noted in due.items():
            if stopping.is_set():
                break
            try:
                self.compactor.check_closed(day)
            except ValidationError:
                continue  # not over, or not all shipped yet: next time
            done += await self._claimed(day, noted, stopping)
        return done

    async def _claimed(self, day: str, noted: int, stopping: asyncio.Event) -> int:
        """Compact a day under a claim no other rotate host can take meanwhile; 1 when done."""
        try:
            if not await self.book.claim(day, self.holder, CLAIM_S):
                log.info("another rotate host is compacting this day", extra={"day": day})
                return 0
        except StoreError as exc:
            log.warning(
                "cannot claim a day to compact: Redis unreachable", extra={"day": day, "reason": str(exc)}
            )
            return 0
        try:  # erased households are never compacted back in
            self.compactor.marks = await self.store.erasures.marks(self.secret_key)
        except (StoreError, ConfigError) as exc:
            log.warning(
                "cannot read the erasure marks; compacted later", extra={"day": day, "reason": str(exc)}
            )
            await self.book.release(day, self.holder)
            return 0
        keeper = asyncio.create_task(self._keep_claim(day))
        try:
            await asyncio.to_thread(self.compactor.compact, day, True, stopping.is_set)
        except Interrupted:
            log.info(
                "compaction stopped part-way: the process is stopping; done again later", extra={"day": day}
            )
            return 0
        except ArchiveError as exc:
            log.error("compaction failed; tried again in an hour", extra={"day": day, "reason": str(exc)})
            return 0
        finally:
            keeper.cancel()
            with contextlib.suppress(StoreError):
                await self.book.release(day, self.holder)
        try:
            if not await self.book.done(day, noted):
                log.info("a late part came while compacting: the day is compacted again", extra={"day": day})
        except StoreError as exc:
            log.warning(
                "compacted, but could not note it (done again next time)",
                extra={"day": day, "reason": str(exc)},
            )
        return 1

    async def _keep_claim(self, day: str) -> None:
        while True:
            await asyncio.sleep(CLAIM_S / 3)
            try:
                if not await self.book.renew(day, self.holder, CLAIM_S):
                    log.error("lost the claim on a day being compacted", extra={"day": day})
                    return
            except StoreError as exc:
                log.warning("cannot renew a compaction claim", extra={"day": day, "reason": str(exc)})
