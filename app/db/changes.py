"""The change feed: device changes and pingers letting devices go, as Redis publishes them.

On one server this is plain pub/sub on two channels. On a cluster each slot group has its own
sharded channel (SPUBLISH beside the keys it reports on), so the feed subscribes (SSUBSCRIBE) on
every primary to the channels whose slots it serves, and starts over (a fresh snapshot) when a
slot moves or a primary goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app import keys
from app.db.common import translated
from app.errors import StoreError


class ChangeFeed:
    """Device changes and pingers letting devices go, as they are published."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def device_changes(self) -> AsyncIterator[tuple[str, str] | None]:
        """None once subscribed (take a snapshot then: nothing published from here on is
        missed), then ("device", cloud_id) as records change and ("owners", pinger_id) when a
        pinger released devices; StoreError when the subscription drops."""
        channels = {keys.devices_changed(g): "device" for g in keys.groups()}
        channels[keys.ownership_changed()] = "owners"
        feed = (
            _sharded(cast(RedisCluster, self.redis), channels) if keys.clustered() else self._plain(channels)
        )
        async for change in feed:
            yield change

    async def _plain(self, channels: dict[str, str]) -> AsyncIterator[tuple[str, str] | None]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            async with translated("subscribe to device changes"):
                await pubsub.subscribe(*channels)
                yield None
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        yield channels[str(message["channel"])], str(message["data"])
        finally:
            with suppress(RedisError, OSError):
                await pubsub.aclose()


async def _sharded(cluster: RedisCluster, channels: dict[str, str]) -> AsyncIterator[tuple[str, str] | None]:
    """The cluster's feed: one subscriber connection per primary, read together."""
    inbox: asyncio.Queue[tuple[str, str] | BaseException] = asyncio.Queue()
    clients: list[aioredis.Redis] = []
    subscriptions: list[Any] = []
    readers: list[asyncio.Task[None]] = []
    try:
        async with translated("subscribe to device changes"):
            await cluster.initialize()
            by_node: dict[str, tuple[Any, list[str]]] = {}
            for channel in channels:
                node = cluster.get_node_from_key(channel)
                if node is None:
                    raise StoreError(f"no Redis Cluster primary serves the slot of {channel}.")
                by_node.setdefault(node.name, (node, []))[1].append(channel)
            for node, names in by_node.values():
                settings = {**node.connection_kwargs, "socket_timeout": None}  # the node's TLS and ACL user
                pool = aioredis.ConnectionPool(connection_class=node.connection_class, **settings)
                client = aioredis.Redis.from_pool(pool)
                clients.append(client)
                pubsub = client.pubsub()
                subscriptions.append(pubsub)
                for name in names:  # one slot a command; each confirmed before the snapshot is taken
                    await pubsub.execute_command("SSUBSCRIBE", name)
                    await pubsub.parse_response(block=True)
                readers.append(asyncio.create_task(_read(pubsub, node.name, channels, inbox)))
        yield None
        while True:
            item = await inbox.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for pubsub in subscriptions:  # a subscription holds a connection of its own
            with suppress(RedisError, OSError):
                await pubsub.aclose()
        for client in clients:
            with suppress(RedisError, OSError):
                await client.aclose()


async def _read(
    pubsub: Any, node: str, channels: dict[str, str], inbox: asyncio.Queue[tuple[str, str] | BaseException]
) -> None:
    try:
        while True:
            reply = await pubsub.parse_response(block=False, timeout=1.0)
            if not reply:
                continue
            kind, channel, data = str(reply[0]), str(reply[1]), reply[2]
            if kind == "smessage" and channel in channels:
                inbox.put_nowait((channels[channel], str(data)))
            elif kind == "sunsubscribe":
                inbox.put_nowait(
                    StoreError(f"Redis moved the slot of {channel} away from {node}: subscribing again.")
                )
                return
    except (RedisError, OSError) as exc:
        inbox.put_nowait(StoreError(f"Redis dropped the change feed from {node}: {exc}"))
