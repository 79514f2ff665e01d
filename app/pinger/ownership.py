"""Which devices this pinger polls when several share a fleet.

Devices are balanced by rendezvous (highest-random-weight) hashing over the live pingers: each
device goes to the pinger with the highest hash of (pinger, device), so a pinger joining or
leaving moves only its own share. Wanting a device is not enough to poll it: the pinger must
hold its lease (`app.leases`). A device that now belongs elsewhere is dropped from polling at
once and released a full interval later, when no poll of it can still be in flight and its last
reading time is in Redis, so the next owner neither repeats nor skips a reading.

While Redis is unreachable the pinger keeps polling what it holds and says so; once Redis
answers, anything another pinger took in the meantime is dropped at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from hashlib import blake2b

from app.errors import StoreError
from app.leases import Leases, Round

log = logging.getLogger(__name__)
CLAIMS_PER_ROUND = 5000  # keeps one round's script short; the rest are claimed next round


def weight(pinger_id: str, cloud_id: str) -> int:
    """The pseudo-random weight of a (pinger, device) pair, the same on every host."""
    digest = blake2b(f"{pinger_id}\x00{cloud_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(cloud_id: str, members: Iterable[str]) -> str | None:
    """The member a device belongs to (None when there is none)."""
    return max(members, key=lambda m: weight(m, cloud_id), default=None)


def share(me: str, members: Iterable[str], cloud_ids: Iterable[str]) -> set[str]:
    """The devices among `cloud_ids` that belong to `me`."""
    others = [m for m in members if m != me]
    return {cid for cid in cloud_ids if all(weight(me, cid) > weight(m, cid) for m in others)}


class Ownership:
    """This pinger's leases: what it wants, what it holds, what it is handing over."""

    def __init__(
        self,
        leases: Leases,
        pinger_id: str,
        interval_s: float,
        lease_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, int], None] | None = None,
        on_handover: Callable[[float], None] | None = None,
    ) -> None:
        self.leases = leases
        self.pinger_id = pinger_id
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.monotonic = monotonic
        self.on_change = on_change or (lambda change, n: None)
        self.on_handover = on_handover or (lambda seconds: None)
        self.candidates: set[str] = set()  # active polled devices of the whole fleet
        self.members: tuple[str, ...] = ()
        self.held: set[str] = set()
        self.wanted: set[str] = set()  # candidates that belong to this pinger
        self.stopping: dict[str, float] = {}  # held, no longer wanted → when polling stopped
        self.lease_until = 0.0  # monotonic: the lease surely runs until here
        self.next_lapse_in_s: float | None = None  # when another pinger's lease runs out, unrenewed
        self.joined = False
        self.leaving = False  # set at a stop: nothing more is claimed
        self._unreachable_since: float | None = None

    # --- what the fleet view asks ------------------------------------------------------------

    def owns(self, cloud_id: str) -> bool:
        return cloud_id in self.held and cloud_id in self.wanted

    async def sync(self, candidates: Iterable[str]) -> None:
        """Take the fleet's full list of polled devices; the first time, join and claim."""
        self.candidates = set(candidates)
        self._rebalance()
        if not self.joined:
            await self.renew()  # learn the live pingers
            await self.renew()  # claim this pinger's share of the free devices
        for cid in self.held - self.candidates:
            self.stopping.setdefault(cid, self.monotonic())

    def note(self, cloud_id: str, candidate: bool) -> None:
        """One device was added, changed or stopped being polled."""
        if candidate:
            self.candidates.add(cloud_id)
            if rendezvous(cloud_id, self.members) == self.pinger_id:
                self.wanted.add(cloud_id)
        else:
            self.candidates.discard(cloud_id)
            self.wanted.discard(cloud_id)
            if cloud_id in self.held:
                self.stopping.setdefault(cloud_id, self.monotonic())

    def claims_waiting(self) -> bool:
        """Are there devices of this pinger's share it does not hold yet?"""
        return self.joined and not self.wanted <= self.held

    def releasing(self) -> bool:
        """Will the next round release devices (so the last readings must reach Redis first)?"""
        now = self.monotonic()
        return any(now - since >= self.interval_s for since in self.stopping.values())

    def fresh(self) -> bool:
        """Is the lease known to run through the next interval?"""
        return self.monotonic() + self.interval_s < self.lease_until

    # --- one round --------------------------------------------------------------------------

    async def renew(self) -> set[str]:
        """One round trip: renew, release, claim; a second when the live pingers changed (the
        claims were chosen by the old view). Returns the devices whose polling changed."""
        members = self.members
        changed = await self._round()
        if self.members != members and self.claims_waiting():
            changed ^= await self._round()
        return changed

    async def _round(self) -> set[str]:
        if self.leaving:
            return set()
        sent_at = self.monotonic()
        release = [cid for cid, since in self.stopping.items() if sent_at - since >= self.interval_s]
        claim = sorted(self.wanted - self.held)[:CLAIMS_PER_ROUND] if self.members else []
        try:
            result = await self.leases.round(self.pinger_id, self.lease_s, self.interval_s, release, claim)
        except StoreError as exc:
            self._unreachable(exc, sent_at)
            return set()
        self.joined = True
        self.lease_until = sent_at + self.lease_s
        if self._unreachable_since is not None:
            log.info(
                "leases renewed again",
                extra={"after_s": round(sent_at - self._unreachable_since, 1), "devices": len(self.held)},
            )
            self._unreachable_since = None
        return self._apply(result, release)

    def _apply(self, result: Round, release: list[str]) -> set[str]:
        before = {cid for cid in self.held if cid in self.wanted}
        others = [at for pinger, at in result.expiries.items() if pinger != self.pinger_id]
        self.next_lapse_in_s = min(others) - result.now if others else None
        for cid in release:
            self.held.discard(cid)
            self.stopping.pop(cid, None)
        if result.lapsed:  # another pinger may have taken some while our lease had run out
            lost = self.held - result.held
            if lost:
                log.warning(
                    "leases lost while this pinger's lease had run out; no longer polling them",
                    extra={"devices": len(lost)},
                )
                self.on_change("lost", len(lost))
            self.held = set(result.held)
            for cid in lost:
                self.stopping.pop(cid, None)
        self.held |= result.granted.keys()
        if result.members != self.members:
            self.members = result.members
            self._rebalance()
        for cid in self.held - self.wanted:
            self.stopping.setdefault(cid, self.monotonic())
        for cid in self.wanted & self.stopping.keys():
            del self.stopping[cid]  # wanted again before it was released
        claimed = result.granted.keys() - before
        if claimed:
            self.on_change("claimed", len(claimed))
            for seconds in result.granted.values():
                if seconds is not None:
                    self.on_handover(seconds)
        if result.released:
            self.on_change("released", result.released)
        after = {cid for cid in self.held if cid in self.wanted}
        if before != after:
            log.info(
                "leases changed",
                extra={"polling": len(after), "gained": len(after - before), "dropped": len(before - after),
                       "pingers": len(self.members), "waiting": len(self.wanted - self.held)},
            )  # fmt: skip
        return before ^ after

    def _rebalance(self) -> None:
        self.wanted = share(self.pinger_id, self.members, self.candidates) if self.members else set()

    def _unreachable(self, exc: StoreError, sent_at: float) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = sent_at
            log.error(
                "Redis unreachable: cannot renew leases; still polling the devices held, which "
                "another pinger may take once the lease runs out",
                extra={"devices": len(self.held), "lease_s": self.lease_s, "reason": str(exc)},
            )

    async def leave(self) -> None:
        """Hand every device over at once (a clean stop); others claim them at their next round."""
        self.leaving = True
        if not self.joined:
            return
        try:
            released = await self.leases.leave(self.pinger_id)
        except StoreError as exc:
            log.warning(
                "could not hand devices over: they move once this pinger's lease runs out",
                extra={"devices": len(self.held), "lease_s": self.lease_s, "reason": str(exc)},
            )
            return
        self.on_change("released", released)
        if released:
            log.info("devices handed over", extra={"devices": released})
        self.held.clear()
        self.stopping.clear()
