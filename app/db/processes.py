"""Live processes in Redis: each one's heartbeat and what it says of itself."""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis

from app import keys
from app.db.common import aw, translated


class Heartbeats:
    """Live processes: each one's heartbeat and what it says of itself."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def heartbeat(self, kind: str, process_id: str, info: dict[str, str], now: float) -> None:
        """Announce a live process; `rainforest status` and `--check` read these."""
        async with translated(f"send the {kind} heartbeat"), self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.processes(kind), {process_id: now})
            pipe.hset(keys.process(kind, process_id), mapping=cast(dict[Any, Any], info))
            pipe.expire(keys.process(kind, process_id), 300)
            pipe.zremrangebyscore(keys.processes(kind), "-inf", now - 3600)  # long-dead entries
            await pipe.execute()

    async def remove_process(self, kind: str, process_id: str) -> None:
        async with translated(f"remove the {kind} heartbeat"):
            await aw(self.redis.zrem(keys.processes(kind), process_id))
            await aw(self.redis.delete(keys.process(kind, process_id)))

    async def live_processes(self, kind: str, since: float) -> list[tuple[str, float, dict[str, str]]]:
        """(id, last beat, info) of each process of `kind` that beat after `since`, newest first."""
        async with translated(f"read {kind} heartbeats"):
            found = await aw(
                self.redis.zrevrangebyscore(keys.processes(kind), "+inf", since, withscores=True)
            )
            out = []
            for process_id, beat in cast(list[tuple[str, float]], found):
                info = await aw(self.redis.hgetall(keys.process(kind, process_id)))
                out.append((str(process_id), float(beat), cast(dict[str, str], info)))
        return out
