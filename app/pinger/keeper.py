"""When a pinger renews its leases: once a cycle (waited for when the lease might run out before
the next), at once when another pinger lets devices go, half a second after a new device of ours
is published (a bulk import's devices claimed together), and just after another pinger's lease
runs out unrenewed (a killed pinger's devices are claimed at once). Rounds never overlap; what
changed is applied to the fleet view, and devices gained join the running cycle at their phase.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.pinger.loop import Pinger

log = logging.getLogger(__name__)
CLAIM_BATCH_S = 0.5  # new devices of ours are claimed this soon after they are published


class LeaseKeeper:
    def __init__(self, pinger: Pinger) -> None:
        self.pinger = pinger
        self._renewing: asyncio.Task[None] | None = None
        self._again = False
        self._claim: asyncio.TimerHandle | None = None
        self._lapse: asyncio.TimerHandle | None = None

    async def each_cycle(self) -> None:
        """Renew once a cycle, in the background; when the lease may run out before the next
        one, wait for it first (briefly: with Redis away the pinger polls on, unfenced)."""
        self.soon()
        if not self.pinger.ownership.fresh() and self._renewing is not None:
            await asyncio.wait({self._renewing}, timeout=min(1.0, self.pinger.interval_s / 4))

    def soon(self) -> None:
        """A round now, or right after the one running."""
        if self.pinger._stop.is_set():
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
        if self._again and not self.pinger._stop.is_set():
            self._again = False
            self.soon()

    async def _renew(self) -> None:
        pinger = self.pinger
        try:
            if pinger.ownership.releasing():
                await pinger.ledger.flush(pinger.clock())  # the next owner starts from these readings
            changed = await pinger.ownership.renew()
            if changed:
                await pinger.fleet.refresh(changed)
                pinger._join(changed)
            self._watch_lapse()
        except Exception:  # a bug here must not stop the renewals
            log.exception("lease renewal failed")

    def _watch_lapse(self) -> None:
        """Another pinger that stopped renewing loses its lease before our next round would come:
        renew just after it runs out."""
        lapse_in = self.pinger.ownership.next_lapse_in_s
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None
        if lapse_in is not None and lapse_in < self.pinger.interval_s and not self.pinger._stop.is_set():
            self._lapse = asyncio.get_running_loop().call_later(max(0.0, lapse_in) + 0.25, self.soon)
