"""Completeness counts in Redis: per device-hour, per hour and per day, and the repeats that
further archived parts hold."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis

from app import keys
from app.completeness import HourCounts, longest_gap_s
from app.db.common import BATCH_TTL_S, CHUNK, translated, union
from app.hours import Hour


class Completeness:
    """Completeness counts per device-hour and per day, and the repeats further parts hold."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._add_completeness = redis.register_script(_ADD_COMPLETENESS)

    async def add_completeness(
        self, counts: dict[tuple[str, int], HourCounts], keep_s: float, token: str | None = None
    ) -> None:
        """Add counts to their device-hours (the longest gap kept as a maximum), one script per
        CHUNK device-hours, each applied whole and at most once per token (see record_polls)."""
        by_group: dict[int, list[tuple[tuple[str, int], HourCounts]]] = {}
        for item in counts.items():
            by_group.setdefault(keys.group(item[0][0]), []).append(item)
        token = token or uuid.uuid4().hex
        chunks = [
            (g, items[s : s + CHUNK])
            for g, items in sorted(by_group.items())
            for s in range(0, len(items), CHUNK)
        ]
        async with translated("record completeness"):
            for n, (g, chunk) in enumerate(chunks):
                names: list[str] = [keys.applied_batch(g, f"c:{token}:{n}")]
                args: list[str | int] = [BATCH_TTL_S, int(keep_s)]
                for (cid, hour), c in chunk:
                    day = Hour(hour).day.key
                    names += [
                        keys.completeness(cid, hour),
                        keys.completeness_hour(g, hour),
                        keys.completeness_day(g, day),
                    ]
                    args += [cid, c.scheduled, c.ok, c.readings, repr(c.longest_gap_s)]
                await self._add_completeness(keys=names, args=args)

    async def add_duplicates(self, cloud_id: str, hour: int, duplicates: int, keep_s: float) -> None:
        """Count readings a further archived part of a device-hour repeats (rotate finds them)."""
        ttl = int(keep_s)
        async with translated("record duplicates"), self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.completeness(cloud_id, hour), "duplicates", duplicates)
            pipe.expire(keys.completeness(cloud_id, hour), ttl)
            pipe.sadd(keys.completeness_hour(keys.group(cloud_id), hour), cloud_id)
            pipe.expire(keys.completeness_hour(keys.group(cloud_id), hour), ttl)
            await pipe.execute()

    async def completeness(self, cloud_ids: Sequence[str], hours: Sequence[int]) -> list[dict[str, Any]]:
        """Rows (cloud_id, hour, scheduled, ok, readings, longest_gap_s) that have counts."""
        pairs = [(cid, hour) for cid in cloud_ids for hour in hours]
        rows: list[dict[str, Any]] = []
        now = time.time()
        async with translated("read completeness"):
            for start in range(0, len(pairs), CHUNK):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for cid, hour in pairs[start : start + CHUNK]:
                        pipe.hgetall(keys.completeness(cid, hour))
                    found = await pipe.execute()
                for (cid, hour), h in zip(pairs[start : start + CHUNK], found, strict=True):
                    if h:
                        readings = int(h.get("readings", 0))
                        gap = longest_gap_s(readings, float(h.get("longest_gap_s", 0)), Hour(hour).start, now)
                        rows.append({
                            "cloud_id": cid, "hour": hour, "scheduled": int(h.get("scheduled", 0)),
                            "ok": int(h.get("ok", 0)), "readings": readings, "longest_gap_s": gap,
                            "duplicates": int(h.get("duplicates", 0)),
                        })  # fmt: skip
        return rows

    async def completeness_day(self, day: str) -> dict[str, tuple[int, int, int]]:
        """cloud_id → (scheduled, ok, readings) for one UTC day (YYYY-MM-DD), in one command per
        slot group (pipelined)."""
        async with translated("read a day's completeness"), self.redis.pipeline(transaction=False) as pipe:
            for g in keys.groups():
                pipe.hgetall(keys.completeness_day(g, day))
            found = cast(list[dict[str, str]], await pipe.execute())
        out: dict[str, list[int]] = {}
        for name, value in (item for h in found for item in h.items()):
            cid, _, which = name.partition(":")
            out.setdefault(cid, [0, 0, 0])["sor".index(which)] = int(value)
        return {cid: (v[0], v[1], v[2]) for cid, v in out.items()}

    async def completeness_devices(self, hour: int) -> list[str]:
        """The cloud_ids with counts for an hour."""
        async with translated("list an hour's devices"):
            return sorted(await union(self.redis, (keys.completeness_hour(g, hour) for g in keys.groups())))


# Completeness of many device-hours in one script: KEYS[1] the batch's token, then three keys
# per device-hour (its hash, the hour's set, the day's hash); ARGV the token's and the counts'
# lifetimes, then five values per device-hour (cloud_id, scheduled, ok, readings, longest gap).
_ADD_COMPLETENESS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ttl = ARGV[2]
for i = 0, (#KEYS - 1) / 3 - 1 do
  local h, hour, day, a = KEYS[2 + i * 3], KEYS[3 + i * 3], KEYS[4 + i * 3], 3 + i * 5
  local cid = ARGV[a]
  redis.call('HINCRBY', h, 'scheduled', ARGV[a + 1])
  redis.call('HINCRBY', h, 'ok', ARGV[a + 2])
  redis.call('HINCRBY', h, 'readings', ARGV[a + 3])
  local gap = tonumber(redis.call('HGET', h, 'longest_gap_s') or '0')
  if tonumber(ARGV[a + 4]) > gap then redis.call('HSET', h, 'longest_gap_s', ARGV[a + 4]) end
  redis.call('EXPIRE', h, ttl)
  redis.call('SADD', hour, cid)
  redis.call('EXPIRE', hour, ttl)
  redis.call('HINCRBY', day, cid .. ':s', ARGV[a + 1])
  redis.call('HINCRBY', day, cid .. ':o', ARGV[a + 2])
  redis.call('HINCRBY', day, cid .. ':r', ARGV[a + 3])
  redis.call('EXPIRE', day, ttl)
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
"""
