"""The poll loop: a drift-free ticker starts a cycle every interval; `poll_once` is one cycle.

Within a cycle each device is polled at its own phase, so requests are spread evenly over the
interval. A device whose previous poll is still running is skipped (an overrun, counted), a
failing one waits out its backoff, and bounded concurrency plus a per-request timeout below
the interval keep a slow or dead device from delaying any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from app.credentials import Vault
from app.eagle.client import EagleCloudClient, new_session
from app.eagle.readings import DemandReading
from app.errors import DeviceError, StoreError, WriteError
from app.heartbeat import Heartbeat
from app.hourly import HourlyWriter
from app.lifecycle import serve_metrics
from app.logs import action
from app.pinger.backoff import Backoff
from app.pinger.fleet import DeviceState, FleetView, Ownership, OwnsAll
from app.pinger.ledger import Ledger, Unwritten, WriteBacklog
from app.pinger.metrics import PingerMetrics
from app.pinger.schedule import next_cycle_start, percentile
from app.settings import Settings
from app.store import PollUpdate, Store

log = logging.getLogger(__name__)
# Devices due within this window are launched together: one loop wake-up per window instead
# of one per device, at the cost of polling up to this much early.
LAUNCH_WINDOW_S = 0.05


@dataclass
class CycleStats:
    """What one cycle did; logged as one line when its last poll finishes."""

    cycle_start: float
    devices: int = 0
    ok: int = 0  # polls that returned a reading
    new_readings: int = 0  # distinct readings appended to files
    failed: int = 0
    skipped: int = 0  # previous poll still in flight: an overrun
    backoff: int = 0  # waiting out a backoff after failures
    held: int = 0  # not polled: readings are waiting for the disk
    errors: Counter[str] = field(default_factory=Counter)
    lateness_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)  # request round trips
    duration_s: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "cycle_start": self.cycle_start,
            "devices": self.devices,
            "ok": self.ok,
            "new_readings": self.new_readings,
            "failed": self.failed,
            "skipped": self.skipped,
            "backoff": self.backoff,
            "held": self.held,
            "errors": dict(self.errors),
            "duration_s": round(self.duration_s, 3),
            "lateness_p50_s": round(percentile(self.lateness_s, 0.5), 4),
            "lateness_p99_s": round(percentile(self.lateness_s, 0.99), 4),
            "latency_p50_s": round(percentile(self.latency_s, 0.5), 4),
            "latency_p99_s": round(percentile(self.latency_s, 0.99), 4),
        }


class Pinger:
    """Polls the owned fleet; build with `Pinger.create(settings)` or inject collaborators."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        vault: Vault,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        ownership: Ownership | None = None,
        metrics: PingerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.session = session
        self.clock = clock
        self.interval_s = settings.poll_interval_s
        self.client = EagleCloudClient(session, settings.eagle_cloud_url, settings.poll_timeout_s)
        self.fleet = FleetView(store, vault, ownership or OwnsAll())
        self.writer = HourlyWriter(settings.logs_dir, settings.file_prefix, settings.max_open_files)
        self.ledger = Ledger(store)
        self.backlog = WriteBacklog(self.writer, self.ledger)
        self.backoff = Backoff(self.interval_s, settings.backoff_max_s, settings.auth_backoff_s)
        self.heartbeat = Heartbeat(
            self.store, "pinger", lambda: {"devices": str(len(self.fleet.devices))}, clock
        )
        self.pinger_id = self.heartbeat.id
        self.metrics = metrics or PingerMetrics()
        self.totals: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._cycles: set[asyncio.Task[CycleStats]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._syncs: set[asyncio.Task[None]] = set()  # fsyncs and metrics feeding, awaited at close
        self._fleet_loaded = asyncio.Event()

    @classmethod
    def create(cls, settings: Settings, clock: Callable[[], float] = time.time) -> Pinger:
        metrics = PingerMetrics()
        serve_metrics(settings, "pinger", metrics.registry)  # first: a busy port opens nothing
        vault = Vault(settings.secret_key)
        store = Store.from_url(settings.redis_url)
        session = new_session(settings.max_concurrency, settings.eagle_tls_verify)
        return cls(settings, store, vault, session, clock=clock, metrics=metrics)

    # --- one cycle -----------------------------------------------------------------------------

    async def poll_once(self, cycle_start: float | None = None, spread: bool = True) -> CycleStats:
        """Poll every owned device once, each at its phase (or all at once with spread=False).

        The cycle is one logged action: every line it causes carries its `action_id`."""
        with action("poll_cycle"):
            return await self._poll_once(cycle_start, spread)

    async def _poll_once(self, cycle_start: float | None, spread: bool) -> CycleStats:
        loop = asyncio.get_running_loop()
        now = self.clock()
        cycle_start = now if cycle_start is None else cycle_start
        stats = CycleStats(cycle_start, devices=len(self.fleet.devices))
        started = loop.time()
        base = started + (cycle_start - now)  # the cycle start on the loop's clock
        # Finished polls are dropped at once, so a cycle's tasks die young instead of ageing
        # into the GC's oldest generation (whose full collections stall the loop for 100+ ms).
        tasks: set[asyncio.Task[None]] = set()
        self.backlog.retry()
        for phase, cid in self.fleet.schedule:
            target = base + phase * self.interval_s if spread else started
            delay = target - loop.time()
            if delay > LAUNCH_WINDOW_S:
                await asyncio.sleep(delay - LAUNCH_WINDOW_S / 2)
            if self._stop.is_set():
                break
            state = self.fleet.devices.get(cid)
            if state is not None and self._should_poll(state, stats):
                state.in_flight = True
                task = asyncio.create_task(self._poll(cid, state, target, stats))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.wait(tasks)
        stats.duration_s = loop.time() - started
        await self.ledger.flush(self.clock())
        self.totals.update(
            ok=stats.ok, new_readings=stats.new_readings, failed=stats.failed, skipped=stats.skipped
        )
        log.info("poll cycle", extra=stats.summary())
        self.metrics.record_cycle(stats, self.fleet.devices.values(), len(self.backlog.items))
        task = asyncio.create_task(asyncio.to_thread(self.metrics.observe, stats.latency_s, stats.lateness_s))
        self._syncs.add(task)  # awaited at close like the fsyncs, so none is left running
        task.add_done_callback(self._syncs.discard)
        return stats

    def _should_poll(self, state: DeviceState, stats: CycleStats) -> bool:
        if state.in_flight:
            stats.skipped += 1
            return False
        if state.retry_at and self.clock() < state.retry_at:
            stats.backoff += 1
            return False
        if self.backlog.full:
            stats.held += 1
            return False
        return True

    async def _poll(self, cid: str, state: DeviceState, target: float, stats: CycleStats) -> None:
        # Concurrency is bounded by the connection pool (MAX_CONCURRENCY per host): a request
        # waiting for a connection counts against its own timeout, so a backlog cannot build.
        loop = asyncio.get_running_loop()
        began = loop.time()
        stats.lateness_s.append(max(0.0, began - target))
        try:
            try:
                reading = await self.client.get_instantaneous_demand(state.creds)
            finally:
                stats.latency_s.append(loop.time() - began)
            self._on_reading(cid, state, reading, stats)
        except DeviceError as exc:
            self._on_failure(cid, state, exc, stats)
        except Exception as exc:  # a bug must cost one poll of one device, never the cycle
            log.exception("unexpected error polling a device", extra={"cloud_id": cid})
            self._on_failure(cid, state, DeviceError(f"internal error: {exc!r}"), stats)
        finally:
            state.in_flight = False

    def _on_reading(self, cid: str, state: DeviceState, reading: DemandReading, stats: CycleStats) -> None:
        polled_at = self.clock()
        stats.ok += 1
        if state.consecutive_failures:
            log.info(
                "device recovered",
                extra={"cloud_id": cid, "after_failures": state.consecutive_failures},
            )
        state.consecutive_failures = 0
        state.retry_at = 0.0
        state.last_error_kind = ""
        if not state.recovered:
            self._recover_last_timestamp(cid, state, polled_at)
        if reading.timestamp == state.last_ts:
            self.ledger.add(PollUpdate(cid, last_success_at=polled_at))
            return
        state.last_ts = reading.timestamp
        line = orjson.dumps(reading.record(cid, polled_at))
        update = PollUpdate(
            cid,
            events=1,
            first_timestamp=None if state.first_recorded else reading.device_time,
            last_timestamp=reading.device_time,
            last_success_at=polled_at,
            last_reading=line.decode(),
        )
        state.first_recorded = True  # HSETNX keeps the earliest; no need to send it again
        if self.backlog.write(Unwritten(cid, polled_at, line + b"\n", update)):
            stats.new_readings += 1

    def _recover_last_timestamp(self, cid: str, state: DeviceState, now: float) -> None:
        """After a restart the files may be ahead of Redis: never write a reading twice."""
        try:
            on_disk = self.writer.last_timestamp(cid, now)
        except WriteError as exc:
            log.warning(
                "cannot check the last reading on disk yet", extra={"cloud_id": cid, "reason": str(exc)}
            )
            return  # try again at the next reading; the in-memory timestamp still dedups
        if on_disk is not None:
            state.last_ts = on_disk
        state.recovered = True

    def _on_failure(self, cid: str, state: DeviceState, exc: DeviceError, stats: CycleStats) -> None:
        stats.failed += 1
        stats.errors[exc.kind] += 1
        state.consecutive_failures += 1
        delay = self.backoff.delay_s(state.consecutive_failures, exc)
        state.retry_at = self.clock() + delay if delay else 0.0
        if exc.kind != state.last_error_kind:
            log.warning(
                "device poll failed",
                extra={"cloud_id": cid, "reason": exc.reason, "retry_in_s": round(delay, 1)},
            )
            state.last_error_kind = exc.kind
        self.ledger.add(
            PollUpdate(cid, consecutive_failures=state.consecutive_failures, last_error=exc.reason)
        )

    # --- the process -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop starting polls; `run` then finishes in-flight ones, flushes and returns."""
        self._stop.set()

    async def start(self) -> None:
        """Start the background tasks and wait until the change feed has loaded the fleet
        (it retries while Redis is away), so the fleet is read once, after subscribing."""
        self._background = [
            asyncio.create_task(self._follow_changes()),
            asyncio.create_task(self._resync_every()),
            asyncio.create_task(self.heartbeat.run(self._stop)),
        ]
        loaded, stopped = (
            asyncio.create_task(self._fleet_loaded.wait()),
            asyncio.create_task(self._stop.wait()),
        )
        await asyncio.wait({loaded, stopped}, return_when=asyncio.FIRST_COMPLETED)
        loaded.cancel()
        stopped.cancel()
        if self._stop.is_set():
            return
        gc.collect()
        gc.freeze()  # the fleet loaded at start lives for the process: keep it out of GC scans
        log.info(
            "pinger started",
            extra={
                "pinger_id": self.pinger_id,
                "devices": len(self.fleet.devices),
                "interval_s": self.interval_s,
            },
        )

    async def run(self) -> None:
        """Tick cycles until `request_stop`, then drain and close."""
        try:
            await self.start()
            cycle_start = next_cycle_start(self.clock(), self.interval_s)
            while not self._stop.is_set():
                await self._sleep(cycle_start - self.clock())
                if self._stop.is_set():
                    break
                now = self.clock()
                if now - cycle_start >= self.interval_s:
                    log.warning(
                        "pinger fell behind: cycles skipped",
                        extra={"behind_s": round(now - cycle_start, 2)},
                    )
                    cycle_start = next_cycle_start(now, self.interval_s)
                    continue
                self._close_past_hours(now)
                task = asyncio.create_task(self.poll_once(cycle_start))
                self._cycles.add(task)
                task.add_done_callback(self._cycles.discard)
                cycle_start += self.interval_s
            if self._cycles:
                await asyncio.gather(*self._cycles)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop background work, write what is held, close files, Redis and HTTP; log totals."""
        self._stop.set()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.backlog.retry()
        self.backlog.rescue(self.settings.data_dir, self.clock())
        await self.ledger.flush(self.clock())
        await asyncio.gather(*self._syncs)
        await asyncio.to_thread(HourlyWriter.sync, self.writer.close())
        await self.heartbeat.remove()
        await self.store.close()
        await self.session.close()
        log.info(
            "pinger stopped",
            extra={
                **self.totals,
                "held_readings": len(self.backlog.items),
                "held_counter_updates": len(self.ledger.pending),
            },
        )

    def _close_past_hours(self, now: float) -> None:
        paths = self.writer.close_hours_before(now)
        if paths:
            task = asyncio.create_task(asyncio.to_thread(HourlyWriter.sync, paths))
            self._syncs.add(task)
            task.add_done_callback(self._syncs.discard)
            log.info("hour closed", extra={"files": len(paths)})

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when a stop is requested."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _follow_changes(self) -> None:
        """Apply published device changes. Each time the subscription is (re)established the
        fleet is re-read in full, so a change made before we were listening is not missed."""
        while not self._stop.is_set():
            try:
                async for cloud_id in self.store.device_changes():
                    if cloud_id is None:
                        await self.fleet.resync()
                        self._fleet_loaded.set()
                    else:
                        await self.fleet.refresh([cloud_id])
            except StoreError as exc:
                if self._fleet_loaded.is_set():
                    log.warning("device change feed lost; reconnecting", extra={"reason": str(exc)})
                else:
                    log.error("cannot load the fleet yet; retrying", extra={"reason": str(exc)})
                await self._sleep(1.0)

    async def _resync_every(self) -> None:
        while not self._stop.is_set():
            await self._sleep(self.settings.resync_interval_s)
            if self._stop.is_set():
                return
            try:
                await self.fleet.resync()
            except StoreError as exc:
                log.warning(
                    "fleet resync failed; polling the devices already known",
                    extra={"reason": str(exc)},
                )
