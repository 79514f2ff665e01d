"""The change feed: device changes and pingers letting devices go, as Redis publishes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import suppress

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app import keys
from app.db.common import translated


class ChangeFeed:
    """Device changes and pingers letting devices go, as they are published."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def device_changes(self) -> AsyncIterator[tuple[str, str] | None]:
        """None once subscribed (take a snapshot then: nothing published from here on is
        missed), then ("device", cloud_id) as records change and ("owners", pinger_id) when a
        pinger released devices; StoreError when the subscription drops."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        channels = {keys.devices_changed(): "device", keys.ownership_changed(): "owners"}
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
                await pubsub.aclose()  # type: ignore[no-untyped-call]
