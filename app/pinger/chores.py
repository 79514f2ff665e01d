"""The pinger's work beside polling: completeness counts and the fleet's demand to Redis once a
minute (off the poll path), and crawls of its gateways every CRAWL_INTERVAL_S or when asked."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from app.completeness import Tally
from app.crawl import crawl
from app.eagle.client import Clients
from app.errors import StoreError
from app.hours import Hour
from app.pinger.fleet import DeviceState
from app.pinger.ledger import flush_tally
from app.pinger.lifetime import Lifetime
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)
CRAWL_CHECK_S = 5.0  # how soon a "crawl now" is taken up
TALLY_EVERY_S = 60.0  # completeness counts go to Redis this often (and at each hour's end)
FRESH_S = 300.0  # a device's last reading counts in the fleet's demand while this recent


class Chores:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        clients: Clients,
        tally: Tally,
        devices: Callable[[], Mapping[str, DeviceState]],
        clock: Callable[[], float],
        lifetime: Lifetime,
    ) -> None:
        self.settings, self.store, self.clients, self.tally = settings, store, clients, tally
        self.devices, self.clock, self.lifetime = devices, clock, lifetime
        self._tally_sent_at = clock()

    def send_tally(self, now: float, force: bool = False) -> None:
        """Completeness counts to Redis once a minute and when an hour ends (off the poll path)."""
        if (
            not force
            and now - self._tally_sent_at < TALLY_EVERY_S
            and Hour.at(now) == Hour.at(self._tally_sent_at)
        ):
            return
        self._tally_sent_at = now
        tally = self.tally
        if not tally.counts and tally.in_doubt is None:
            return
        fresh = [
            state.last_kw
            for state in self.devices().values()
            if state.last_kw is not None
            and state.last_demand is not None
            and now - state.last_demand < FRESH_S
        ]
        self.lifetime.spawn(self._add_completeness(now, sum(fresh), len(fresh)))

    async def _add_completeness(self, now: float, fleet_kw: float, devices: int) -> None:
        try:
            await flush_tally(self.store, self.tally, self.settings.completeness_days * 86400)
        except StoreError as exc:  # held (or in doubt) and sent with the next batch
            log.warning("completeness counts held: Redis unreachable", extra={"reason": str(exc)})
            return
        if not devices or self.lifetime.stopping():  # a stopping pinger's minute would count twice
            return
        try:
            await self.store.fleet.add_fleet_demand(now, fleet_kw, devices)
        except StoreError as exc:  # this minute's figure only; completeness is already in
            log.warning("the fleet's demand for this minute not recorded", extra={"reason": str(exc)})

    async def crawls(self) -> None:
        """Crawl every owned gateway a minute after start and then every CRAWL_INTERVAL_S, and
        at once those someone asked for (the pages' "crawl now")."""
        every_s = self.settings.crawl_interval_s
        next_full = self.clock() + min(60.0, every_s) if every_s else float("inf")
        while not self.lifetime.stopping():
            await self.lifetime.sleep(CRAWL_CHECK_S)
            devices = self.devices()
            try:
                wanted = await self.store.crawls.take_wanted_crawls(devices)
            except StoreError:
                continue
            targets = [devices[cid].gateway for cid in wanted if cid in devices]
            if self.clock() >= next_full:
                targets = [state.gateway for state in devices.values()]
                next_full = self.clock() + every_s
            if targets and not self.lifetime.stopping():
                await crawl(self.store, self.clients, targets, self.settings.crawl_history, self.clock)
