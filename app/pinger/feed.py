"""How a pinger's fleet view keeps up with Redis: the change feed (device changes at once, and
other pingers letting devices go), and a full re-read every RESYNC_INTERVAL_S."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.errors import StoreError

if TYPE_CHECKING:
    from app.pinger.loop import Pinger

log = logging.getLogger(__name__)


class FleetFeed:
    def __init__(self, pinger: Pinger) -> None:
        self.pinger = pinger

    async def follow(self) -> None:
        """Apply published device changes. Each time the subscription is (re)established the
        fleet is re-read in full, so a change made before we were listening is not missed."""
        p = self.pinger
        lost_at: float | None = None
        while not p._stop.is_set():
            try:
                async for change in p.store.device_changes():
                    if change is None:
                        await p.fleet.resync()
                        p._fleet_loaded.set()
                        if lost_at is not None:
                            log.info(
                                "device change feed back", extra={"after_s": round(p.clock() - lost_at, 1)}
                            )
                            lost_at = None
                    elif change[0] == "device":
                        await p.fleet.refresh([change[1]])
                    elif change[1] != p.pinger_id and p._fleet_loaded.is_set():
                        p.keeper.soon()  # another pinger let devices go: claim our share now
                    if p.ownership.claims_waiting():
                        p.keeper.claim_soon()  # a new device of ours: claim it now, not next cycle
            except StoreError as exc:
                if lost_at is not None:
                    pass  # said once per outage
                elif p._fleet_loaded.is_set():
                    lost_at = p.clock()
                    log.warning("device change feed lost; reconnecting", extra={"reason": str(exc)})
                else:
                    log.error("cannot load the fleet yet; retrying", extra={"reason": str(exc)})
                await p._sleep(1.0)

    async def resync_every(self) -> None:
        """Re-read the whole fleet every RESYNC_INTERVAL_S: what the feed may have missed."""
        p = self.pinger
        while not p._stop.is_set():
            await p._sleep(p.settings.resync_interval_s)
            if p._stop.is_set():
                return
            try:
                await p.fleet.resync()
            except StoreError as exc:
                log.warning(
                    "fleet resync failed; polling the devices already known",
                    extra={"reason": str(exc)},
                )
                continue
            if p.ownership.claims_waiting():
                p.keeper.soon()
