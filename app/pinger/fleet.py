"""The pinger's view of the fleet: which devices it owns and what it knows of each.

The view is rebuilt from Redis every `resync_interval_s` and patched as soon as a change is
published; when Redis is away the pinger keeps polling the devices it already knows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from app.credentials import Vault
from app.devices import DeviceRecord
from app.eagle.client import Credentials
from app.eagle.readings import Y2K_EPOCH
from app.errors import CredentialError, StoreError
from app.pinger.schedule import phase_fraction
from app.store import Store

log = logging.getLogger(__name__)


class Ownership(Protocol):
    """Decides which devices this pinger polls, so several pingers can share a fleet."""

    def owns(self, cloud_id: str) -> bool: ...


class OwnsAll:
    """The single-pinger deployment: this process owns every active device."""

    def owns(self, cloud_id: str) -> bool:
        return True


@dataclass(slots=True)
class DeviceState:
    """What the pinger keeps per device between polls."""

    creds: Credentials
    phase: float
    consecutive_failures: int = 0
    retry_at: float = 0.0  # wall-clock time before which the device is not polled
    last_ts: int | None = None  # device TimeStamp of the last reading written
    recovered: bool = False  # last_ts checked against the files on disk
    last_error_kind: str = ""
    in_flight: bool = False
    first_recorded: bool = False  # first_timestamp already sent to Redis by this process


class FleetView:
    """Owned, active devices by cloud_id, kept in step with Redis."""

    def __init__(self, store: Store, vault: Vault, ownership: Ownership) -> None:
        self.store = store
        self.vault = vault
        self.ownership = ownership
        self.devices: dict[str, DeviceState] = {}
        self.schedule: list[tuple[float, str]] = []  # (phase, cloud_id) sorted by phase

    async def resync(self) -> None:
        """Rebuild from the active set; raises StoreError and then leaves the view as it was."""
        ids = [cid for cid in await self.store.active_ids() if self.ownership.owns(cid)]
        records = await self.store.load_devices(ids)
        fresh: dict[str, DeviceState] = {}
        for record in records:
            state = self._state_for(record)
            if state is not None:
                fresh[record.cloud_id] = state
        added = fresh.keys() - self.devices.keys()
        removed = self.devices.keys() - fresh.keys()
        self.devices = fresh
        self._reschedule()
        if added or removed:
            log.info(
                "fleet resynced",
                extra={"devices": len(fresh), "added": len(added), "removed": len(removed)},
            )

    async def refresh(self, cloud_ids: Iterable[str]) -> None:
        """Apply published changes to a few devices (added, updated, deactivated)."""
        ids = list(cloud_ids)
        try:
            records = {r.cloud_id: r for r in await self.store.load_devices(ids)}
        except StoreError as exc:
            log.warning("could not load changed devices", extra={"reason": str(exc)})
            return
        for cid in ids:
            record = records.get(cid)
            state = self._state_for(record) if record else None
            if state is None:
                if self.devices.pop(cid, None) is not None:
                    log.info("device no longer polled", extra={"cloud_id": cid})
            else:
                self.devices[cid] = state
        self._reschedule()

    def _state_for(self, record: DeviceRecord) -> DeviceState | None:
        if not record.active or not self.ownership.owns(record.cloud_id):
            return None
        try:
            creds = Credentials(record.cloud_id, record.user_email, self.vault.decrypt(record.password_token))
        except CredentialError as exc:
            log.error(
                "device credentials unreadable",
                extra={"cloud_id": record.cloud_id, "reason": str(exc)},
            )
            return None
        old = self.devices.get(record.cloud_id)
        if old is not None:
            if old.creds != creds:
                # Fixed credentials get polled at the next chance, whatever the old backoff was.
                old.creds = creds
                old.retry_at = 0.0
            return old  # same object: backoff, dedup and in-flight state carry over
        last_ts = int(record.last_timestamp) - Y2K_EPOCH if record.last_timestamp else None
        return DeviceState(
            creds=creds,
            phase=phase_fraction(record.cloud_id),
            last_ts=last_ts,
            consecutive_failures=record.consecutive_failures,
        )

    def _reschedule(self) -> None:
        self.schedule = sorted((s.phase, cid) for cid, s in self.devices.items())
