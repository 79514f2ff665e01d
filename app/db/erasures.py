"""Erasures in Redis: each tombstone, the marks every process checks, and the sweep that removes
every trace of a household from Redis (and, asked to look only, finds what is left).

The sweep reads every key once (SCAN, then HSCAN/SSCAN/ZSCAN/LRANGE by type): a key whose name
holds the cloud_id goes, and so does a field, member or element of a shared key (the fleet's
indexes, owners, completeness days, alert messages) whose name or value holds it. A cloud_id
counts only as a whole word (no hex digit either side), so a digest that happens to contain its
six characters is left alone. The erasure's own tombstone and the marks are not swept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import orjson
import redis.asyncio as aioredis

from app import keys
from app.db.common import aw, translated
from app.erasure.marks import Mark, Marks
from app.erasure.tombstone import DONE, Tombstone
from app.errors import ConfigError

SCAN_COUNT = 1000

# KEYS: the tombstone, the index of tombstones, the marks. ARGV: tombstone id, requested_at,
# digest (empty: no mark), mark JSON, then the tombstone's field/value pairs. A tombstone already
# there is kept as it is (the erasure resumes); asking to erase a plain withdrawal upgrades it.
_BEGIN = """
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists or (redis.call('HGET', KEYS[1], 'erase') ~= '1' and ARGV[3] ~= '') then
  if exists then redis.call('DEL', KEYS[1]) end
  redis.call('HSET', KEYS[1], unpack(ARGV, 5, #ARGV))
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  exists = false
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], ARGV[3], ARGV[4]) end
return exists and 0 or 1
"""

# KEYS: the tombstone. ARGV: runner, now, lease_until, a holder known dead (or ''). 1 when this
# runner holds it now.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
local holder = redis.call('HGET', KEYS[1], 'runner')
local until_ = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
if holder and holder ~= '' and holder ~= ARGV[1] and holder ~= ARGV[4] and until_ > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'runner', ARGV[1], 'lease_until', ARGV[3])
return 1
"""


@dataclass
class Traces:
    """What the sweep found (or removed): whole keys, and fields, members or elements of others."""

    keys: int = 0
    fields: int = 0

    def public(self) -> dict[str, int]:
        return {"keys": self.keys, "fields": self.fields}


class Erasures:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._begin = redis.register_script(_BEGIN)
        self._claim = redis.register_script(_CLAIM)

    async def begin(self, tomb: Tombstone, mark: Mark | None) -> bool:
        """Write the tombstone (and the household's mark, when erasing); False when one was there."""
        flat = [v for pair in tomb.fields().items() for v in pair]
        mark_json = orjson.dumps(mark.__dict__).decode() if mark is not None else ""
        async with translated(f"begin the erasure of {tomb.id}"):
            made = await self._begin(
                keys=[keys.erasure(tomb.study, tomb.participant_id), keys.erasures(), keys.erased()],
                args=[tomb.id, repr(tomb.requested_at), tomb.digest if mark else "", mark_json, *flat],
            )
        return bool(made)

    async def get(self, study: str, participant_id: str) -> Tombstone | None:
        async with translated(f"read the tombstone of {study}/{participant_id}"):
            h = cast(dict[str, str], await aw(self.redis.hgetall(keys.erasure(study, participant_id))))
        return Tombstone.from_hash(h) if h.get("study") else None

    async def all(self) -> list[Tombstone]:
        async with translated("list the erasures"):
            ids = cast(list[str], await self.redis.zrange(keys.erasures(), 0, -1))
        found = [await self.get(*i.split("/", 1)) for i in ids]
        return [t for t in found if t is not None]

    async def claim(self, tomb: Tombstone, runner: str, now: float, lease_s: float, dead: str = "") -> bool:
        """Hold the erasure for `lease_s` (renewed by its holder), unless another runner holds it;
        `dead` names a holder known to be gone (a process of this host that no longer runs)."""
        async with translated(f"claim the erasure of {tomb.id}"):
            key = keys.erasure(tomb.study, tomb.participant_id)
            args = [runner, repr(now), repr(now + lease_s), dead]
            return bool(await self._claim(keys=[key], args=args))

    async def step_done(self, tomb: Tombstone, step: str, counts: dict[str, object]) -> None:
        tomb.steps[step] = counts
        async with translated(f"record a step of the erasure of {tomb.id}"):
            key = keys.erasure(tomb.study, tomb.participant_id)
            await aw(self.redis.hset(key, f"step:{step}", orjson.dumps(counts).decode()))

    async def host_report(self, tombstone_id: str, host: str, files: int, size: int, at: float) -> None:
        """A host's local files of the household removed: added to what it reported before."""
        study, pid = tombstone_id.split("/", 1)
        key = keys.erasure(study, pid)
        async with translated(f"report local erasure of {tombstone_id}"):
            if not await aw(self.redis.exists(key)):
                return
            old = cast(str | None, await aw(self.redis.hget(key, f"host:{host}")))
            was = orjson.loads(old) if old else {"files": 0, "bytes": 0}
            now = {"files": was["files"] + files, "bytes": was["bytes"] + size, "at": round(at, 3)}
            await aw(self.redis.hset(key, f"host:{host}", orjson.dumps(now).decode()))

    async def finish(self, tomb: Tombstone, at: float) -> None:
        """Done: the tombstone forgets the cloud_id and keeps its counts."""
        tomb.state, tomb.finished_at, tomb.cloud_id = DONE, at, ""
        key = keys.erasure(tomb.study, tomb.participant_id)
        async with (
            translated(f"finish the erasure of {tomb.id}"),
            self.redis.pipeline(transaction=True) as pipe,
        ):
            pipe.hset(key, mapping={"state": DONE, "finished_at": repr(at)})
            pipe.hdel(key, "cloud_id", "runner", "lease_until")
            await pipe.execute()

    async def marks(self, secret_key: str) -> Marks:
        """Every erased household's mark; a ConfigError when there are marks but no SECRET_KEY to
        recognise them by (then nothing may be shipped or kept blindly)."""
        async with translated("read the erasure marks"):
            found = cast(dict[str, str], await aw(self.redis.hgetall(keys.erased())))
        if found and not secret_key.strip():
            raise ConfigError("households were erased, and SECRET_KEY is not set to recognise them.")
        return Marks(secret_key, {d: Mark(**orjson.loads(v)) for d, v in found.items()})

    async def sweep(self, cloud_id: str, remove: bool) -> Traces:
        """Find (and with `remove`, delete) every trace of `cloud_id` in Redis (see the module)."""
        word = re.compile(r"(?<![0-9a-f])" + re.escape(cloud_id) + r"(?![0-9a-f])")
        async with translated(f"sweep Redis for {cloud_id}"):
            return await self._walk(word, remove)

    async def cloud_ids(self) -> set[str]:
        """Every word of six hex digits anywhere in Redis (the receipt looks for an erased
        household among them by its keyed digest, the tombstone having forgotten its cloud_id)."""
        found: set[str] = set()
        async with translated("list the cloud_ids Redis names"):
            await self._walk(re.compile(r"(?<![0-9a-f])[0-9a-f]{6}(?![0-9a-f])"), False, found)
        return found

    async def _walk(self, word: re.Pattern[str], remove: bool, collect: set[str] | None = None) -> Traces:
        """Every key (but the erasures' own) whose name, or a field, member, element or value of
        which, `word` finds; removed with `remove`; the words found gathered into `collect`."""

        def hit(text: object) -> bool:
            found = word.findall(str(text))
            if collect is not None:
                collect.update(found)
            return bool(found)

        spared = {keys.erased(), keys.erasures()}
        spared_prefix = keys.erasure("", "")[:-2]
        traces = Traces()
        r = self.redis
        async for raw in r.scan_iter(count=SCAN_COUNT):
            key = str(raw)
            if key in spared or key.startswith(spared_prefix):
                continue
            if hit(key):
                traces.keys += 1
                if remove:
                    await aw(r.delete(key))
                continue
            traces.fields += await self._walk_key(key, hit, remove)
        return traces

    async def _walk_key(self, key: str, hit: Callable[[object], bool], remove: bool) -> int:
        r = self.redis
        kind = str(await aw(r.type(key)))
        found = 0
        if kind == "hash":
            async for f, v in r.hscan_iter(key, count=SCAN_COUNT):
                if hit(f) | hit(v):
                    found += 1
                    if remove:
                        await aw(r.hdel(key, f))
        elif kind == "set":
            async for m in r.sscan_iter(key, count=SCAN_COUNT):
                if hit(m):
                    found += 1
                    if remove:
                        await aw(r.srem(key, m))
        elif kind == "zset":
            async for m, _score in r.zscan_iter(key, count=SCAN_COUNT):
                if hit(m):
                    found += 1
                    if remove:
                        await aw(r.zrem(key, m))
        elif kind == "list":
            for item in cast(list[str], await aw(r.lrange(key, 0, -1))):
                if hit(item):
                    found += 1
                    if remove:
                        await aw(r.lrem(key, 0, item))
        elif kind == "string":
            value = await aw(r.get(key))
            if value is not None and hit(value):
                found += 1
                if remove:
                    await aw(r.delete(key))
        return found
