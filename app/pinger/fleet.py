"""The pinger's view of the fleet: the devices it holds leases on and what it knows of each.

The view is rebuilt from Redis every `resync_interval_s` and patched as soon as a change is
published or a lease changes hands; when Redis is away the pinger keeps polling the devices it
already knows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.credentials import Vault
from app.devices import PUSH, DeviceRecord
from app.eagle.gateway import Gateway
from app.errors import CredentialError, StoreError
from app.health import Tracker
from app.lines import Seen
from app.pinger.ownership import Ownership
from app.pinger.schedule import phase_fraction
from app.store import Store
from app.studies import Enrolment

log = logging.getLogger(__name__)
PINGER_RECENT = 8  # demand readings remembered per device; an older re-send is looked up in its files


@dataclass(slots=True)
class DeviceState:
    """What the pinger keeps per device between polls."""

    gateway: Gateway
    phase: float
    consecutive_failures: int = 0
    retry_at: float = 0.0  # monotonic time before which the device is not polled (0: no backoff)
    backoff_skipped: int = 0  # polls sat out in the current streak of failures
    last_demand: int | None = None  # the newest device_time of the demand readings written
    seen: Seen = field(default_factory=lambda: Seen(recent=PINGER_RECENT))  # the rule of app.lines
    last_kw: float | None = None  # its value (for the fleet's total demand)
    last_keys: dict[str, tuple[object, ...]] = field(default_factory=dict)  # summation/price: last line's key
    meter: int | None = None  # the MeterMacId its readings came with, last time (a change is an event)
    last_summation: tuple[int, float] | None = None  # (meter, delivered kWh) of the last summation line
    recovered: bool = False  # last readings checked against the files on disk
    last_error_kind: str = ""
    in_flight: bool = False
    first_recorded: bool = False  # first_timestamp already sent to Redis by this process
    due: dict[str, float] = field(default_factory=dict)  # kind → when summation/price are next captured
    failing_since: float | None = None  # start of the current silence (a gap to refill)
    history_through: int = 0  # device_time of the latest line refilled from history
    refill_from: float | None = None  # a refill waiting to run, from this time
    refill_until: int | None = None  # … to this device time (just before the reading that ended the gap)
    refill_attempts: int = 0
    history_asked_at: float = 0.0
    refilling: bool = False
    health: Tracker = field(default_factory=Tracker)  # its state by cause (app.health)
    said_state: str = ""  # the state last said in the log
    enrolment: Enrolment | None = None  # its study's consent window: never polled outside it


class FleetView:
    """Owned, active devices by cloud_id, kept in step with Redis."""

    def __init__(
        self,
        store: Store,
        vault: Vault,
        ownership: Ownership,
        build: Callable[[DeviceRecord, str], Gateway],
        clock: Callable[[], float],
        backfill_after_s: float,
    ) -> None:
        self.store = store
        self.vault = vault
        self.ownership = ownership
        self.build = build  # record and its decrypted secret → how to reach the gateway
        self.clock = clock
        self.backfill_after_s = backfill_after_s
        self.devices: dict[str, DeviceState] = {}
        self.on_leave: Callable[[set[str]], object] = lambda cloud_ids: None  # devices no longer ours
        self.schedule: list[tuple[float, str]] = []  # (phase, cloud_id) sorted by phase

    async def resync(self) -> None:
        """Rebuild from the active set; raises StoreError and then leaves the view as it was."""
        active = await self.store.devices.active_ids()
        await self.ownership.sync(active)
        ids = [cid for cid in active if self.ownership.owns(cid)]
        records = await self.store.devices.load_devices(ids)
        fresh: dict[str, DeviceState] = {}
        for record in records:
            state = self._state_for(record)
            if state is not None:
                fresh[record.cloud_id] = state
        added = fresh.keys() - self.devices.keys()
        removed = self.devices.keys() - fresh.keys()
        self.devices = fresh
        self._reschedule()
        if removed:
            self.on_leave(removed)
        if added or removed:
            log.info(
                "fleet resynced",
                extra={"devices": len(fresh), "added": len(added), "removed": len(removed)},
            )

    async def refresh(self, cloud_ids: Iterable[str]) -> None:
        """Apply published changes to a few devices (added, updated, deactivated)."""
        ids = list(cloud_ids)
        try:
            records = {r.cloud_id: r for r in await self.store.devices.load_devices(ids)}
        except StoreError as exc:
            log.warning("could not load changed devices", extra={"reason": str(exc)})
            return
        left: set[str] = set()
        for cid in ids:
            record = records.get(cid)
            self.ownership.note(cid, record is not None and record.active and record.protocol != PUSH)
            state = self._state_for(record) if record else None
            if state is None:
                if self.devices.pop(cid, None) is not None:
                    left.add(cid)
                    log.info("device no longer polled", extra={"cloud_id": cid})
            else:
                self.devices[cid] = state
        self._reschedule()
        if left:
            self.on_leave(left)

    def _state_for(self, record: DeviceRecord) -> DeviceState | None:
        if not record.active or record.protocol == PUSH or not self.ownership.owns(record.cloud_id):
            return None
        try:
            gateway = self.build(record, self.vault.decrypt(record.encrypted_secret))
        except CredentialError as exc:
            log.error(
                "device credentials unreadable",
                extra={"cloud_id": record.cloud_id, "reason": str(exc)},
            )
            return None
        old = self.devices.get(record.cloud_id)
        if old is not None:
            if old.gateway != gateway:
                # Fixed credentials or a new address get polled at the next chance, whatever the
                # old backoff was.
                old.gateway = gateway
                old.retry_at = 0.0
            old.enrolment = record.enrolment  # a window changed or ended takes effect at once
            return old  # same object: backoff, dedup and in-flight state carry over
        return DeviceState(
            gateway=gateway,
            phase=phase_fraction(record.cloud_id),
            last_demand=int(record.last_timestamp) if record.last_timestamp else None,
            consecutive_failures=record.consecutive_failures,
            failing_since=self._silent_since(record),
            history_through=int((record.last_backfill or {}).get("through", 0)),
            health=Tracker.from_record(record),
            said_state=record.health_fields.get("health", ""),
            enrolment=record.enrolment,
        )

    def _silent_since(self, record: DeviceRecord) -> float | None:
        """A device failing (or unpolled: no pinger ran) for a while before we took it has a gap
        that its history can fill once it answers; the gap starts at its last success."""
        if record.last_success_at is None:
            return None
        if record.consecutive_failures or self.clock() - record.last_success_at > self.backfill_after_s:
            return record.last_success_at
        return None

    def _reschedule(self) -> None:
        self.schedule = sorted((s.phase, cid) for cid, s in self.devices.items())
