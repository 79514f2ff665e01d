"""Alerts, fleet-wide incidents and snoozes in Redis.

An alert is one outage of one device: opened once (the open map allows one open alert per
device, and its id is the device and the time its trouble began, so every process that decides
to open it opens the same one), resolved once. An incident is the same for a path (the relay, a
pinger, the push endpoint). Opening or resolving one and queueing its message for every route is
one script (`_GUARDED`): the message is queued exactly when the alert changes, however many
processes evaluate at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import cast

import redis.asyncio as aioredis

from app import keys
from app.db.common import aw, hash_fields, translated

# KEYS: the guard hash, the record hash, the index, the message hash, then one outbox per route.
# ARGV: mode (open | close | update), the guard field, the id, the time, the message id ("" for
# none), how many record values follow, the record's field/value pairs, the message's pairs.
# open: only when the guard has no entry for the field; close and update: only while the guard
# names this id. Returns 1 when it applied.
_GUARDED = """
local mode, field, id, at, mid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if mode == 'open' then
  if redis.call('HSETNX', KEYS[1], field, id) == 0 then return 0 end
  redis.call('ZADD', KEYS[3], at, id)
else
  if redis.call('HGET', KEYS[1], field) ~= id then return 0 end
  if mode == 'close' then redis.call('HDEL', KEYS[1], field) end
end
local n = tonumber(ARGV[6])
if n > 0 then redis.call('HSET', KEYS[2], unpack(ARGV, 7, 6 + n)) end
if mid ~= '' and #ARGV > 6 + n then
  redis.call('HSET', KEYS[4], unpack(ARGV, 7 + n, #ARGV))
  for k = 5, #KEYS do redis.call('ZADD', KEYS[k], at, mid) end
end
return 1
"""

# KEYS: the index, then the record hashes of the ids in ARGV[2..]; ARGV[1] the cutoff. Forgets
# closed records opened before the cutoff.
_PRUNE = """
local gone = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[i], 'state') == 'resolved' then
    redis.call('DEL', KEYS[i], KEYS[i] .. ':members')
    redis.call('ZREM', KEYS[1], ARGV[i])
    gone = gone + 1
  end
end
return gone
"""


def alert_id(cloud_id: str, since: float) -> str:
    """The same outage has the same id whichever process opens it."""
    return f"{cloud_id}-{int(since)}"


def incident_id(path: str, since: float) -> str:
    return f"{re.sub(r'[^A-Za-z0-9]+', '-', path).strip('-')}-{int(since)}"


Message = tuple[str, Mapping[str, str], Sequence[str]]  # (id, fields, routes)


class AlertBook:
    """Alerts, incidents and snoozes; the message an opening or closing sends rides along."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._guarded = redis.register_script(_GUARDED)
        self._prune = redis.register_script(_PRUNE)

    async def _apply(
        self,
        mode: str,
        guard: str,
        field: str,
        record_key: str,
        index: str,
        record_id: str,
        at: float,
        fields: Mapping[str, str],
        message: Message | None,
    ) -> bool:
        mid, body, routes = message if message is not None else ("", {}, ())
        flat = [v for pair in fields.items() for v in pair]
        names = [guard, record_key, index, keys.message(mid or "none"), *(keys.outbox(r) for r in routes)]
        said = [v for pair in body.items() for v in pair]
        args: list[str | int] = [mode, field, record_id, repr(at), mid, len(flat), *flat, *said]
        return bool(await self._guarded(keys=names, args=args))

    # --- alerts ----------------------------------------------------------------------------

    async def open_alert(
        self, cloud_id: str, aid: str, at: float, fields: Mapping[str, str], message: Message | None
    ) -> bool:
        """Open this device's alert unless one is open; queue its message. True when opened."""
        async with translated(f"open an alert for {cloud_id}"):
            return await self._apply(
                "open", keys.alerts_open(), cloud_id, keys.alert(aid), keys.alerts(), aid, at,
                {**fields, "id": aid, "cloud_id": cloud_id, "state": "open", "opened_at": repr(at)}, message,
            )  # fmt: skip

    async def update_alert(self, cloud_id: str, aid: str, at: float, fields: Mapping[str, str]) -> bool:
        async with translated(f"update the alert of {cloud_id}"):
            return await self._apply(
                "update", keys.alerts_open(), cloud_id, keys.alert(aid), keys.alerts(), aid, at, fields, None
            )

    async def resolve_alert(
        self, cloud_id: str, aid: str, at: float, fields: Mapping[str, str], message: Message | None
    ) -> bool:
        async with translated(f"resolve the alert of {cloud_id}"):
            return await self._apply(
                "close", keys.alerts_open(), cloud_id, keys.alert(aid), keys.alerts(), aid, at,
                {**fields, "state": "resolved", "resolved_at": repr(at)}, message,
            )  # fmt: skip

    async def open_alerts(self) -> dict[str, str]:
        """cloud_id → its open alert's id."""
        async with translated("read the open alerts"):
            return cast(dict[str, str], await aw(self.redis.hgetall(keys.alerts_open())))

    async def alerts(self, ids: Sequence[str]) -> list[dict[str, str]]:
        async with translated("read alerts"), self.redis.pipeline(transaction=False) as pipe:
            for aid in ids:
                pipe.hgetall(keys.alert(aid))
            return [h for h in await pipe.execute() if h]

    async def alert(self, aid: str) -> dict[str, str] | None:
        found = await self.alerts([aid])
        return found[0] if found else None

    async def recent_ids(self, limit: int) -> list[str]:
        """The ids of the latest alerts, newest first."""
        async with translated("list alerts"):
            return cast(list[str], await self.redis.zrevrange(keys.alerts(), 0, limit - 1))

    async def acknowledge(self, aid: str, by: str, at: float, note: str) -> bool:
        """Note who saw an alert, when, and what they said; False when there is no such alert."""
        async with translated(f"acknowledge alert {aid}"):
            if not await self.redis.exists(keys.alert(aid)):
                return False
            fields = {"ack_by": by, "ack_at": repr(at), "ack_note": note}
            await aw(self.redis.hset(keys.alert(aid), mapping=hash_fields(fields)))
        return True

    async def snooze(self, cloud_id: str, until: float) -> None:
        async with translated(f"snooze {cloud_id}"):
            await aw(self.redis.hset(keys.snoozed(), cloud_id, repr(until)))

    async def unsnooze(self, cloud_id: str) -> None:
        async with translated(f"unsnooze {cloud_id}"):
            await aw(self.redis.hdel(keys.snoozed(), cloud_id))

    async def snoozes(self) -> dict[str, float]:
        async with translated("read the snoozes"):
            found = cast(dict[str, str], await aw(self.redis.hgetall(keys.snoozed())))
        return {cid: float(until) for cid, until in found.items()}

    # --- incidents -------------------------------------------------------------------------

    async def open_incident(
        self, path: str, iid: str, at: float, fields: Mapping[str, str], members: Sequence[str],
        message: Message | None,
    ) -> bool:  # fmt: skip
        async with translated(f"open an incident on {path}"):
            opened = await self._apply(
                "open", keys.incidents_open(), path, keys.incident(iid), keys.incidents(), iid, at,
                {**fields, "id": iid, "path": path, "state": "open", "opened_at": repr(at)}, message,
            )  # fmt: skip
            if opened and members:
                await aw(self.redis.sadd(keys.incident_members(iid), *members))
        return opened

    async def add_members(self, iid: str, members: Sequence[str]) -> None:
        if members:
            async with translated("add to an incident"):
                await aw(self.redis.sadd(keys.incident_members(iid), *members))

    async def resolve_incident(
        self, path: str, iid: str, at: float, fields: Mapping[str, str], message: Message | None
    ) -> bool:
        async with translated(f"resolve the incident on {path}"):
            return await self._apply(
                "close", keys.incidents_open(), path, keys.incident(iid), keys.incidents(), iid, at,
                {**fields, "state": "resolved", "resolved_at": repr(at)}, message,
            )  # fmt: skip

    async def open_incidents(self) -> dict[str, tuple[dict[str, str], set[str]]]:
        """path → (the open incident, its members)."""
        async with translated("read the open incidents"):
            opened = cast(dict[str, str], await aw(self.redis.hgetall(keys.incidents_open())))
            out = {}
            for path, iid in opened.items():
                record = cast(dict[str, str], await aw(self.redis.hgetall(keys.incident(iid))))
                members = cast(set[str], await aw(self.redis.smembers(keys.incident_members(iid))))
                out[path] = (record, members)
        return out

    async def recent_incidents(self, limit: int) -> list[dict[str, str]]:
        async with translated("list incidents"):
            ids = cast(list[str], await self.redis.zrevrange(keys.incidents(), 0, limit - 1))
            async with self.redis.pipeline(transaction=False) as pipe:
                for iid in ids:
                    pipe.hgetall(keys.incident(iid))
                return [h for h in await pipe.execute() if h]

    # --- upkeep ----------------------------------------------------------------------------

    async def hold_evaluator(self, holder: str, lease_s: float) -> bool:
        """Take (or keep) the evaluator's lease; False while another process holds it."""
        async with translated("take the alert evaluator's lease"):
            key = keys.alerts_evaluator()
            if await self.redis.set(key, holder, nx=True, px=int(lease_s * 1000)):
                return True
            if await self.redis.get(key) == holder:
                await self.redis.pexpire(key, int(lease_s * 1000))
                return True
        return False

    async def digest_once(self, day: str, holder: str) -> bool:
        """True for the one process that queues this day's digest."""
        async with translated("mark the day's digest"):
            return bool(await self.redis.set(keys.digest_sent(day), holder, nx=True, ex=3 * 86400))

    async def prune(self, before: float) -> int:
        """Forget resolved alerts and incidents opened before `before`."""
        gone = 0
        async with translated("prune old alerts"):
            for index, key in ((keys.alerts(), keys.alert), (keys.incidents(), keys.incident)):
                ids = cast(list[str], await self.redis.zrangebyscore(index, "-inf", before, start=0, num=500))
                if ids:
                    gone += int(await self._prune(keys=[index, *(key(i) for i in ids)], args=["", *ids]))
        return gone
