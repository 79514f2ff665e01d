"""What a server process knows of each push device's key: its digest and consent window, read
from Redis and kept, so that an upload seldom costs a round trip.

While the change feed (app.db.changes) is followed, a device's entry is kept for FOLLOWED_TTL_S
and dropped as soon as its record changes: a new key, a deactivation or a study's window takes
effect at once. While the feed is down (and for a look-up that crossed a change in flight), what
Redis said is kept for CREDENTIALS_TTL_S only. Look-ups of uploads arriving together share one
round trip: while one is in flight, the devices asked meanwhile wait for the next, all read in one
pipeline.

The digests stay in a bounded cache after that: while Redis is unreachable, a device this process
has seen keeps being authenticated with its last known digest; a device never seen raises
StoreError (the route answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from app.db.push import Credentials
from app.devices import PUSH
from app.errors import StoreError
from app.store import Store
from app.studies import Enrolment

log = logging.getLogger(__name__)
CREDENTIALS_TTL_S = 2.0  # while the change feed is down
FOLLOWED_TTL_S = 300.0  # while it is followed: a change drops the entry at once; this bounds a lost one
KNOWN_MAX = 200_000  # devices kept per server process (about 150 bytes each)
RETRY_FEED_S = 1.0


class KeyCache:
    """Each push device's key digest (None: not an active push device) and consent window."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.clock = store, clock
        # cloud_id → (fresh until, digest, consent window), least recently read first
        self._known: OrderedDict[str, tuple[float, str | None, Enrolment | None]] = OrderedDict()
        self._asked: dict[str, asyncio.Future[Credentials | None]] = {}  # for the next round trip
        self._reading: asyncio.Task[None] | None = None  # the round trip in flight, if any
        self.following = asyncio.Event()  # the change feed is up: entries keep until their device changes
        self.changes_seen = 0  # device changes the feed delivered: a read that crossed one is kept briefly
        self._redis_down_since: float | None = None

    def window(self, cloud_id: str) -> Enrolment | None:
        """The consent window last read with the device's digest (None: not enrolled, or unknown)."""
        known = self._known.get(cloud_id)
        return known[2] if known is not None else None

    async def digest(self, cloud_id: str) -> str | None:
        """The device's key digest, None when it is no active push device; StoreError when Redis
        cannot be asked and the device was never seen."""
        now = self.clock()
        cached = self._known.get(cloud_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        changes = self.changes_seen
        try:
            found = await self._look_up(cloud_id)
        except StoreError as exc:
            if cached is None:
                raise
            self._note_outage(exc)
            return cached[1]  # Redis is away: the last digest we had still stands
        self._note_back()
        digest = found[2] if found is not None and found[0] == PUSH and found[1] else None
        steady = self.following.is_set() and changes == self.changes_seen
        until = now + (FOLLOWED_TTL_S if steady else CREDENTIALS_TTL_S)
        self._known[cloud_id] = (until, digest, found[3] if found is not None else None)
        self._known.move_to_end(cloud_id)
        while len(self._known) > KNOWN_MAX:
            self._known.popitem(last=False)
        return digest

    async def follow(self, stop: asyncio.Event) -> None:
        """Drop a device's entry when the feed says its record changed, until `stop`; while the
        feed is down, every entry is read again after CREDENTIALS_TTL_S."""
        feed = asyncio.create_task(self._follow())
        try:
            await stop.wait()
        finally:
            feed.cancel()  # it waits on the feed, which has no stop of its own
            await asyncio.gather(feed, return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            try:
                async for change in self.store.changes.device_changes():
                    if change is None:  # subscribed: what changed before is read afresh
                        self._expire_all()
                        self.following.set()
                    elif change[0] == "device":
                        self._expire(change[1])
            except StoreError as exc:
                if self.following.is_set():
                    log.warning(
                        f"push key changes not followed: keys are read again every {CREDENTIALS_TTL_S:g} s",
                        extra={"reason": str(exc)},
                    )
                self.following.clear()
                self._expire_all()
            await asyncio.sleep(RETRY_FEED_S)

    def _expire(self, cloud_id: str) -> None:
        """Read the device afresh at its next upload; its digest stays for a Redis outage."""
        self.changes_seen += 1
        cached = self._known.get(cloud_id)
        if cached is not None:
            self._known[cloud_id] = (0.0, cached[1], cached[2])

    def _expire_all(self) -> None:
        self.changes_seen += 1
        for cloud_id, (_, digest, window) in self._known.items():
            self._known[cloud_id] = (0.0, digest, window)

    async def _look_up(self, cloud_id: str) -> Credentials | None:
        """What Redis holds of a device's key, read together with what other uploads ask now."""
        asked = self._asked.get(cloud_id)
        if asked is None:
            asked = self._asked[cloud_id] = asyncio.get_running_loop().create_future()
            if self._reading is None:
                self._reading = asyncio.create_task(self._read_asked())
        return await asyncio.shield(asked)  # one upload given up does not cancel the others' answer

    async def _read_asked(self) -> None:
        try:
            while self._asked:
                asked, self._asked = self._asked, {}
                try:
                    found = await self.store.push.push_credentials(list(asked))
                except Exception as exc:  # every upload waiting is told (StoreError: Redis away)
                    for future in asked.values():
                        future.set_exception(exc)
                else:
                    for cloud_id, future in asked.items():
                        future.set_result(found[cloud_id])
        finally:
            self._reading = None

    def _note_outage(self, exc: StoreError) -> None:
        if self._redis_down_since is None:
            self._redis_down_since = self.clock()
            log.warning(
                "Redis unreachable: authenticating push devices with their last known key digests",
                extra={"devices_known": len(self._known), "reason": str(exc)},
            )

    def _note_back(self) -> None:
        if self._redis_down_since is not None:
            log.info(
                "Redis reachable again: push key digests are read from it",
                extra={"down_s": round(self.clock() - self._redis_down_since, 1)},
            )
            self._redis_down_since = None
