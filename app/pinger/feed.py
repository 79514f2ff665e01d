"""How a pinger's fleet view keeps up with Redis: the change feed (device changes at once, and
other pingers letting devices go), and a full re-read every RESYNC_INTERVAL_S."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.errors import StoreError
from app.pinger.fleet import FleetView
from app.pinger.keeper import LeaseKeeper
from app.pinger.lifetime import Lifetime
from app.pinger.ownership import Ownership
from app.store import Store

log = logging.getLogger(__name__)


class FleetFeed:
    """`loaded` is set once the fleet has been read after subscribing (the pinger starts then)."""

    def __init__(
        self,
        store: Store,
        fleet: FleetView,
        ownership: Ownership,
        keeper: LeaseKeeper,
        pinger_id: str,
        resync_interval_s: float,
        clock: Callable[[], float],
        lifetime: Lifetime,
    ) -> None:
        self.store, self.fleet, self.ownership, self.keeper = store, fleet, ownership, keeper
        self.pinger_id, self.resync_interval_s, self.clock, self.lifetime = (
            pinger_id,
            resync_interval_s,
            clock,
            lifetime,
        )
        self.loaded = asyncio.Event()

    async def follow(self) -> None:
        """Apply published device changes. Each time the subscription is (re)established the
        fleet is re-read in full, so a change made before we were listening is not missed."""
        lost_at: float | None = None
        while not self.lifetime.stopping():
            try:
                async for change in self.store.changes.device_changes():
                    if change is None:
                        await self.fleet.resync()
                        self.loaded.set()
                        if lost_at is not None:
                            log.info(
                                "device change feed back", extra={"after_s": round(self.clock() - lost_at, 1)}
                            )
                            lost_at = None
                    elif change[0] == "device":
                        await self.fleet.refresh([change[1]])
                    elif change[1] != self.pinger_id and self.loaded.is_set():
                        self.keeper.soon()  # another pinger let devices go: claim our share now
                    if self.ownership.claims_waiting():
                        self.keeper.claim_soon()  # a new device of ours: claim it now, not next cycle
            except StoreError as exc:
                if lost_at is not None:
                    pass  # said once per outage
                elif self.loaded.is_set():
                    lost_at = self.clock()
                    log.warning("device change feed lost; reconnecting", extra={"reason": str(exc)})
                else:
                    log.error("cannot load the fleet yet; retrying", extra={"reason": str(exc)})
                await self.lifetime.sleep(1.0)

    async def resync_every(self) -> None:
        """Re-read the whole fleet every RESYNC_INTERVAL_S: what the feed may have missed."""
        while not self.lifetime.stopping():
            await self.lifetime.sleep(self.resync_interval_s)
            if self.lifetime.stopping():
                return
            try:
                await self.fleet.resync()
            except StoreError as exc:
                log.warning(
                    "fleet resync failed; polling the devices already known",
                    extra={"reason": str(exc)},
                )
                continue
            if self.ownership.claims_waiting():
                self.keeper.soon()
