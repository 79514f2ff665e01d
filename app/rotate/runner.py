"""One rotate pass over every closed hour, and the `--every` loop around it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.archive.backend import Archive
from app.erasure.local import LocalSweep
from app.erasure.run import Erasure
from app.errors import ArchiveError, ConfigError, StoreError
from app.heartbeat import Heartbeat
from app.hours import Hour
from app.lifecycle import serve_metrics
from app.logs import action
from app.research.claims import CompactionBook
from app.rotate.claim import Busy, Claim, clean_tmp
from app.rotate.daily import DailyCompaction
from app.rotate.duplicates import repeated
from app.rotate.metrics import RotateMetrics
from app.rotate.scan import LocalFile, closed_files
from app.rotate.ship import Placed, place
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one pass did; `fields()` is its summary log line."""

    pass_id: str
    files: int = 0  # closed files found
    stored: int = 0  # newly stored in the archive (as part 1 or a further part)
    new_parts: int = 0  # of those, stored beside an earlier, different part
    already: int = 0  # found identical in the archive (an earlier pass died before deleting)
    busy: int = 0  # open for writing; left for the next pass
    failed: int = 0  # could not be read locally; left in place
    left: int = 0  # not tried because the archive failed or a stop was asked
    source_bytes: int = 0
    stored_bytes: int = 0
    partial_lines: int = 0  # files whose last line was cut by a crash (shipped as they are)
    seconds: float = 0.0
    error: ArchiveError | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0

    @property
    def complete(self) -> bool:
        """Nothing left behind: no error, and no file busy, failed or not tried."""
        return self.ok and self.busy == 0 and self.left == 0

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in ("pass_id", "files", "stored", "new_parts", "already", "busy", "failed", "left",
                      "source_bytes", "stored_bytes", "partial_lines")
        }  # fmt: skip
        out["seconds"] = round(self.seconds, 3)
        if self.error is not None:
            out["archive_error"] = self.error.kind
        return out


@dataclass(frozen=True)
class Shipped:
    claim: Claim
    placed: Placed
    source_bytes: int
    stored_bytes: int
    partial: int
    duplicates: int = 0  # readings this (further) part repeats from the earlier ones


class Rotator:
    """Ships closed hours from DATA_DIR/logs to the archive; one instance per process."""

    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        store: Store | None,
        *,
        clock: Callable[[], float] = time.time,
        metrics: RotateMetrics | None = None,
        progress: bool = False,
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.store = store
        self.clock = clock
        self.metrics = metrics or RotateMetrics()
        self.progress = progress
        self.tmp_dir = settings.data_dir / "tmp"
        self._stop = asyncio.Event()
        self._redis_warned = False

    def plan(self, hour: str | None = None) -> list[LocalFile]:
        """The closed files a pass would take now (for `--dry-run`)."""
        return closed_files(self.settings.logs_dir, self.clock(), self.settings.rotate_grace_s, hour)

    async def pass_once(self, hour: str | None = None) -> PassReport:
        """One pass: a logged action whose id is the pass's `pass_id`."""
        with action("rotate_pass") as action_id:
            return await self._pass_once(hour, action_id)

    async def _pass_once(self, hour: str | None, pass_id: str) -> PassReport:
        report = PassReport(pass_id)
        started = time.monotonic()
        if not await self._sweep_erased(report):
            self._finish(report)
            return report
        files = await asyncio.to_thread(self.plan, hour)
        report.files = len(files)
        if files:
            await asyncio.to_thread(clean_tmp, self.tmp_dir)
            try:
                await asyncio.to_thread(self.archive.check)
            except ArchiveError as exc:
                report.error, report.left = exc, len(files)
            else:
                await self._ship_all(files, report)
        report.seconds = time.monotonic() - started
        self._finish(report)
        if self.store is not None:
            summary = {k: str(v) for k, v in report.fields().items()}
            summary.update(ended_at=str(self.clock()), ok="1" if report.ok else "0", archive=self.archive.url)
            with contextlib.suppress(StoreError):
                await self.store.archive.record_rotate_pass(summary)
        return report

    async def _sweep_erased(self, report: PassReport) -> bool:
        """Erased households' files are deleted, never shipped (app.erasure.local); False when
        they cannot be told apart (marks but no SECRET_KEY): then nothing is shipped."""
        if self.store is None:
            return True
        try:
            await LocalSweep(self.settings, self.store, self.clock).once()
        except ConfigError as exc:
            report.error = ArchiveError(f"nothing shipped: {exc}", kind="error")
            return False
        except StoreError as exc:  # Redis away: ship as before (docs/studies.md says what this means)
            log.warning("erasure marks not read: Redis unreachable", extra={"reason": str(exc)})
        return True

    async def _resume_erasures(self) -> None:
        if self.store is None:
            return
        try:
            await Erasure(self.settings, self.store, self.archive, self.clock).resume_pending()
        except (StoreError, ArchiveError, ConfigError) as exc:
            log.warning("an erasure could not go on; the next pass tries again", extra={"reason": str(exc)})

    async def run(self, every_s: float) -> None:
        """Pass after pass, `every_s` apart, until `request_stop` (in-flight files finish first)."""
        log.info("rotate started", extra={"archive": self.archive.url, "every_s": every_s})
        daily = DailyCompaction(self.settings, self.archive, self.store) if self.store is not None else None
        while not self._stop.is_set():
            began = time.monotonic()
            await self.pass_once()
            await self._resume_erasures()
            if daily is not None:
                await daily.maybe_run(self._stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, every_s - (time.monotonic() - began)))
        log.info("rotate stopped")

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> asyncio.Event:
        """Set once a stop is asked (the loop's heartbeat ends with it)."""
        return self._stop

    async def _ship_all(self, files: list[LocalFile], report: PassReport) -> None:
        gate = asyncio.Semaphore(self.settings.rotate_concurrency)
        bar = _Progress(len(files)) if self.progress else None

        async def one(item: LocalFile) -> None:
            async with gate:
                if report.error is not None or self._stop.is_set():
                    report.left += 1
                    return
                try:
                    await self._ship_one(item, report)
                finally:
                    if bar is not None:
                        bar.advance(report.stored_bytes)

        try:
            await asyncio.gather(*(one(item) for item in files))
        finally:
            if bar is not None:
                bar.close()

    async def _ship_one(self, item: LocalFile, report: PassReport) -> None:
        extra = await self._completeness(item)
        try:
            shipped = await asyncio.to_thread(self._pack_and_place, item, extra)
        except Busy:
            report.busy += 1
            self.metrics.files.labels("busy").inc()
            return
        except ArchiveError as exc:
            if report.error is None:
                report.error = exc
            report.left += 1
            return
        except OSError as exc:
            report.failed += 1
            self.metrics.files.labels("failed").inc()
            report.errors.append(f"{item.path}: {exc.strerror or exc}")
            log.error(
                "cannot ship a local file; it stays in place",
                extra={"cloud_id": item.device_hour.cloud_id, "path": str(item.path),
                       "error": exc.strerror or str(exc), "pass_id": report.pass_id},
            )  # fmt: skip
            return
        placed = shipped.placed
        await self._record(
            item, placed, shipped.duplicates
        )  # before the delete: a crash after it cannot count twice
        await asyncio.to_thread(shipped.claim.finish)
        report.source_bytes += shipped.source_bytes
        report.partial_lines += shipped.partial
        if placed.stored:
            report.stored += 1
            report.stored_bytes += shipped.stored_bytes
            report.new_parts += placed.part > 1
            self.metrics.files.labels("stored").inc()
            self.metrics.bytes.labels("source").inc(shipped.source_bytes)
            self.metrics.bytes.labels("stored").inc(shipped.stored_bytes)
        else:
            report.already += 1
            self.metrics.files.labels("already_archived").inc()
        if shipped.partial:
            log.warning(
                "shipped a file whose last line was cut by a crash; readers skip that line",
                extra={"cloud_id": item.device_hour.cloud_id, "key": placed.key, "pass_id": report.pass_id},
            )
        if placed.part > 1 and placed.stored:
            log.info(
                "stored a further part beside an earlier, different one",
                extra={"cloud_id": item.device_hour.cloud_id, "key": placed.key, "pass_id": report.pass_id,
                       "duplicates": shipped.duplicates},
            )  # fmt: skip

    async def _completeness(self, item: LocalFile) -> tuple[tuple[str, str], ...]:
        """The device-hour's completeness counts, stored in the object's metadata (S3)."""
        if self.store is None:
            return ()
        hour = Hour.parse(item.device_hour.hour).number
        try:
            rows = await self.store.completeness.completeness([item.device_hour.cloud_id], [hour])
        except StoreError:
            return ()  # the object goes up without them: completeness stays in Redis
        if not rows:
            return ()
        row = rows[0]
        return tuple(
            (f"completeness-{name.replace('_', '-')}", str(row[name]))
            for name in ("scheduled", "ok", "readings", "longest_gap_s")
        )

    def _pack_and_place(self, item: LocalFile, extra: tuple[tuple[str, str], ...] = ()) -> Shipped:
        """Blocking: claim, gzip, store, confirm. The claim stays held until `finish`."""
        claim = Claim(item.path)
        try:
            upload, partial = claim.pack(self.tmp_dir)
            upload = dataclasses.replace(upload, extra=extra)
            try:
                placed = place(self.archive, item.device_hour, upload, self.settings.rotate_readback)
            finally:
                upload.path.unlink(missing_ok=True)
            duplicates = 0
            if placed.stored and placed.part > 1:
                duplicates = repeated(self.archive, item.device_hour, placed.part, item.path, self.tmp_dir)
        except BaseException:
            claim.release()
            raise
        return Shipped(claim, placed, upload.source_bytes, upload.size, partial, duplicates)

    async def _record(self, item: LocalFile, placed: Placed, duplicates: int) -> None:
        if self.store is None:
            return
        cloud_id, hour = item.device_hour.cloud_id, item.device_hour.hour
        try:
            await self.store.archive.record_archived(
                cloud_id, hour, new_hour=placed.stored and placed.part == 1
            )
            if placed.stored:
                await CompactionBook(self.store.redis).note(
                    Hour.parse(hour).day.key
                )  # (re)compact that day once closed
            if duplicates:
                keep_s = self.settings.completeness_days * 86400
                await self.store.completeness.add_duplicates(
                    cloud_id, Hour.parse(hour).number, duplicates, keep_s
                )
        except StoreError as exc:
            if not self._redis_warned:
                self._redis_warned = True
                log.warning(
                    "archived-hour counts not updated; files are shipped all the same",
                    extra={"error": str(exc)},
                )

    def _finish(self, report: PassReport) -> None:
        now = self.clock()
        m = self.metrics
        m.pass_seconds.observe(report.seconds)
        m.last_pass.set(now)
        m.pending.set(report.busy + report.failed + report.left)
        if report.error is not None:
            m.failures.labels(report.error.kind).inc()
            log.error(
                "archive trouble: local files kept for the next pass",
                extra={"reason": report.error.kind, "error": str(report.error), "archive": self.archive.url,
                       "files_left": report.left, "pass_id": report.pass_id},
            )  # fmt: skip
        elif report.failed == 0:
            m.last_success.set(now)
        log.info("rotate pass", extra=report.fields())
        if report.files or report.error is not None:
            self._redis_warned = False


class _Progress:
    """A rich progress bar on stderr, for people running a pass at a terminal."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("rotate"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[mb]:.1f} MB stored"),
            TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        )  # fmt: skip
        self.task = self.progress.add_task("rotate", total=total, mb=0.0)
        self.progress.start()

    def advance(self, stored_bytes: int) -> None:
        self.progress.update(self.task, advance=1, mb=stored_bytes / 1e6)

    def close(self) -> None:
        self.progress.stop()


class RotateService:
    """`rotate --every`: the loop as a lifecycle service (SIGTERM finishes in-flight files)."""

    def __init__(self, settings: Settings, archive: Archive, every_s: float) -> None:
        self.settings, self.every_s = settings, every_s
        self.store = Store.for_settings(settings, max_connections=4)
        self.rotator = Rotator(settings, archive, self.store)

    async def run(self) -> None:
        serve_metrics(self.settings, "rotate", self.rotator.metrics.registry)
        heartbeat = asyncio.create_task(Heartbeat(self.store, "rotate").run(self.rotator.stopping))
        try:
            await self.rotator.run(self.every_s)
        finally:
            self.rotator.request_stop()
            await heartbeat
            await self.store.close()

    def request_stop(self) -> None:
        self.rotator.request_stop()
