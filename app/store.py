"""The device registry and per-device counters in Redis, named for what they do.

Counters change with HINCRBY/HSET in pipelines; nothing on the hot path uses KEYS or rewrites
a whole record. Every change to the device list is published so pingers pick it up at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Container, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app import keys
from app.completeness import HourCounts, longest_gap_s
from app.credentials import Vault
from app.devices import PUSH, SECRET_FIELDS, DeviceInput, DeviceRecord, new_push_key, push_key_digest
from app.errors import CredentialError, StoreError
from app.hours import Day, Hour

CHUNK = 1000  # commands per pipeline round trip when loading the fleet
FAILURES_KEPT = 20  # recent failures kept per device (each change of kind)
BATCH_TTL_S = 86400  # how long an applied counter batch's token is remembered


@dataclass
class PollUpdate:
    """What one or more polls of a device changed since the last flush (merged in memory)."""

    cloud_id: str
    events: int = 0
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    last_success_at: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    last_reading: str | None = None
    failures: list[tuple[float, str]] = field(default_factory=list)  # (when, reason) as the kind changed

    def merge(self, newer: PollUpdate) -> None:
        """Fold a later update into this one, so an outage's backlog is one write per device."""
        self.events += newer.events
        if self.first_timestamp is None:
            self.first_timestamp = newer.first_timestamp
        if newer.last_timestamp is not None:
            self.last_timestamp = newer.last_timestamp
            self.last_reading = newer.last_reading
        if newer.last_success_at is not None:
            self.last_success_at = newer.last_success_at
        self.consecutive_failures = newer.consecutive_failures
        if newer.last_error is not None:
            self.last_error = newer.last_error
        self.failures = (self.failures + newer.failures)[-FAILURES_KEPT:]


T = TypeVar("T")


@dataclass(frozen=True)
class Registered:
    """What saving a device did, and the push key made for it (shown once), if any."""

    outcome: str  # created, updated, unchanged
    push_key: str | None = field(default=None, repr=False)


def aw(value: Awaitable[T] | T) -> Awaitable[T]:
    """redis-py's asyncio methods are typed as returning `Awaitable[T] | T`; they always await."""
    return cast(Awaitable[T], value)


@asynccontextmanager
async def translated(action: str) -> AsyncIterator[None]:
    """Turn Redis and socket errors inside the block into StoreError naming the action."""
    try:
        yield
    except RedisError as exc:
        raise StoreError(f"Redis failed while trying to {action}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"Redis is unreachable while trying to {action}: {exc}") from exc


class Store:
    """Domain operations on Redis. One per process; pass it down."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._record_polls = redis.register_script(_RECORD_POLLS)
        self._add_completeness = redis.register_script(_ADD_COMPLETENESS)

    @classmethod
    def from_url(cls, url: str, max_connections: int = 50) -> Store:
        """A client whose pool waits (up to 5 s) for a free connection instead of failing a burst."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        return cls(aioredis.Redis(connection_pool=pool))

    async def close(self) -> None:
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def ping(self) -> bool:
        async with translated("ping"):
            return bool(await aw(self.redis.ping()))

    # --- the registry ------------------------------------------------------------------

    async def upsert_device(self, inp: DeviceInput, vault: Vault, now: float | None = None) -> bool:
        """Create or update a device; counters are kept on update. True when it was new."""
        now = time.time() if now is None else now
        key = keys.device(inp.cloud_id)
        fields = inp.stored_fields()
        if inp.protocol != PUSH:
            fields[SECRET_FIELDS[inp.protocol]] = vault.encrypt(inp.secret)
        elif inp.push_key:
            fields["push_key_sha256"] = push_key_digest(inp.push_key)
        stale = {"user_pw_enc", "install_code_enc", "push_key_sha256"} - fields.keys()
        if inp.protocol == PUSH and not inp.push_key:
            stale.discard("push_key_sha256")  # an update without a key keeps the one the gateway has
        async with translated(f"save device {inp.cloud_id}"), self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "created_at", repr(now))
            pipe.hset(key, mapping=cast(dict[Any, Any], fields))
            pipe.hdel(key, *stale)  # a device that changed protocol keeps no stale secret
            if inp.protocol == PUSH and inp.active:
                pipe.sadd(keys.devices_push(), inp.cloud_id)
            else:
                pipe.srem(keys.devices_push(), inp.cloud_id)
            pipe.sadd(keys.devices_all(), inp.cloud_id)
            if inp.active and inp.protocol != PUSH:  # push devices are never polled
                pipe.sadd(keys.devices_active(), inp.cloud_id)
            else:
                pipe.srem(keys.devices_active(), inp.cloud_id)
            pipe.publish(keys.devices_changed(), inp.cloud_id)
            created, *_ = await pipe.execute()
        return bool(created)

    async def save_device(self, inp: DeviceInput, vault: Vault) -> str:
        """Create or update a device: "created", "updated", or "unchanged" (nothing written)."""
        return (await self.register(inp, vault)).outcome

    async def register(self, inp: DeviceInput, vault: Vault) -> Registered:
        """Create or update a device; a push device registered without a key gets one, returned
        here once (only its digest is kept)."""
        current = await self.get_device(inp.cloud_id)
        made_key = None
        has_key = current is not None and current.protocol == PUSH and bool(current.push_key_sha256)
        if inp.protocol == PUSH and not inp.push_key and not has_key:
            made_key = new_push_key()
            inp = replace(inp, push_key=made_key)
        if current is not None and _same(current, inp, vault):
            return Registered("unchanged")
        created = await self.upsert_device(inp, vault)
        return Registered("created" if created else "updated", made_key)

    async def deactivate_device(self, cloud_id: str) -> bool:
        """Stop polling a device, keeping its record and data. False when it is unknown."""
        key = keys.device(cloud_id)
        async with translated(f"deactivate device {cloud_id}"):
            if not await self.redis.exists(key):
                return False
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, "active", "0")
                pipe.srem(keys.devices_active(), cloud_id)
                pipe.srem(keys.devices_push(), cloud_id)
                pipe.publish(keys.devices_changed(), cloud_id)
                await pipe.execute()
        return True

    async def activate_device(self, cloud_id: str) -> bool:
        """Poll a deactivated device again (push devices: take its uploads again)."""
        record = await self.get_device(cloud_id)
        if record is None:
            return False
        key = keys.device(cloud_id)
        async with translated(f"activate device {cloud_id}"), self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "active", "1")
            pipe.sadd(keys.devices_push() if record.protocol == PUSH else keys.devices_active(), cloud_id)
            pipe.publish(keys.devices_changed(), cloud_id)
            await pipe.execute()
        return True

    async def record_crawl(self, cloud_id: str, crawl: dict[str, Any], keep: int) -> list[str]:
        """Keep a crawl (newest first, `keep` of them) and what changed since the last; returns that."""
        async with translated(f"record a crawl of {cloud_id}"):
            previous = await aw(self.redis.hget(keys.device(cloud_id), "crawl"))
            before = orjson.loads(previous) if previous else {}
            fields = crawl.get("fields", {})
            changed = sorted(k for k in fields if before and before.get(k) != fields[k])
            entry = {**crawl, "changed": changed}
            async with self.redis.pipeline(transaction=True) as pipe:
                if fields:  # a failed crawl keeps the last good description on the record
                    pipe.eval(_SET_IF_EXISTS, 1, keys.device(cloud_id), "crawl", _json(fields))
                pipe.lpush(keys.crawls(cloud_id), _json(entry))
                pipe.ltrim(keys.crawls(cloud_id), 0, keep - 1)
                await pipe.execute()
        return changed

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

    async def recent_failures(self, cloud_id: str) -> list[dict[str, Any]]:
        """A device's recent failures, newest first: when, and the reason with its kind."""
        async with translated(f"read the failures of {cloud_id}"):
            found = cast(
                list[str], await aw(self.redis.lrange(keys.failures(cloud_id), 0, FAILURES_KEPT - 1))
            )
        return [orjson.loads(item) for item in found]

    async def crawl_history(self, cloud_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """A device's crawls, newest first."""
        async with translated(f"read the crawls of {cloud_id}"):
            found = cast(list[str], await aw(self.redis.lrange(keys.crawls(cloud_id), 0, limit - 1)))
        return [orjson.loads(item) for item in found]

    async def get_device(self, cloud_id: str) -> DeviceRecord | None:
        async with translated(f"read device {cloud_id}"):
            h = cast(dict[str, str], await aw(self.redis.hgetall(keys.device(cloud_id))))
        return DeviceRecord.from_hash(h) if h else None

    async def active_ids(self) -> set[str]:
        async with translated("list active devices"):
            return cast(set[str], await aw(self.redis.smembers(keys.devices_active())))

    async def unknown_ids(self, cloud_ids: Sequence[str]) -> list[str]:
        """Those of `cloud_ids` never registered, in the order given (one round trip)."""
        async with translated("check devices"):
            known = await aw(self.redis.smismember(keys.devices_all(), list(cloud_ids)))
        return [cid for cid, ok in zip(cloud_ids, known, strict=True) if not ok]

    async def device_count(self) -> int:
        async with translated("count devices"):
            return int(await aw(self.redis.scard(keys.devices_all())))

    async def all_ids(self) -> list[str]:
        async with translated("list devices"):
            return sorted(cast(set[str], await aw(self.redis.smembers(keys.devices_all()))))

    async def load_devices(self, cloud_ids: Iterable[str]) -> list[DeviceRecord]:
        """Records for many devices, fetched in pipelined chunks; unknown ids are skipped."""
        ids = list(cloud_ids)
        records: list[DeviceRecord] = []
        async with translated("load device records"):
            for start in range(0, len(ids), CHUNK):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for cid in ids[start : start + CHUNK]:
                        pipe.hgetall(keys.device(cid))
                    hashes = await pipe.execute()
                records.extend(DeviceRecord.from_hash(h) for h in hashes if h)
        return records

    async def all_devices(self) -> list[DeviceRecord]:
        """Every registered device, ordered by cloud_id (the id set read once)."""
        return await self.load_devices(await self.all_ids())

    async def list_devices(
        self,
        *,
        after: str = "",
        limit: int = 100,
        active: bool | None = None,
        status: str | None = None,
    ) -> tuple[list[DeviceRecord], str | None]:
        """A page of devices ordered by cloud_id after the cursor, and the next cursor."""
        ids = [cid for cid in await self.all_ids() if cid > after]
        page: list[DeviceRecord] = []
        for start in range(0, len(ids), CHUNK):  # stop loading once the page is full
            for record in await self.load_devices(ids[start : start + CHUNK]):
                if active is not None and record.active != active:
                    continue
                if status is not None and record.status != status:
                    continue
                page.append(record)
                if len(page) == limit:
                    more = record.cloud_id != ids[-1]
                    return page, (record.cloud_id if more else None)
        return page, None

    async def record_backfill(self, cloud_id: str, summary: dict[str, Any]) -> None:
        """Keep the last refill from a gateway's history (range, lines written) on its record."""
        async with translated(f"record a history refill of {cloud_id}"):
            await aw(
                self.redis.eval(_SET_IF_EXISTS, 1, keys.device(cloud_id), "last_backfill", _json(summary))
            )

    async def push_credentials(self, cloud_id: str) -> tuple[str, bool, str] | None:
        """(protocol, active, push key digest) of a device, or None when it is unknown."""
        async with translated(f"read the push key of {cloud_id}"):
            protocol, active, digest = await aw(
                self.redis.hmget(keys.device(cloud_id), ["protocol", "active", "push_key_sha256"])
            )
        if protocol is None:
            return None
        return str(protocol), active == "1", str(digest or "")

    async def count_push_rejected(self, cloud_id: str) -> None:
        """One more upload from this push device that could not be taken (too large, unreadable)."""
        async with translated(f"count a refused upload of {cloud_id}"):
            await aw(self.redis.hincrby(keys.device(cloud_id), "push_rejected", 1))

    async def record_push_info(self, cloud_id: str, fragments: dict[str, dict[str, str]]) -> None:
        """Keep what a push device said about itself (NetworkInfo, DeviceInfo, ...), newest wins."""
        async with translated(f"record what {cloud_id} pushed about itself"):
            current = await aw(self.redis.hget(keys.device(cloud_id), "push_info"))
            merged = {**(orjson.loads(current) if current else {}), **fragments}
            await aw(self.redis.eval(_SET_IF_EXISTS, 1, keys.device(cloud_id), "push_info", _json(merged)))

    async def push_device_ids(self) -> list[str]:
        async with translated("list push devices"):
            return sorted(cast(set[str], await aw(self.redis.smembers(keys.devices_push()))))

    async def add_completeness(
        self, counts: dict[tuple[str, int], HourCounts], keep_s: float, token: str | None = None
    ) -> None:
        """Add counts to their device-hours (the longest gap kept as a maximum), one script per
        CHUNK device-hours, each applied whole and at most once per token (see record_polls)."""
        items = list(counts.items())
        token = token or uuid.uuid4().hex
        async with translated("record completeness"):
            for n, start in enumerate(range(0, len(items), CHUNK)):
                names: list[str] = [keys.applied_batch(f"{token}:{n}")]
                args: list[str | int] = [BATCH_TTL_S, int(keep_s)]
                for (cid, hour), c in items[start : start + CHUNK]:
                    day = Hour(hour).day.key
                    names += [
                        keys.completeness(cid, hour),
                        keys.completeness_hour(hour),
                        keys.completeness_day(day),
                    ]
                    args += [cid, c.scheduled, c.ok, c.readings, repr(c.longest_gap_s)]
                await self._add_completeness(keys=names, args=args)

    async def add_duplicates(self, cloud_id: str, hour: int, duplicates: int, keep_s: float) -> None:
        """Count readings a further archived part of a device-hour repeats (rotate finds them)."""
        ttl = int(keep_s)
        async with translated("record duplicates"), self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.completeness(cloud_id, hour), "duplicates", duplicates)
            pipe.expire(keys.completeness(cloud_id, hour), ttl)
            pipe.sadd(keys.completeness_hour(hour), cloud_id)
            pipe.expire(keys.completeness_hour(hour), ttl)
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

    async def add_fleet_demand(self, now: float, kw: float, devices: int) -> None:
        """Add one pinger's share of the fleet's demand to this minute (each pinger once a minute)."""
        today = Day.at(now)
        day, minute = today.key, int((now - today.start) // 60)
        async with translated("record the fleet's demand"), self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrbyfloat(keys.fleet_demand(day), str(minute), kw)
            pipe.hincrby(keys.fleet_demand(day), f"{minute}:n", devices)
            pipe.expire(keys.fleet_demand(day), 3 * 86400)
            await pipe.execute()

    async def fleet_demand(self, since: float, until: float) -> list[tuple[int, float, int]]:
        """(minute start, kW, devices) of each minute with figures between two times."""
        days = sorted({Day.at(t) for t in (since, until)})
        out = []
        async with translated("read the fleet's demand"):
            for day in days:
                h = cast(dict[str, str], await aw(self.redis.hgetall(keys.fleet_demand(day.key))))
                base = day.start
                for name, value in h.items():
                    if ":" not in name:
                        at = base + int(name) * 60
                        if since <= at <= until:
                            out.append((at, round(float(value), 3), int(h.get(f"{name}:n", "0"))))
        return sorted(out)

    async def completeness_day(self, day: str) -> dict[str, tuple[int, int, int]]:
        """cloud_id → (scheduled, ok, readings) for one UTC day (YYYY-MM-DD), in one command."""
        async with translated("read a day's completeness"):
            h = cast(dict[str, str], await aw(self.redis.hgetall(keys.completeness_day(day))))
        out: dict[str, list[int]] = {}
        for name, value in h.items():
            cid, _, which = name.partition(":")
            out.setdefault(cid, [0, 0, 0])["sor".index(which)] = int(value)
        return {cid: (v[0], v[1], v[2]) for cid, v in out.items()}

    async def completeness_devices(self, hour: int) -> list[str]:
        """The cloud_ids with counts for an hour."""
        async with translated("list an hour's devices"):
            return sorted(cast(set[str], await aw(self.redis.smembers(keys.completeness_hour(hour)))))

    async def latest_reading(self, cloud_id: str) -> str | None:
        """The last logged reading of a device as its JSON line, or None."""
        async with translated(f"read the latest reading of {cloud_id}"):
            value = cast(str | None, await aw(self.redis.hget(keys.device(cloud_id), "last_reading")))
        return value if value else None

    # --- the pinger's batched writes ---------------------------------------------------------

    async def record_polls(self, updates: Sequence[PollUpdate], token: str | None = None) -> None:
        """Apply poll outcomes, one script per CHUNK devices. Each chunk is applied whole or not
        at all and under a token (`token`:n, or a fresh one): sending the same chunk again with
        the same token applies nothing twice, so a retry after a reply lost in an outage never
        counts readings twice."""
        token = token or uuid.uuid4().hex
        async with translated("record poll results"):
            for n, start in enumerate(range(0, len(updates), CHUNK)):
                chunk = updates[start : start + CHUNK]
                names = [keys.applied_batch(f"{token}:{n}")]
                for u in chunk:
                    names += [keys.device(u.cloud_id), keys.failures(u.cloud_id)]
                args = [BATCH_TTL_S, FAILURES_KEPT, *(value for u in chunk for value in _poll_args(u))]
                await self._record_polls(keys=names, args=args)

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

    # --- the archive -------------------------------------------------------------------

    async def record_archived(self, cloud_id: str, hour: str, new_hour: bool) -> None:
        """Count a device-hour rotate put in the archive and keep the latest such hour.

        Only devices still registered are touched, so an old device's files never recreate it.
        """
        async with translated("record an archived hour"):
            await aw(self.redis.eval(_RECORD_ARCHIVED, 1, keys.device(cloud_id), hour, 1 if new_hour else 0))

    async def record_rotate_pass(self, summary: dict[str, str]) -> None:
        async with translated("record the rotate pass"):
            await aw(self.redis.hset(keys.rotate_last_pass(), mapping=cast(dict[Any, Any], summary)))

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
            for process_id, beat in found:
                info = await aw(self.redis.hgetall(keys.process(kind, process_id)))
                out.append((str(process_id), float(beat), cast(dict[str, str], info)))
        return out

    async def rotate_last_pass(self) -> dict[str, str]:
        async with translated("read the last rotate pass"):
            return cast(dict[str, str], await aw(self.redis.hgetall(keys.rotate_last_pass())))


_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


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

_RECORD_ARCHIVED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], 'archived_hours', 1) end
local last = redis.call('HGET', KEYS[1], 'last_archived_hour')
if (not last) or last < ARGV[1] then redis.call('HSET', KEYS[1], 'last_archived_hour', ARGV[1]) end
return 1
"""


def _same(record: DeviceRecord, inp: DeviceInput, vault: Vault) -> bool:
    if record.protocol != inp.protocol:
        return False
    if inp.protocol == PUSH:
        secret_same = not inp.push_key or push_key_digest(inp.push_key) == record.push_key_sha256
    else:
        try:
            secret_same = vault.decrypt(record.encrypted_secret) == inp.secret
        except CredentialError:
            return False  # unreadable under the current key: rewrite it
    mine = (record.user_email, record.address, record.tls_verify, record.tls_fingerprint, record.active)
    return secret_same and mine == (
        inp.user_email, inp.address, inp.tls_verify, inp.tls_fingerprint, inp.active,
    )  # fmt: skip


# A cycle's poll outcomes in one script per chunk of devices: KEYS[1] is the batch's token (set
# when the script completes; the script does nothing when it was applied already), then two
# keys per device (its hash, its failures list); ARGV the token's lifetime and how many
# failures to keep, then eight values per device (events, first, last, last_success,
# consecutive_failures, "-" + error, last_reading, failures as JSON lines; "" for none). One
# command instead of two or three per device: far less for the pinger to pack and parse, which
# is most of what a flush costs it.
_RECORD_POLLS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local devices = (#KEYS - 1) / 2
for i = 0, devices - 1 do
  local b = 2 + i * 8
  local key, failures = KEYS[2 + i * 2], KEYS[3 + i * 2]
  redis.call('HSET', key, 'consecutive_failures', ARGV[b + 5])
  if ARGV[b + 6] ~= '' then redis.call('HSET', key, 'last_error', string.sub(ARGV[b + 6], 2)) end
  if ARGV[b + 4] ~= '' then redis.call('HSET', key, 'last_success_at', ARGV[b + 4]) end
  if ARGV[b + 3] ~= '' then redis.call('HSET', key, 'last_timestamp', ARGV[b + 3]) end
  if ARGV[b + 7] ~= '' then redis.call('HSET', key, 'last_reading', ARGV[b + 7]) end
  if ARGV[b + 1] ~= '0' then redis.call('HINCRBY', key, 'total_events_logged', ARGV[b + 1]) end
  if ARGV[b + 2] ~= '' then redis.call('HSETNX', key, 'first_timestamp', ARGV[b + 2]) end
  if ARGV[b + 8] ~= '' then
    for line in string.gmatch(ARGV[b + 8], '[^\\n]+') do redis.call('LPUSH', failures, line) end
    redis.call('LTRIM', failures, 0, tonumber(ARGV[2]) - 1)
  end
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return devices
"""


def _poll_args(u: PollUpdate) -> tuple[str | int, ...]:
    return (
        u.events,
        "" if u.first_timestamp is None else repr(u.first_timestamp),
        "" if u.last_timestamp is None else repr(u.last_timestamp),
        "" if u.last_success_at is None else repr(u.last_success_at),
        u.consecutive_failures,
        "" if u.last_error is None else "-" + u.last_error,
        u.last_reading or "",
        "\n".join(_json({"at": round(at, 3), "reason": r}) for at, r in u.failures),
    )
