"""The poll loop: a drift-free ticker starts a cycle every interval; `poll_once` is one cycle.

Within a cycle each device is polled at its own phase, so requests are spread evenly over the
interval. A device whose previous poll is still running is skipped (an overrun, counted), a
failing one waits out its backoff, and bounded concurrency plus a per-request timeout below
the interval keep a slow or dead device from delaying any other.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable

import aiohttp

import app.pinger.capture as capture
from app.completeness import Tally
from app.credentials import Vault
from app.devices import DeviceRecord
from app.eagle.client import Clients, GatewayClient, new_session
from app.eagle.gateway import Gateway, gateway_for
from app.eagle.readings import Reading, Readings, plausible_time
from app.erasure.local import LocalSweep
from app.errors import DeviceBadReply, DeviceError, StoreError
from app.health import ACTIONS, Thresholds
from app.heartbeat import Heartbeat, process_id
from app.hourly import HourlyWriter
from app.leases import Leases
from app.lifecycle import serve_metrics, settle
from app.logs import action
from app.pinger.backoff import Backoff
from app.pinger.chores import Chores
from app.pinger.feed import FleetFeed
from app.pinger.fleet import DeviceState, FleetView
from app.pinger.keeper import LeaseKeeper
from app.pinger.ledger import Ledger, WriteBacklog
from app.pinger.lifetime import Lifetime
from app.pinger.metrics import PingerMetrics
from app.pinger.ownership import Ownership
from app.pinger.recorder import Recorder
from app.pinger.refill import Refiller
from app.pinger.schedule import next_cycle_start
from app.pinger.stats import CycleStats
from app.settings import Settings
from app.store import PollUpdate, Store, follow_failovers

log = logging.getLogger(__name__)
# Devices due within this window are launched together: one loop wake-up per window instead
# of one per device, at the cost of polling up to this much early.
LAUNCH_WINDOW_S = 0.05


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
        monotonic: Callable[[], float] = time.monotonic,
        ownership: Ownership | None = None,
        metrics: PingerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.session = session
        self.clock = clock  # wall time: what lines are stamped and filed by
        self.monotonic = monotonic  # what cycles and backoffs are scheduled by: a clock step moves no poll
        self.interval_s = settings.poll_interval_s
        self.clients = Clients(session, settings.poll_timeout_s, settings.local_request_gap_s)
        self.heartbeat = Heartbeat(store, "pinger", lambda: {"devices": str(len(self.fleet.devices))}, clock)
        self.pinger_id = self.heartbeat.id
        self.metrics = metrics or PingerMetrics()
        self.ownership = ownership or Ownership(
            Leases(store.redis), self.pinger_id, self.interval_s, settings.lease_s,
            on_change=self.metrics.ownership_changed, on_handover=self.metrics.handover.observe,
        )  # fmt: skip
        self.fleet = FleetView(store, vault, self.ownership, self._gateway, clock, settings.backfill_after_s)
        self.writer = HourlyWriter(settings.logs_dir, settings.file_prefix, settings.max_open_files)
        self.fleet.on_leave = self.writer.release  # a device's files are unlocked once it is not ours
        self.ledger = Ledger(store)
        self.backlog = WriteBacklog(self.writer, self.ledger)
        self.tally = Tally()
        self.recorder = Recorder(self.writer, self.backlog, self.ledger, self.tally)
        self.lifetime = Lifetime()
        self.chores = Chores(
            settings, store, self.clients, self.tally, lambda: self.fleet.devices, clock, self.lifetime
        )
        self.refiller = Refiller(settings, store, self.backlog, clock)
        self.cadence = capture.Cadence(settings)
        self.thresholds = Thresholds.from_settings(settings)
        self.backoff = Backoff(self.interval_s, settings.backoff_max_s, settings.auth_backoff_s)
        self.totals: Counter[str] = Counter()
        self._implausible_said: set[str] = set()
        self._cycles: set[asyncio.Task[CycleStats]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._queue: list[tuple[float, str]] | None = None  # the running cycle's launches to come
        self._cycle_base = 0.0  # the running cycle's start on the loop's clock
        self.keeper = LeaseKeeper(
            self.ownership,
            self.interval_s,
            self.lifetime,
            lambda: self.ledger.flush(self.clock()),
            self._leases_changed,
        )
        self.feed = FleetFeed(
            store, self.fleet, self.ownership, self.keeper, self.pinger_id, settings.resync_interval_s, clock,
            self.lifetime,
        )  # fmt: skip

    @classmethod
    def create(
        cls,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Pinger:
        metrics = PingerMetrics()
        serve_metrics(settings, "pinger", metrics.registry)  # first: a busy port opens nothing
        vault = Vault(settings.secret_key)
        store = Store.for_settings(settings)
        agent = f"rainforest-logger pinger/{process_id()}"
        session = new_session(settings.max_concurrency, settings.eagle_tls_verify, agent)
        return cls(settings, store, vault, session, clock=clock, monotonic=monotonic, metrics=metrics)

    def _gateway(self, record: DeviceRecord, secret: str) -> Gateway:
        return gateway_for(record, secret, self.settings.eagle_cloud_url, self.settings.eagle_tls_verify)

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
        # A heap, so devices whose lease arrives mid-cycle join it at their own phase (`_join`).
        queue = self._queue = list(self.fleet.schedule)
        self._cycle_base = base
        while queue:
            phase, cid = heapq.heappop(queue)
            target = base + phase * self.interval_s if spread else started
            delay = target - loop.time()
            if delay > LAUNCH_WINDOW_S:
                await asyncio.sleep(delay - LAUNCH_WINDOW_S / 2)
            if self.lifetime.stopping():
                break
            state = self.fleet.devices.get(cid)
            if state is not None and state.enrolment is not None and not state.enrolment.covers(self.clock()):
                stats.outside += 1  # outside its household's consent window: not polled, not scheduled
                continue
            if state is not None:
                self.tally.scheduled(cid, cycle_start + phase * self.interval_s)
            if state is not None and self._should_poll(cid, state, stats):
                state.in_flight = True
                task = asyncio.create_task(self._poll(cid, state, target, stats))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if self._queue is queue:
            self._queue = None
        while tasks:
            await asyncio.wait(tasks)
        stats.duration_s = loop.time() - started
        await self.ledger.flush(self.clock())
        self.chores.send_tally(self.clock())
        self.totals.update(
            ok=stats.ok, new_readings=stats.new_readings, summations=stats.summations, prices=stats.prices,
            failed=stats.failed, skipped=stats.skipped,
        )  # fmt: skip
        log.info("poll cycle", extra=stats.summary())
        self.metrics.record_cycle(stats, self.fleet.devices.values(), len(self.backlog.items))
        # awaited at close like the fsyncs, so none is left running
        self.lifetime.spawn(asyncio.to_thread(self.metrics.observe, stats.latency_s, stats.lateness_s))
        return stats

    def _should_poll(self, cid: str, state: DeviceState, stats: CycleStats) -> bool:
        if state.in_flight:
            stats.skipped += 1
            return False
        if state.retry_at and self.monotonic() < state.retry_at:
            stats.backoff += 1
            state.backoff_skipped += 1
            if state.health.settle(self.clock(), self.thresholds):  # its trouble has lasted: say so
                self._health_changed(cid, state)
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
        gateway = state.gateway
        client = self.clients.for_protocol(gateway.protocol, gateway.api)
        stats.protocols[gateway.protocol] += 1
        try:
            wanted = self.cadence.wanted(state, self.clock())
            try:
                readings = await client.poll(gateway, wanted)
            finally:
                stats.latency_s.append(loop.time() - began)
            self._on_readings(cid, state, readings, stats, client)
            if not client.separate_commands:  # EAGLE-100 extras are marked as each command succeeds
                self.cadence.captured(state, wanted, self.clock())
            extras = [k for k in wanted if k != "demand"] if client.separate_commands else []
            if extras:
                await self._extras(cid, state, client, extras, target, stats)
        except DeviceError as exc:
            self._on_failure(cid, state, exc, stats)
        except Exception as exc:  # a bug must cost one poll of one device, never the cycle
            log.exception("unexpected error polling a device", extra={"cloud_id": cid})
            self._on_failure(cid, state, DeviceError(f"internal error: {exc!r}"), stats)
        finally:
            state.in_flight = False
            if self.fleet.devices.get(cid) is not state:  # it left while this poll was out
                self.writer.release([cid])

    async def _extras(
        self,
        cid: str,
        state: DeviceState,
        client: GatewayClient,
        kinds: list[str],
        target: float,
        stats: CycleStats,
    ) -> None:
        """EAGLE-100 summation and price as commands of their own, after the demand poll and
        within this device's slot, so they never delay its next scheduled poll."""
        loop = asyncio.get_running_loop()
        deadline = target + self.interval_s * 0.9 - self.settings.local_request_gap_s * state.gateway.local
        for kind in kinds:
            budget = min(self.settings.poll_timeout_s, deadline - loop.time())
            if budget < 0.1:
                return  # no time left in this slot: still due, asked at the next poll
            try:
                readings = await client.extra(state.gateway, kind, budget)
            except DeviceError as exc:
                stats.extra_failed += 1
                log.debug("extra command failed", extra={"cloud_id": cid, "kind": kind, "reason": exc.reason})
                return
            self.cadence.captured(state, frozenset([kind]), self.clock())
            self._on_readings(cid, state, readings, stats, client, extra=True)

    def _on_readings(
        self,
        cid: str,
        state: DeviceState,
        readings: Readings,
        stats: CycleStats,
        client: GatewayClient,
        extra: bool = False,
    ) -> None:
        polled_at = self.clock()
        if state.enrolment is not None and not state.enrolment.covers(polled_at):
            return  # the answer came after the consent window closed: nothing of it is kept
        demand, summation, price = readings.demand, readings.summation, readings.price
        self._meter(cid, state, demand or summation or price, polled_at)
        if demand is not None and not self._plausible(cid, demand, polled_at, stats):
            demand = None
        if summation is not None and not self._plausible(cid, summation, polled_at, stats):
            summation = None
        if price is not None and not self._plausible(cid, price, polled_at, stats):
            price = None
        if not extra:
            reading_time = demand.device_time if demand is not None else None
            self._on_success(cid, state, polled_at, stats, client, reading_time)
            newest = state.last_demand
            if demand is not None:
                if self.recorder.demand(cid, state, demand, polled_at):
                    stats.new_readings += 1
            else:  # the gateway answered, but its meter had no demand value (with a time) this time
                self.ledger.add(PollUpdate(cid, last_success_at=polled_at))
            moved = state.last_demand is not None and (newest is None or state.last_demand > newest)
            tracker = state.health
            if (
                tracker.fresh(polled_at, self.thresholds)
                if moved
                else tracker.stale(polled_at, self.thresholds)
            ):
                self._health_changed(cid, state)
        for reading in (summation, price):
            if reading is not None and self.recorder.extra(cid, state, reading, polled_at):
                if reading.kind == "summation":
                    stats.summations += 1
                else:
                    stats.prices += 1

    def _meter(self, cid: str, state: DeviceState, reading: Reading | None, polled_at: float) -> None:
        """A reading from another meter than the last (a swap, a move) is an event on the device:
        said once, kept in its crawl history (and so on its page)."""
        meter = reading.meter_mac_id if reading is not None else 0
        if not meter:
            return
        old, state.meter = state.meter, meter
        if old is None or old == meter:
            return
        before, after = f"0x{old:016x}", f"0x{meter:016x}"
        log.warning("the gateway's meter changed", extra={"cloud_id": cid, "from": before, "to": after})
        keep = self.settings.crawl_history
        self.lifetime.spawn(self._note_meter(cid, polled_at, before, after, keep))

    async def _note_meter(self, cid: str, at: float, before: str, after: str, keep: int) -> None:
        try:
            await self.store.crawls.record_meter_change(cid, at, before, after, keep)
        except StoreError as exc:
            log.warning("a meter change not kept", extra={"cloud_id": cid, "reason": str(exc)})

    def _plausible(self, cid: str, reading: Reading, polled_at: float, stats: CycleStats) -> bool:
        """Is the reading's own time to be believed? When not, it is counted and said once."""
        if plausible_time(reading.device_time, polled_at):
            return True
        stats.implausible += 1
        if cid not in self._implausible_said:  # once per device and process; the cycle line counts
            self._implausible_said.add(cid)
            log.warning(
                "reading not written: its own time is before 2000 or more than a day ahead",
                extra={"cloud_id": cid, "kind": reading.kind, "device_time": reading.device_time},
            )
        return False

    def _on_success(
        self,
        cid: str,
        state: DeviceState,
        polled_at: float,
        stats: CycleStats,
        client: GatewayClient,
        reading_time: int | None,
    ) -> None:
        stats.ok += 1
        self.tally.ok(cid, polled_at)
        if state.consecutive_failures:
            log.info(
                "device recovered",
                extra={"cloud_id": cid, "after_failures": state.consecutive_failures},
            )
        state.consecutive_failures = 0
        state.retry_at = 0.0
        state.backoff_skipped = 0
        state.last_error_kind = ""
        if not state.recovered:
            self.recorder.recover(cid, state, polled_at)
        self.refiller.on_success(cid, state, client, polled_at, reading_time)

    def _on_failure(self, cid: str, state: DeviceState, exc: DeviceError, stats: CycleStats) -> None:
        stats.failed += 1
        stats.errors[exc.kind] += 1
        state.consecutive_failures += 1
        self.refiller.on_failure(state, self.clock())
        delay = self.backoff.delay_s(state.consecutive_failures, state.backoff_skipped, exc)
        state.retry_at = self.monotonic() + delay if delay else 0.0
        previous_kind = state.last_error_kind
        if exc.kind != state.last_error_kind:
            log.warning(
                "device poll failed",
                extra={"cloud_id": cid, "reason": exc.reason, "retry_in_s": round(delay, 1)},
            )
            state.last_error_kind = exc.kind
        changed = [(self.clock(), exc.reason)] if exc.kind != previous_kind else []
        self.ledger.add(
            PollUpdate(
                cid, consecutive_failures=state.consecutive_failures, last_error=exc.reason, failures=changed
            )
        )
        if state.health.failed(exc.kind, self.clock(), self.thresholds):
            reply = exc.reply if isinstance(exc, DeviceBadReply) else ""
            self._health_changed(cid, state, {"bad_reply": reply} if reply else {})

    def _health_changed(self, cid: str, state: DeviceState, more: dict[str, str] | None = None) -> None:
        """Store a device's new state or condition; a new state is said in the log."""
        tracker = state.health
        fields = {**tracker.fields(), **(more or {})}
        self.ledger.add(PollUpdate(cid, consecutive_failures=state.consecutive_failures, fields=fields))
        if tracker.state != state.said_state:
            state.said_state = tracker.state
            log.info(
                "device health changed",
                extra={"cloud_id": cid, "health": tracker.state, "since": tracker.since,
                       "action": ACTIONS[tracker.state]},
            )  # fmt: skip

    # --- the process -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop starting polls; `run` then finishes in-flight ones, flushes and returns."""
        self.lifetime.stop()

    async def start(self) -> None:
        """Start the background tasks and wait until the change feed has loaded the fleet
        (it retries while Redis is away), so the fleet is read once, after subscribing."""
        self._background = [
            asyncio.create_task(self.feed.follow()),
            asyncio.create_task(self.feed.resync_every()),
            asyncio.create_task(self.heartbeat.run(self.lifetime.stopped)),
            asyncio.create_task(self.chores.crawls()),
            # an erased household's files on this host are deleted here, within SWEEP_S
            asyncio.create_task(LocalSweep(self.settings, self.store, self.clock).run(self.lifetime.stopped)),
            asyncio.create_task(follow_failovers(self.settings, self.lifetime.stopped)),  # said in one line
        ]
        loaded, stopped = (
            asyncio.create_task(self.feed.loaded.wait()),
            asyncio.create_task(self.lifetime.stopped.wait()),
        )
        await asyncio.wait({loaded, stopped}, return_when=asyncio.FIRST_COMPLETED)
        loaded.cancel()
        stopped.cancel()
        if self.lifetime.stopping():
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
            settle()
            # cycles start at wall-clock multiples of the interval, then keep time on the
            # monotonic clock: a wall clock stepped back (NTP, a VM resumed) stalls nothing
            wall = self.clock()
            due = self.monotonic() + next_cycle_start(wall, self.interval_s) - wall
            while not self.lifetime.stopping():
                await self.lifetime.sleep(due - self.monotonic())
                if self.lifetime.stopping():
                    break
                late_s = self.monotonic() - due
                if late_s >= self.interval_s:
                    log.warning("pinger fell behind: cycles skipped", extra={"behind_s": round(late_s, 2)})
                    due += (late_s // self.interval_s) * self.interval_s
                    continue
                now = self.clock()
                self._close_past_hours(now)
                await self.keeper.each_cycle()
                task = asyncio.create_task(self.poll_once(now - late_s))
                self._cycles.add(task)
                task.add_done_callback(self._cycles.discard)
                due += self.interval_s
            if self._cycles:
                await asyncio.gather(*self._cycles)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop background work, write what is held, close files, Redis and HTTP; log totals."""
        self.lifetime.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.refiller.close()
        self.chores.send_tally(self.clock(), force=True)
        self.backlog.retry()
        self.backlog.rescue(self.settings.data_dir, self.clock())
        await self.ledger.flush(self.clock())
        await self.keeper.settle()
        await self.ownership.leave()  # after the flush: the next owners start from these readings
        await self.lifetime.drain()
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

    # --- leases ----------------------------------------------------------------------------

    async def _leases_changed(self, cloud_ids: set[str]) -> None:
        """Devices gained or lost by a lease round: the fleet view follows, and devices gained
        join the running cycle at their phase."""
        await self.fleet.refresh(cloud_ids)
        self._join(cloud_ids)

    def _join(self, cloud_ids: set[str]) -> None:
        queue = self._queue
        if queue is None:
            return
        now = asyncio.get_running_loop().time()
        for cid in cloud_ids:
            state = self.fleet.devices.get(cid)
            if state is not None and self._cycle_base + state.phase * self.interval_s >= now:
                heapq.heappush(queue, (state.phase, cid))

    def _close_past_hours(self, now: float) -> None:
        paths = self.writer.close_hours_before(now)
        if paths:
            self.lifetime.spawn(asyncio.to_thread(HourlyWriter.sync, paths))
            log.info("hour closed", extra={"files": len(paths)})
