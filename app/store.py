"""The connection to Redis, and one object per domain on it (`app/db/`): `store.devices`,
`store.crawls`, `store.push`, `store.completeness`, `store.fleet`, `store.changes`,
`store.archive`, `store.processes`, `store.studies`, `store.alerts` (alerts, incidents,
snoozes), `store.outbox` (notifications on their way out). Tokens, sessions, leases, the cart registry and the
compaction book are domains of their own beside these, built on `store.redis`."""

from __future__ import annotations

import redis.asyncio as aioredis

from app.db.alerts import AlertBook
from app.db.archive import ArchiveBook
from app.db.changes import ChangeFeed
from app.db.common import aw, translated
from app.db.completeness import Completeness
from app.db.crawls import Crawls
from app.db.devices import Devices, PollUpdate, Registered
from app.db.erasures import Erasures
from app.db.fleet import FleetFigures
from app.db.outbox import Outbox
from app.db.processes import Heartbeats
from app.db.push import PushDevices
from app.db.studies import Studies

__all__ = ["PollUpdate", "Registered", "Store", "aw", "translated"]


class Store:
    """One per process; pass it down. Each attribute is the only code that touches its keys."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.devices = Devices(redis)
        self.crawls = Crawls(redis)
        self.push = PushDevices(redis)
        self.completeness = Completeness(redis)
        self.fleet = FleetFigures(redis)
        self.changes = ChangeFeed(redis)
        self.archive = ArchiveBook(redis)
        self.processes = Heartbeats(redis)
        self.alerts = AlertBook(redis)
        self.studies = Studies(redis)
        self.outbox = Outbox(redis)
        self.erasures = Erasures(redis)

    @classmethod
    def from_url(cls, url: str, max_connections: int = 50) -> Store:
        """A client whose pool waits (up to 5 s) for a free connection instead of failing a burst."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        return cls(aioredis.Redis(connection_pool=pool))

    async def close(self) -> None:
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def ping(self) -> bool:
        async with translated("ping"):
            return bool(await aw(self.redis.ping()))
