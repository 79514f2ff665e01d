"""Device leases in Redis: which live pinger polls which device.

A pinger's membership is a score in `rf:pingers`: the time (Redis's own clock, so hosts' clocks
never matter) its lease runs out. A device is held by the pinger named for it in `rf:owners`
while that pinger's lease runs, so one renewal per cycle renews every device it holds. Each
round is one script: renew, release what the caller stopped polling, claim what it wants, and
answer with the live pingers. A claim succeeds when the device is free, already the caller's,
or held by a pinger whose lease ran out; that last kind only for a caller that has been a live
member for `settle_s` — so after a Redis outage, when every lease looks expired, each pinger
first renews its own before anyone takes another's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from app import keys
from app.store import aw, publish, translated

# KEYS: pingers, owners, released, the caller's hash. ARGV: id, lease_s, settle_s, n_release,
# then the releases, then the claims.
_ROUND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, lease, settle = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local prev = tonumber(redis.call('ZSCORE', KEYS[1], id) or '-1')
local lapsed = prev < now
if lapsed then redis.call('HSET', KEYS[4], 'joined_at', tostring(now)) end
local joined = tonumber(redis.call('HGET', KEYS[4], 'joined_at') or tostring(now))
local settled = (not lapsed) and (now - joined >= settle)
redis.call('ZADD', KEYS[1], now + lease, id)
redis.call('HSET', KEYS[4], 'renewed_at', tostring(now), 'lease_s', ARGV[2])
redis.call('EXPIRE', KEYS[4], 86400)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400)
local n_release = tonumber(ARGV[4])
local released = 0
for i = 5, 4 + n_release do
  if redis.call('HGET', KEYS[2], ARGV[i]) == id then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HSET', KEYS[3], ARGV[i], tostring(now))
    released = released + 1
  end
end
local granted, refused = {}, 0
for i = 5 + n_release, #ARGV do
  local cid = ARGV[i]
  local owner = redis.call('HGET', KEYS[2], cid)
  local ok, waited = false, -1
  if not owner then
    ok = true
    local r = redis.call('HGET', KEYS[3], cid)
    if r then waited = now - tonumber(r) end
  elseif owner == id then
    ok = true
  elseif settled then
    local expiry = tonumber(redis.call('ZSCORE', KEYS[1], owner) or '0')
    if expiry < now then
      ok = true
      if expiry > 0 then waited = now - expiry end
    end
  end
  if ok then
    redis.call('HSET', KEYS[2], cid, id)
    redis.call('HDEL', KEYS[3], cid)
    granted[#granted + 1] = cid
    granted[#granted + 1] = tostring(waited)
  else
    refused = refused + 1
  end
end
local held = {}
if lapsed then
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    if all[i + 1] == id then held[#held + 1] = all[i] end
  end
end
local members = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES')
return {tostring(now), lapsed and 1 or 0, members, granted, held, released, refused}
"""

# KEYS: pingers, owners, released, the caller's hash. ARGV: id.
_LEAVE = """
local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000)
local all = redis.call('HGETALL', KEYS[2])
local n = 0
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[2], all[i])
    redis.call('HSET', KEYS[3], all[i], now)
    n = n + 1
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[4])
return n
"""

# The owner of device ARGV[1] as `lease`: {pinger, its lease expiry, Redis's now}, or false.
# A fragment, so a route can read it in the same script as the token (app/tokens.py).
OWNER_LOOKUP = """
local owner = redis.call('HGET', {owners}, ARGV[1])
local lease = false
if owner then
  local t = redis.call('TIME')
  lease = {{owner, redis.call('ZSCORE', {pingers}, owner) or '0',
           tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000)}}
end
"""
_OWNER = OWNER_LOOKUP.format(owners="KEYS[1]", pingers="KEYS[2]") + "return lease"


@dataclass(frozen=True)
class Round:
    """What one round answered."""

    now: float  # Redis's clock
    lapsed: bool  # the caller's lease had run out (or it is new): `held` lists what it still holds
    members: tuple[str, ...]  # live pingers, the caller among them
    expiries: dict[str, float]  # each live pinger's lease end (Redis's clock)
    granted: dict[str, float | None]  # claimed → seconds since its last owner let go (None: unknown)
    held: frozenset[str]  # only when lapsed
    released: int
    refused: int


@dataclass(frozen=True)
class PingerLease:
    """One pinger as `rainforest status` shows it."""

    pinger_id: str
    expires_in_s: float  # negative: lapsed that long ago
    renewed_s_ago: float | None
    devices: int


def owner_view(found: Sequence[str] | None) -> dict[str, Any] | None:
    """A device's owner as the API shows it, from `_OWNER`'s answer."""
    if not found:
        return None
    owner, expiry, now = found[0], float(found[1]), float(found[2])
    return {"pinger": owner, "lease": "held" if expiry >= now else "lapsed",
            "lease_expires_in_s": round(expiry - now, 1)}  # fmt: skip


class Leases:
    """The Redis side of ownership; the pinger's side is `app.pinger.ownership`."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._round = redis.register_script(_ROUND)
        self._leave = redis.register_script(_LEAVE)
        self._owner = redis.register_script(_OWNER)

    def _keys(self, pinger_id: str) -> list[str]:
        return [keys.pingers(), keys.owners(), keys.released(), keys.pinger(pinger_id)]

    async def round(
        self,
        pinger_id: str,
        lease_s: float,
        settle_s: float,
        release: list[str],
        claim: list[str],
    ) -> Round:
        """Renew `pinger_id`'s lease, release and claim devices, in one round trip."""
        args: list[str | int] = [pinger_id, repr(lease_s), repr(settle_s), len(release), *release, *claim]
        async with translated("renew the pinger's leases"):
            now, lapsed, members, granted, held, released, refused = await self._round(
                keys=self._keys(pinger_id), args=args
            )
            if release:
                await aw(publish(self.redis, keys.ownership_changed(), pinger_id))
        pairs = cast(list[str], granted)
        scored = cast(list[str], members)
        expiries = {scored[i]: float(scored[i + 1]) for i in range(0, len(scored), 2)}
        return Round(
            now=float(now),
            lapsed=bool(lapsed),
            members=tuple(sorted(expiries)),
            expiries=expiries,
            granted={
                pairs[i]: (float(pairs[i + 1]) if float(pairs[i + 1]) >= 0 else None)
                for i in range(0, len(pairs), 2)
            },
            held=frozenset(cast(list[str], held)),
            released=int(released),
            refused=int(refused),
        )

    async def leave(self, pinger_id: str) -> int:
        """Release every device `pinger_id` holds and end its membership; returns how many."""
        async with translated("hand the pinger's devices over"):
            released = int(await self._leave(keys=self._keys(pinger_id), args=[pinger_id]))
            await aw(publish(self.redis, keys.ownership_changed(), pinger_id))
        return released

    async def owner(self, cloud_id: str) -> dict[str, Any] | None:
        """Which pinger holds a device's lease, and whether that lease still runs."""
        async with translated(f"read the owner of {cloud_id}"):
            found = await self._owner(keys=[keys.owners(), keys.pingers()], args=[cloud_id])
        return owner_view(cast(list[str] | None, found))

    async def owners(self) -> dict[str, str]:
        """cloud_id → the pinger holding its lease, for the whole fleet in one command."""
        async with translated("read the devices' owners"):
            return cast(dict[str, str], await aw(self.redis.hgetall(keys.owners())))

    async def held(self) -> dict[str, float]:
        """cloud_id → until when a pinger is known to hold it: its holder's lease expiry (past when
        the holder died), or when it was released and not yet claimed again (app.health)."""
        async with translated("read the devices' holders"), self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.owners())
            pipe.zrange(keys.pingers(), 0, -1, withscores=True)
            pipe.hgetall(keys.released())
            owners, members, released = await pipe.execute()
        expiries = {str(p): float(score) for p, score in members}
        found = {cid: float(at) for cid, at in cast(dict[str, str], released).items()}
        for cid, owner in cast(dict[str, str], owners).items():
            found[cid] = expiries.get(owner, 0.0)
        return found

    async def pingers(self, now: float) -> list[PingerLease]:
        """Every pinger seen in the last day with its lease and how many devices it holds."""
        async with translated("read the pingers' leases"):
            members = cast(
                list[tuple[str, float]], await aw(self.redis.zrange(keys.pingers(), 0, -1, withscores=True))
            )
            owners = await self.owners()
            renewed = []
            for pinger_id, _ in members:
                renewed.append(await aw(self.redis.hget(keys.pinger(pinger_id), "renewed_at")))
        counts: dict[str, int] = {}
        for owner in owners.values():
            counts[owner] = counts.get(owner, 0) + 1
        return [
            PingerLease(
                pinger_id=str(pinger_id),
                expires_in_s=round(float(expiry) - now, 1),
                renewed_s_ago=round(now - float(at), 1) if at else None,
                devices=counts.get(str(pinger_id), 0),
            )
            for (pinger_id, expiry), at in zip(members, renewed, strict=True)
        ]
