"""Notifications on their way out: each message once in Redis, and per route a queue of the
messages it still has to deliver, scored by when to try next.

A sender claims due messages atomically (their next try moves a lease ahead), so two processes
never send the same message on one route at once; a delivered message leaves its route's queue,
a failed one waits its backoff. A process that dies between a route accepting a message and Redis
hearing of it sends that message again after the lease: at least once, and once in every other
case. Messages are queued by `app.db.alerts` in the same script that opens or closes an alert.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

from app import keys
from app.db.common import aw, hash_fields, translated

# KEYS[1] a route's queue; ARGV now, the claim's lease, how many. Due messages move a lease on.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id) end
return due
"""


class Outbox:
    """Messages and each route's queue of them."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)

    async def put(self, message_id: str, fields: dict[str, str], routes: list[str], at: float) -> None:
        """Queue a message of its own (a digest, a test) for these routes."""
        async with translated("queue a notification"), self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.message(message_id), mapping=hash_fields(fields))
            for route in routes:
                pipe.zadd(keys.outbox(route), {message_id: at})
            await pipe.execute()

    async def claim(self, route: str, now: float, lease_s: float, limit: int = 20) -> list[str]:
        async with translated(f"claim notifications for {route}"):
            return cast(list[str], await self._claim(keys=[keys.outbox(route)], args=[now, lease_s, limit]))

    async def message(self, message_id: str) -> dict[str, str]:
        async with translated("read a notification"):
            return cast(dict[str, str], await aw(self.redis.hgetall(keys.message(message_id))))

    async def delivered(self, route: str, message_id: str, at: float) -> None:
        async with translated("note a delivery"), self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.outbox(route), message_id)
            pipe.hset(keys.message(message_id), f"delivered:{route}", repr(at))
            await pipe.execute()

    async def failed(self, route: str, message_id: str, retry_at: float | None, reason: str) -> int:
        """Note a failed attempt: tried again at `retry_at`, or given up (None). Returns attempts."""
        key = keys.message(message_id)
        async with translated("note a failed delivery"), self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, f"attempts:{route}", 1)
            pipe.hset(key, f"error:{route}", reason)
            if retry_at is None:
                pipe.zrem(keys.outbox(route), message_id)
                pipe.hset(key, f"gave_up:{route}", "1")
            else:
                pipe.zadd(keys.outbox(route), {message_id: retry_at})
            attempts, *_ = await pipe.execute()
        return int(attempts)

    async def waiting(self, route: str) -> int:
        async with translated("count queued notifications"):
            return int(await self.redis.zcard(keys.outbox(route)))
