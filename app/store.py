"""The connection to Redis, and one object per domain on it (`app/db/`): `store.devices`,
`store.crawls`, `store.push`, `store.completeness`, `store.fleet`, `store.changes`,
`store.archive`, `store.processes`, `store.studies`, `store.alerts` (alerts, incidents,
snoozes), `store.outbox` (notifications on their way out). Tokens, sessions, leases, the cart registry and the
compaction book are domains of their own beside these, built on `store.redis`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.cluster import RedisCluster as SyncCluster
from redis.exceptions import RedisError

from app import keys
from app.db.alerts import AlertBook
from app.db.archive import ArchiveBook
from app.db.changes import ChangeFeed
from app.db.common import aw, hash_fields, publish, translated
from app.db.completeness import Completeness
from app.db.crawls import Crawls
from app.db.devices import Devices, PollUpdate, Registered
from app.db.erasures import Erasures
from app.db.fleet import FleetFigures
from app.db.outbox import Outbox
from app.db.processes import Heartbeats
from app.db.push import PushDevices
from app.db.studies import Studies
from app.errors import StoreError
from app.settings import Settings

__all__ = ["PollUpdate", "Registered", "Store", "aw", "hash_fields", "publish", "translated"]


log = logging.getLogger(__name__)


def tls_options(url: str, ca_file: str) -> dict[str, str]:
    """redis-py's TLS settings for a rediss:// URL: the certificate required, checked against
    `ca_file` when given (a plain redis:// connection takes none)."""
    if urlsplit(url).scheme not in ("rediss", "rediss+cluster"):
        return {}
    return {"ssl_cert_reqs": "required", **({"ssl_ca_certs": ca_file} if ca_file else {})}


def queue_client(settings: Settings) -> aioredis.Redis:
    """A plain client for the cart job queue (saq keeps its own keys), TLS as the store has it.
    No read timeout: saq's workers wait on BLMOVE and on pub/sub for as long as no job comes
    (redis-py's default would cut each wait after 5 s)."""
    if settings.sentinels:
        return sentinel_client(settings, 20, socket_timeout=None)
    if settings.clustered:
        return _queue_node(settings)
    tls = tls_options(settings.redis_url, settings.redis_ca_file)
    return aioredis.from_url(settings.redis_url, socket_timeout=None, **tls)


def _cluster_url(url: str) -> str:
    """redis-py's URL for a cluster node: redis+cluster:// → redis://, rediss+cluster:// → rediss://."""
    return url.replace("+cluster://", "://", 1)


def cluster_client(url: str, ca_file: str, max_connections: int) -> aioredis.Redis:
    """A Redis Cluster client (it learns the slots from the node named and follows MOVED and
    failovers); typed as a plain client, whose commands it answers for one slot at a time."""
    client = RedisCluster.from_url(
        _cluster_url(url),
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        max_connections=max_connections * 4,
        **tls_options(url, ca_file),
    )
    keys.configure(cluster=True)
    return cast(aioredis.Redis, client)


def _queue_node(settings: Settings) -> aioredis.Redis:
    """saq speaks to one Redis (it subscribes, which a cluster client cannot): the primary that
    serves the queue's slot (all its keys share the queue name's hash tag)."""
    keys.configure(cluster=True)
    url = _cluster_url(settings.redis_url)
    tls = tls_options(settings.redis_url, settings.redis_ca_file)
    with SyncCluster.from_url(url, socket_connect_timeout=2, **tls) as seed:
        node = seed.get_node_from_key(keys.cart_queue())
    if node is None:
        raise StoreError(f"no Redis Cluster primary serves the cart queue's slot ({settings.redis_where}).")
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{node.host}:{node.port}" if user else f"{node.host}:{node.port}"
    return aioredis.from_url(
        urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), socket_timeout=None, **tls
    )


def sentinel_client(
    settings: Settings, max_connections: int, socket_timeout: float | None = 5
) -> aioredis.Redis:
    """A client of the primary the sentinels name; REDIS_URL gives the user, password and db."""
    url = urlsplit(settings.redis_url)
    auth: dict[str, Any] = {"username": url.username, "password": url.password} if url.password else {}
    tls: dict[str, Any] = dict(tls_options(settings.redis_url, settings.redis_ca_file))
    sentinel = Sentinel(
        settings.sentinels,
        sentinel_kwargs={"socket_connect_timeout": 2, "socket_timeout": 2, **tls},
        socket_connect_timeout=2,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        **auth,
        **tls,
    )
    db = int(url.path.strip("/") or 0)
    client: aioredis.Redis = sentinel.master_for(
        settings.redis_sentinel_service, redis_class=_SentinelRedis, decode_responses=True, db=db,
        max_connections=max_connections * 4,
    )  # fmt: skip
    return client


class _SentinelRedis(aioredis.Redis):
    """A client of the primary the sentinels name that, closed, also closes its connections to
    the sentinels it asked (redis-py leaves those open until they are collected)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for asked in manager.sentinels if isinstance(manager, Sentinel) else ():
            await asked.aclose()


async def follow_failovers(settings: Settings, stop: asyncio.Event) -> None:
    """Say in one line when the sentinels move the primary (`+switch-master`), until `stop`."""
    if not settings.sentinels:
        return
    while not stop.is_set():
        for host, port in settings.sentinels:
            client = aioredis.Redis(host=host, port=port, decode_responses=True, socket_connect_timeout=2)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe("+switch-master")
                    while not stop.is_set():
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None:
                            name, old_host, old_port, new_host, new_port = str(message["data"]).split()[:5]
                            log.warning("Redis failed over: the sentinels moved the primary",
                                        extra={"service": name, "from": f"{old_host}:{old_port}",
                                               "to": f"{new_host}:{new_port}"})  # fmt: skip
            except (RedisError, OSError, ValueError):
                await asyncio.sleep(1.0)  # that sentinel is away: the next one
            finally:
                await client.aclose()
            if stop.is_set():
                return


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
        against `ca_file` (a private CA) or the system's CAs; `redis+cluster://` (or
        `rediss+cluster://`) names a node of a Redis Cluster."""
        if urlsplit(url).scheme.endswith("+cluster"):
            return cls(cluster_client(url, ca_file, max_connections))
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
        """The deployment's Redis: REDIS_URL, with REDIS_CA_FILE for a TLS server's private CA; or,
        with REDIS_SENTINELS, whichever server the sentinels say is the primary now (a failover
        is followed on the next command: connections to the old primary are dropped and the new
        one asked of the sentinels)."""
        if settings.clustered:
            return cls(cluster_client(settings.redis_url, settings.redis_ca_file, max_connections))
        if not settings.sentinels:
            return cls.from_url(settings.redis_url, max_connections, settings.redis_ca_file)
        return cls(sentinel_client(settings, max_connections))

    async def close(self) -> None:
        await self.redis.aclose()
        if not keys.clustered():
            await self.redis.connection_pool.disconnect()

    async def ping(self) -> bool:
        async with translated("ping"):
            return bool(await aw(self.redis.ping()))
