"""Rotate's bookkeeping in Redis: hours archived per device, and its last pass."""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis

from app import keys
from app.db.common import aw, translated


class ArchiveBook:
    """What rotate put in the archive: hours per device, and its last pass."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def record_archived(self, cloud_id: str, hour: str, new_hour: bool) -> None:
        """Count a device-hour rotate put in the archive and keep the latest such hour.

        Only devices still registered are touched, so an old device's files never recreate it.
        """
        async with translated("record an archived hour"):
            await aw(self.redis.eval(_RECORD_ARCHIVED, 1, keys.device(cloud_id), hour, 1 if new_hour else 0))

    async def record_rotate_pass(self, summary: dict[str, str]) -> None:
        async with translated("record the rotate pass"):
            await aw(self.redis.hset(keys.rotate_last_pass(), mapping=cast(dict[Any, Any], summary)))

    async def rotate_last_pass(self) -> dict[str, str]:
        async with translated("read the last rotate pass"):
            return cast(dict[str, str], await aw(self.redis.hgetall(keys.rotate_last_pass())))


_RECORD_ARCHIVED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], 'archived_hours', 1) end
local last = redis.call('HGET', KEYS[1], 'last_archived_hour')
if (not last) or last < ARGV[1] then redis.call('HSET', KEYS[1], 'last_archived_hour', ARGV[1]) end
return 1
"""
