"""The device registry in Redis: each record, its counters and recent failures, the id sets.

Counters change with HINCRBY/HSET in pipelines or one script per chunk; nothing on the hot path
uses KEYS or rewrites a whole record. Every change to the device list is published so pingers
pick it up at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from app import keys
from app.credentials import Vault
from app.db.common import BATCH_TTL_S, CHUNK, SET_IF_EXISTS, aw, publish, to_json, translated, union
from app.devices import PUSH, SECRET_FIELDS, DeviceInput, DeviceRecord, new_push_key, push_key_digest
from app.errors import CredentialError

FAILURES_KEPT = 20  # recent failures kept per device (each change of kind)


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
    fields: dict[str, str] = field(default_factory=dict)  # more fields to set ("": remove); app.health

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
        self.fields.update(newer.fields)


@dataclass(frozen=True)
class Registered:
    """What saving a device did, and the push key made for it (shown once), if any."""

    outcome: str  # created, updated, unchanged
    push_key: str | None = field(default=None, repr=False)


class Devices:
    """The device registry: records, their counters and recent failures, the id sets."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._record_polls = redis.register_script(_RECORD_POLLS)

    async def upsert_device(self, inp: DeviceInput, vault: Vault, now: float | None = None) -> bool:
        """Create or update a device; counters are kept on update. True when it was new."""
        now = time.time() if now is None else now
        key, g = keys.device(inp.cloud_id), keys.group(inp.cloud_id)
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
                pipe.sadd(keys.devices_push(g), inp.cloud_id)
            else:
                pipe.srem(keys.devices_push(g), inp.cloud_id)
            pipe.sadd(keys.devices_all(g), inp.cloud_id)
            if inp.active and inp.protocol != PUSH:  # push devices are never polled
                pipe.sadd(keys.devices_active(g), inp.cloud_id)
            else:
                pipe.srem(keys.devices_active(g), inp.cloud_id)
            publish(pipe, keys.devices_changed(g), inp.cloud_id)
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

    async def set_api(self, cloud_id: str, api: str) -> None:
        """An EAGLE-100's local API, as a check found it (pingers pick the change up at once)."""
        async with translated(f"set the API of {cloud_id}"):  # no script in a cluster's transaction
            await aw(self.redis.eval(SET_IF_EXISTS, 1, keys.device(cloud_id), "api", api))
            await aw(publish(self.redis, keys.devices_changed(keys.group(cloud_id)), cloud_id))

    async def deactivate_device(self, cloud_id: str) -> bool:
        """Stop polling a device, keeping its record and data. False when it is unknown."""
        key, g = keys.device(cloud_id), keys.group(cloud_id)
        async with translated(f"deactivate device {cloud_id}"):
            if not await self.redis.exists(key):
                return False
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, "active", "0")
                pipe.srem(keys.devices_active(g), cloud_id)
                pipe.srem(keys.devices_push(g), cloud_id)
                publish(pipe, keys.devices_changed(g), cloud_id)
                await pipe.execute()
        return True

    async def activate_device(self, cloud_id: str) -> bool:
        """Poll a deactivated device again (push devices: take its uploads again)."""
        record = await self.get_device(cloud_id)
        if record is None:
            return False
        key, g = keys.device(cloud_id), keys.group(cloud_id)
        async with translated(f"activate device {cloud_id}"), self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"active": "1", "activated_at": repr(time.time())})
            pipe.hdel(key, "health", "health_since", "condition", "condition_since")  # judged afresh
            pipe.sadd(keys.devices_push(g) if record.protocol == PUSH else keys.devices_active(g), cloud_id)
            publish(pipe, keys.devices_changed(g), cloud_id)
            await pipe.execute()
        return True

    async def get_device(self, cloud_id: str) -> DeviceRecord | None:
        async with translated(f"read device {cloud_id}"):
            h = cast(dict[str, str], await aw(self.redis.hgetall(keys.device(cloud_id))))
        return DeviceRecord.from_hash(h) if h else None

    async def active_ids(self) -> set[str]:
        async with translated("list active devices"):
            return await union(self.redis, map(keys.devices_active, keys.groups()))

    async def unknown_ids(self, cloud_ids: Sequence[str]) -> list[str]:
        """Those of `cloud_ids` never registered, in the order given (one round trip)."""
        by_group = keys.grouped(cloud_ids)
        async with translated("check devices"), self.redis.pipeline(transaction=False) as pipe:
            for g, ids in by_group.items():
                pipe.smismember(keys.devices_all(g), ids)
            found = await pipe.execute()
        known = {
            cid
            for ids, oks in zip(by_group.values(), found, strict=True)
            for cid, ok in zip(ids, oks, strict=True)
            if ok
        }
        return [cid for cid in cloud_ids if cid not in known]

    async def device_count(self) -> int:
        async with translated("count devices"), self.redis.pipeline(transaction=False) as pipe:
            for g in keys.groups():
                pipe.scard(keys.devices_all(g))
            return sum(await pipe.execute())

    async def all_ids(self) -> list[str]:
        async with translated("list devices"):
            return sorted(await union(self.redis, map(keys.devices_all, keys.groups())))

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
                records.extend(DeviceRecord.from_hash(h) for h in hashes if h.get("cloud_id"))  # none partial
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
        keep: Callable[[DeviceRecord], bool] | None = None,
        among: Iterable[str] | None = None,
    ) -> tuple[list[DeviceRecord], str | None]:
        """A page of devices ordered by cloud_id after the cursor, and the next cursor; `among`
        limits it to those ids (a study's households: read those, not the whole registry)."""
        ids = [cid for cid in (sorted(among) if among is not None else await self.all_ids()) if cid > after]
        page: list[DeviceRecord] = []
        for start in range(0, len(ids), CHUNK):  # stop loading once the page is full
            for record in await self.load_devices(ids[start : start + CHUNK]):
                if active is not None and record.active != active:
                    continue
                if status is not None and record.status != status:
                    continue
                if keep is not None and not keep(record):
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
                self.redis.eval(SET_IF_EXISTS, 1, keys.device(cloud_id), "last_backfill", to_json(summary))
            )

    async def latest_reading(self, cloud_id: str) -> str | None:
        """The last logged reading of a device as its JSON line, or None."""
        async with translated(f"read the latest reading of {cloud_id}"):
            value = cast(str | None, await aw(self.redis.hget(keys.device(cloud_id), "last_reading")))
        return value if value else None

    async def recent_failures(self, cloud_id: str) -> list[dict[str, Any]]:
        """A device's recent failures, newest first: when, and the reason with its kind."""
        async with translated(f"read the failures of {cloud_id}"):
            found = cast(
                list[str], await aw(self.redis.lrange(keys.failures(cloud_id), 0, FAILURES_KEPT - 1))
            )
        return [orjson.loads(item) for item in found]

    async def record_polls(self, updates: Sequence[PollUpdate], token: str | None = None) -> None:
        """Apply poll outcomes, one script per CHUNK devices. Each chunk is applied whole or not
        at all and under a token (`token`:n, or a fresh one): sending the same chunk again with
        the same token applies nothing twice, so a retry after a reply lost in an outage never
        counts readings twice."""
        token = token or uuid.uuid4().hex
        async with translated("record poll results"):
            for n, g, chunk in _chunks(updates):
                names = [keys.applied_batch(g, f"{token}:{n}")]
                for u in chunk:
                    names += [keys.device(u.cloud_id), keys.failures(u.cloud_id)]
                args = [BATCH_TTL_S, FAILURES_KEPT, *(value for u in chunk for value in _poll_args(u))]
                await self._record_polls(keys=names, args=args)


def _chunks(updates: Sequence[PollUpdate]) -> Iterator[tuple[int, int, Sequence[PollUpdate]]]:
    """Updates in chunks of at most CHUNK devices of one slot group each, numbered the same way
    each time for the same updates (a retry's token names the same chunks)."""
    by_group: dict[int, list[PollUpdate]] = {}
    for u in updates:
        by_group.setdefault(keys.group(u.cloud_id), []).append(u)
    n = 0
    for g in sorted(by_group):
        ups = by_group[g]
        for start in range(0, len(ups), CHUNK):
            yield n, g, ups[start : start + CHUNK]
            n += 1


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
    mine = (
        record.user_email,
        record.address,
        record.tls_verify,
        record.tls_fingerprint,
        record.active,
        record.api,
    )
    return secret_same and mine == (
        inp.user_email, inp.address, inp.tls_verify, inp.tls_fingerprint, inp.active, inp.api,
    )  # fmt: skip


# A cycle's poll outcomes in one script per chunk of devices: KEYS[1] is the batch's token (set
# when the script completes; the script does nothing when it was applied already), then two
# keys per device (its hash, its failures list); ARGV the token's lifetime and how many
# failures to keep, then nine values per device (events, first, last, last_success,
# consecutive_failures, "-" + error, last_reading, failures as JSON lines, more fields as a JSON
# object whose "" values remove the field; "" for none). One
# command instead of two or three per device: far less for the pinger to pack and parse, which
# is most of what a flush costs it.
_RECORD_POLLS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local devices = (#KEYS - 1) / 2
for i = 0, devices - 1 do  -- refuse before writing anything: a script is not rolled back
  local key = KEYS[2 + i * 2]
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then return redis.error_reply('WRONGTYPE ' .. key .. ': no hash') end
end
for i = 0, devices - 1 do
  local b = 2 + i * 9
  local key, failures = KEYS[2 + i * 2], KEYS[3 + i * 2]
  if redis.call('EXISTS', key) == 1 then  -- a record that is gone (erased, or lost) is not recreated
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
  if ARGV[b + 9] ~= '' then
    for name, value in pairs(cjson.decode(ARGV[b + 9])) do
      if value == '' then redis.call('HDEL', key, name) else redis.call('HSET', key, name, value) end
    end
  end
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
        "\n".join(to_json({"at": round(at, 3), "reason": r}) for at, r in u.failures),
        to_json(u.fields) if u.fields else "",
    )
