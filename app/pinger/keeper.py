"""When a pinger renews its leases: once a cycle (waited for when the lease might run out before
the next), at once when another pinger lets devices go, half a second after a new device of ours
is published (a bulk import's devices claimed together), and just after another pinger's lease
runs out unrenewed (a killed pinger's devices are claimed at once). Rounds never overlap; what
changed is applied to the fleet view, and devices gained join the running cycle at their phase.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.pinger.lifetime import Lifetime
from app.pinger.ownership import Ownership

log = logging.getLogger(__name__)
CLAIM_BATCH_S = 0.5  # new devices of ours are claimed this soon after they are published


class LeaseKeeper:
    """`before_release` runs before devices are let go (the next owner starts from what it
    wrote); `on_change` gets the devices gained or lost by a round."""

    def __init__(
        self,
        ownership: Ownership,
        interval_s: float,
        lifetime: Lifetime,
        before_release: Callable[[], Awaitable[object]],
        on_change: Callable[[set[str]], Awaitable[None]],
    ) -> None:
        self.ownership, self.interval_s, self.lifetime = ownership, interval_s, lifetime
        self.before_release, self.on_change = before_release, on_change
        self._renewing: asyncio.Task[None] | None = None
        self._again = False
        self._claim: asyncio.TimerHandle | None = None
        self._lapse: asyncio.TimerHandle | None = None

    async def each_cycle(self) -> None:
        """Renew once a cycle, in the background; when the lease may run out before the next
        one, wait for it first (briefly: with Redis away the pinger polls on, unfenced)."""
        self.soon()
        if not self.ownership.fresh() and self._renewing is not None:
            await asyncio.wait({self._renewing}, timeout=min(1.0, self.interval_s / 4))

    def soon(self) -> None:
        """A round now, or right after the one running."""
        if self.lifetime.stopping():
            return  # a stopping pinger claims nothing more; `close` hands everything over
        if self._renewing is not None:
            self._again = True
            return
        self._renewing = asyncio.create_task(self._renew())
        self._renewing.add_done_callback(self._renewed)

    def claim_soon(self) -> None:
        if self._claim is None:
            self._claim = asyncio.get_running_loop().call_later(CLAIM_BATCH_S, self._claimed)

    async def settle(self) -> None:
        """Wait for a round in flight (at a stop, before the leases are handed over)."""
        for timer in (self._claim, self._lapse):
            if timer is not None:
                timer.cancel()
        if self._renewing is not None:
            await asyncio.gather(self._renewing, return_exceptions=True)

    def _claimed(self) -> None:
        self._claim = None
        self.soon()

    def _renewed(self, task: asyncio.Task[None]) -> None:
        self._renewing = None
        if self._again and not self.lifetime.stopping():
            self._again = False
            self.soon()

    async def _renew(self) -> None:
        try:
            if self.ownership.releasing():
                await self.before_release()  # the next owner starts from these readings
            changed = await self.ownership.renew()
            if changed:
                await self.on_change(changed)
            self._watch_lapse()
        except Exception:  # a bug here must not stop the renewals
            log.exception("lease renewal failed")

    def _watch_lapse(self) -> None:
        """Another pinger that stopped renewing loses its lease before our next round would come:
        renew just after it runs out."""
        lapse_in = self.ownership.next_lapse_in_s
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None
        if lapse_in is not None and lapse_in < self.interval_s and not self.lifetime.stopping():
            self._lapse = asyncio.get_running_loop().call_later(max(0.0, lapse_in) + 0.25, self.soon)
