"""Which days are due for compaction, and which rotate host is compacting each (Redis).

Every rotate host ships hours and notes their days; several hosts must not compact one day at
once (their versions would collide, and work be done twice). A host first claims the day: a
lease in Redis that it renews while it works and releases when done; a host that died lets its
lease run out. A day stays due until a compaction that saw its latest note finishes: a late
part noted while another host compacts the day is compacted again next time.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

from app import keys
from app.store import aw, translated

_NOTE = """
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
"""

_DONE = """
local noted = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if noted ~= tonumber(ARGV[2]) then return 0 end
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class CompactionBook:
    """Due days and the claims on them; every method raises StoreError when Redis fails."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def note(self, day: str) -> None:
        """A day got a new hourly object: (re)compact it once it is closed."""
        async with translated("note a day to compact"):
            await aw(self.redis.eval(_NOTE, 2, keys.compaction_due(), keys.compaction_noted(), day))

    async def due(self) -> dict[str, int]:
        """Each due day with its note count (give it back to `done`)."""
        async with translated("list the days to compact"):
            days = sorted(cast(set[str], await aw(self.redis.smembers(keys.compaction_due()))))
            counts = (
                cast(list[str | None], await aw(self.redis.hmget(keys.compaction_noted(), days)))
                if days
                else []
            )
        return {day: int(n or 0) for day, n in zip(days, counts, strict=True)}

    async def done(self, day: str, noted: int) -> bool:
        """Forget a compacted day, unless it was noted again meanwhile; True when forgotten."""
        async with translated("note a compacted day"):
            gone = await aw(
                self.redis.eval(_DONE, 2, keys.compaction_due(), keys.compaction_noted(), day, noted)
            )
        return bool(gone)

    async def claim(self, day: str, holder: str, lease_s: float) -> bool:
        """Take the day for `lease_s` unless another host holds it."""
        async with translated("claim a day to compact"):
            got = await aw(
                self.redis.set(keys.compaction_claim(day), holder, nx=True, px=int(lease_s * 1000))
            )
        return bool(got)

    async def renew(self, day: str, holder: str, lease_s: float) -> bool:
        async with translated("renew a compaction claim"):
            kept = await aw(
                self.redis.eval(_RENEW, 1, keys.compaction_claim(day), holder, int(lease_s * 1000))
            )
        return bool(kept)

    async def release(self, day: str, holder: str) -> None:
        async with translated("release a compaction claim"):
            await aw(self.redis.eval(_RELEASE, 1, keys.compaction_claim(day), holder))
