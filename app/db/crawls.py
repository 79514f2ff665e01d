"""What gateways say they are, in Redis: each device's crawls, and the crawls asked for."""

from __future__ import annotations

from collections.abc import Container
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from app import keys
from app.db.common import aw, to_json, translated


class Crawls:
    """What gateways say they are: each device's crawls, and the crawls asked for."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._record = redis.register_script(_RECORD)

    async def record_crawl(
        self, cloud_id: str, crawl: dict[str, Any], keep: int, changed: list[str] | None = None
    ) -> list[str]:
        """Keep a crawl (newest first, `keep` of them) and what changed since the last (or what the
        caller knows changed); returns that."""
        async with translated(f"record a crawl of {cloud_id}"):
            previous = await aw(self.redis.hget(keys.device(cloud_id), "crawl"))
            before = orjson.loads(previous) if previous else {}
            fields = crawl.get("fields", {})
            if changed is None:
                changed = sorted(k for k in fields if before and before.get(k) != fields[k])
            entry = {**crawl, "changed": changed}
            # a failed crawl ('' fields) keeps the last good description on the record
            description = to_json(fields) if fields else ""
            names = [keys.device(cloud_id), keys.crawls(cloud_id)]
            await self._record(keys=names, args=[description, to_json(entry), keep])
        return changed

    async def record_meter_change(self, cloud_id: str, at: float, old: str, new: str, keep: int) -> None:
        """A gateway's readings came from another meter (a swap, a move): an event in its crawl
        history, its description kept with the new meter."""
        async with translated(f"record a meter change of {cloud_id}"):
            previous = await aw(self.redis.hget(keys.device(cloud_id), "crawl"))
        fields = {**(orjson.loads(previous) if previous else {}), "meter": new}
        entry = {"at": round(at, 3), "fields": fields, "event": f"meter {old} → {new}"}
        await self.record_crawl(cloud_id, entry, keep, changed=["meter"])

    async def want_crawl(self, cloud_id: str) -> None:
        async with translated(f"ask for a crawl of {cloud_id}"):
            await aw(self.redis.sadd(keys.crawl_wanted(), cloud_id))

    async def take_wanted_crawls(self, mine: Container[str]) -> list[str]:
        """The crawls asked for of devices in `mine` (this pinger's), taken off the list; the
        others stay for the pingers that hold them."""
        async with translated("take the crawls asked for"):
            wanted = cast(set[str], await aw(self.redis.smembers(keys.crawl_wanted())))
            taken = sorted(cid for cid in wanted if cid in mine)
            if taken:
                await aw(self.redis.srem(keys.crawl_wanted(), *taken))
        return taken

    async def crawl_history(self, cloud_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """A device's crawls, newest first."""
        async with translated(f"read the crawls of {cloud_id}"):
            found = cast(list[str], await aw(self.redis.lrange(keys.crawls(cloud_id), 0, limit - 1)))
        return [orjson.loads(item) for item in found]


# KEYS: the device's hash, its crawls. ARGV: the description to keep on the record ('' for none),
# the crawl's entry, how many entries to keep. A device that is gone is not recreated.
_RECORD = """
if ARGV[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'crawl', ARGV[1]) end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
"""
