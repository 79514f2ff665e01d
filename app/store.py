"""The connection to Redis, and one object per domain on it (`app/db/`): `store.devices`,
`store.crawls`, `store.push`, `store.completeness`, `store.fleet`, `store.changes`,
`store.archive`, `store.processes`, `store.studies`, `store.alerts` (alerts, incidents,
snoozes), `store.outbox` (notifications on their way out). Tokens, sessions, leases, the cart registry and the
compaction book are domains of their own beside these, built on `store.redis`."""

from __future__ import annotations

from urllib.parse import urlsplit

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
from app.settings import Settings

__all__ = ["PollUpdate", "Registered", "Store", "aw", "translated"]


def tls_options(url: str, ca_file: str) -> dict[str, str]:
    """redis-py's TLS settings for a rediss:// URL: the certificate required, checked against
    `ca_file` when given (a plain redis:// connection takes none)."""
    if urlsplit(url).scheme != "rediss":
        return {}
    return {"ssl_cert_reqs": "required", **({"ssl_ca_certs": ca_file} if ca_file else {})}


def queue_client(settings: Settings) -> aioredis.Redis:
    """A plain client for the cart job queue (saq keeps its own keys), TLS as the store has it."""
    return aioredis.from_url(settings.redis_url, **tls_options(settings.redis_url, settings.redis_ca_file))


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
    def from_url(cls, url: str, max_connections: int = 50, ca_file: str = "") -> Store:
        """A client whose pool waits (up to 5 s) for a free connection instead of failing a burst.
        `rediss://user:password@host:port/0` speaks TLS and verifies the server's certificate
        against `ca_file` (a private CA) or the system's CAs."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
            **tls_options(url, ca_file),
        )
        return cls(aioredis.Redis(connection_pool=pool))

    @classmethod
    def for_settings(cls, settings: Settings, max_connections: int = 50) -> Store:
        """The deployment's Redis: REDIS_URL, with REDIS_CA_FILE for a TLS server's private CA."""
        return cls.from_url(settings.redis_url, max_connections, settings.redis_ca_file)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def ping(self) -> bool:
        async with translated("ping"):
            return bool(await aw(self.redis.ping()))
