"""Push devices in Redis: their key digests, what they said about themselves, refused uploads."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import redis.asyncio as aioredis

from app import keys
from app.db.common import SET_IF_EXISTS, aw, to_json, translated, union
from app.db.studies import ENROLMENT_FIELDS
from app.studies import Enrolment

Credentials = tuple[str, bool, str, Enrolment | None]


def _credentials(row: list[str | None]) -> Credentials | None:
    protocol, active, digest, *enrolled = row
    if protocol is None:
        return None
    window = Enrolment.from_hash({k: v for k, v in zip(ENROLMENT_FIELDS, enrolled, strict=True) if v})
    return str(protocol), active == "1", str(digest or ""), window


class PushDevices:
    """Push devices: their key digests, what they said about themselves, refused uploads."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def push_credentials(self, cloud_ids: Sequence[str]) -> dict[str, Credentials | None]:
        """Each device's (protocol, active, push key digest, its consent window), None for one
        that is unknown: one round trip however many devices are asked."""
        names = ["protocol", "active", "push_key_sha256", *ENROLMENT_FIELDS]
        what = f"read the push key of {cloud_ids[0]}" + (
            f" and {len(cloud_ids) - 1} more" if cloud_ids[1:] else ""
        )
        async with translated(what), self.redis.pipeline(transaction=False) as pipe:
            for cloud_id in cloud_ids:
                pipe.hmget(keys.device(cloud_id), names)
            rows = await pipe.execute()
        return {cloud_id: _credentials(row) for cloud_id, row in zip(cloud_ids, rows, strict=True)}

    async def count_push_rejected(self, cloud_id: str) -> None:
        """One more upload from this push device that could not be taken (too large, unreadable)."""
        async with translated(f"count a refused upload of {cloud_id}"):
            await aw(self.redis.hincrby(keys.device(cloud_id), "push_rejected", 1))

    async def note_refused(self, cloud_id: str, now: float) -> None:
        """An upload refused for a wrong key: counted, with when the refusals began (app.health)."""
        key = keys.device(cloud_id)
        async with (
            translated(f"count a refused key of {cloud_id}"),
            self.redis.pipeline(transaction=True) as pipe,
        ):
            pipe.hincrby(key, "push_refused", 1)
            pipe.hset(key, "push_refused_at", repr(now))
            pipe.hsetnx(key, "push_refused_since", repr(now))
            await pipe.execute()

    async def record_push_info(self, cloud_id: str, fragments: dict[str, dict[str, str]]) -> None:
        """Keep what a push device said about itself (NetworkInfo, DeviceInfo, ...), newest wins."""
        async with translated(f"record what {cloud_id} pushed about itself"):
            current = await aw(self.redis.hget(keys.device(cloud_id), "push_info"))
            merged = {**(orjson.loads(current) if current else {}), **fragments}
            await aw(self.redis.eval(SET_IF_EXISTS, 1, keys.device(cloud_id), "push_info", to_json(merged)))

    async def push_device_ids(self) -> list[str]:
        async with translated("list push devices"):
            return sorted(await union(self.redis, map(keys.devices_push, keys.groups())))
