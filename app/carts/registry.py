"""Carts in Redis. Every state change that two processes could race on is one Lua script.

- `claim`: waiting → staging for exactly one worker (or a build whose worker's lease ran out).
- `update`/`finish`: only the worker holding the cart may move it; a cancelled cart refuses them.
- `reserve`: the whole cart's disk space, checked against the disk and every other cart at once.
- `evict`: removes a record only if it is finished, idle past the cutoff and not being downloaded,
  so one worker's eviction can never take a cart another process is using.
"""

from __future__ import annotations

import time
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from app import keys
from app.carts.model import ERASED, ERASED_MESSAGE, ERROR, WAITING, Cart
from app.store import aw, hash_fields, translated

LEASE_S = 30.0  # a building cart's worker refreshes this; a stale lease means the worker died
DOWNLOAD_LEASE_S = 120.0

_CLAIM = """
local h = KEYS[1]
local status = redis.call('HGET', h, 'status')
if not status then return 0 end
if redis.call('HGET', h, 'attempt') ~= ARGV[2] then return 0 end
local lease = tonumber(redis.call('HGET', h, 'lease_until') or '0')
if status == 'waiting' or ((status == 'staging' or status == 'bundling') and lease < tonumber(ARGV[3])) then
  redis.call('HSET', h, 'status', 'staging', 'worker', ARGV[1], 'lease_until', ARGV[4], 'updated_at', ARGV[3],
             'message', 'staging: finding and fetching the files')
  return 1
end
return 0
"""

_UPDATE = """
local h = KEYS[1]
if redis.call('HGET', h, 'worker') ~= ARGV[1] then return 0 end
local status = redis.call('HGET', h, 'status')
if status ~= 'staging' and status ~= 'bundling' then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end
return 1
"""

_CANCEL = """
local h = KEYS[1]
local status = redis.call('HGET', h, 'status')
if not status then return false end
if status == 'waiting' or status == 'staging' or status == 'bundling' then
  redis.call('HSET', h, 'status', 'error', 'reason', 'CANCELLED', 'message', ARGV[1], 'updated_at', ARGV[2])
end
return status
"""

_RESERVE = """
local need, free, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local all = redis.call('HGETALL', KEYS[1])
local others, building = 0, 0
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then
    local bytes = tonumber(all[i + 1])
    others = others + bytes
    local status = redis.call('HGET', KEYS[2] .. all[i], 'status')
    if status == 'waiting' or status == 'staging' or status == 'bundling' then building = building + bytes end
  end
end
local have = free - building
if budget > 0 and budget - others < have then have = budget - others end
if need <= have then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return {1, have} end
return {0, have}
"""

_EVICT = """
local h = KEYS[1]
local status = redis.call('HGET', h, 'status')
if not status then redis.call('ZREM', KEYS[2], ARGV[1]) redis.call('HDEL', KEYS[3], ARGV[1]) return 1 end
if status ~= 'ready' and status ~= 'error' then return 0 end
if tonumber(redis.call('HGET', h, 'download_until') or '0') > tonumber(ARGV[2]) then return 0 end
if tonumber(redis.call('HGET', h, 'last_access') or '0') > tonumber(ARGV[3]) then return 0 end
redis.call('DEL', h)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

_START_DOWNLOAD = """
local h = KEYS[1]
if redis.call('HGET', h, 'status') ~= 'ready' then return 0 end
redis.call('HSET', h, 'download_until', ARGV[2], 'last_access', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
return 1
"""


class CartRegistry:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, cart: Cart) -> bool:
        """Store a new cart; False when the id is taken."""
        async with translated("create a cart"):
            if not await aw(self.redis.hsetnx(keys.cart(cart.id), "id", cart.id)):
                return False
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.cart(cart.id), mapping=cast(dict[Any, Any], cart.to_hash()))
                pipe.zadd(keys.carts(), {cart.id: cart.last_access})
                await pipe.execute()
        return True

    async def get(self, cart_id: str) -> Cart | None:
        async with translated("read a cart"):
            h = cast(dict[str, str], await aw(self.redis.hgetall(keys.cart(cart_id))))
        return Cart.from_hash(h) if h.get("request") else None

    async def all(self) -> list[Cart]:
        async with translated("list carts"):
            ids = cast(list[str], await self.redis.zrange(keys.carts(), 0, -1))
            async with self.redis.pipeline(transaction=False) as pipe:
                for cid in ids:
                    pipe.hgetall(keys.cart(cid))
                hashes = cast(list[dict[str, str]], await pipe.execute())
        return [Cart.from_hash(h) for h in hashes if h.get("request")]

    async def claim(self, cart_id: str, worker: str, attempt: int, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        async with translated("claim a cart"):
            got = await aw(
                self.redis.eval(_CLAIM, 1, keys.cart(cart_id), worker, attempt, now, now + LEASE_S)
            )
        return bool(got)

    async def update(self, cart_id: str, worker: str, **fields: object) -> bool:
        """Set fields (and refresh the lease) while `worker` holds the building cart; False if it lost it."""
        flat: list[str] = []
        for k, v in {**fields, "lease_until": time.time() + LEASE_S, "updated_at": time.time()}.items():
            flat += [k, repr(v) if isinstance(v, float) else str(v)]
        async with translated("update a cart"):
            return bool(await aw(self.redis.eval(_UPDATE, 1, keys.cart(cart_id), worker, *flat)))

    async def requeue(self, cart_id: str, message: str) -> int:
        """Back to waiting with the next attempt number (for a dead worker's cart, or `fixit`)."""
        async with translated("requeue a cart"), self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(keys.cart(cart_id), "attempt", 1)
            pipe.hset(
                keys.cart(cart_id),
                mapping={"status": WAITING, "reason": "", "message": message, "worker": "",
                         "lease_until": "0", "updated_at": repr(time.time())},
            )  # fmt: skip
            attempt, _ = await pipe.execute()
        return int(attempt)

    async def cancel(self, cart_id: str, message: str) -> str | None:
        """Mark a building cart CANCELLED; returns the status it had (None: unknown cart)."""
        async with translated("cancel a cart"):
            was = await aw(self.redis.eval(_CANCEL, 1, keys.cart(cart_id), message, time.time()))
        return cast(str | None, was)

    async def fail(self, cart_id: str, worker: str, reason: str, message: str) -> bool:
        return await self.update(cart_id, worker, status=ERROR, reason=reason, message=message)

    async def mark_erased(self, cart: Cart, cloud_id: str, at: float) -> None:
        """The cart held an erased household: it stays listed, as erased, without naming it."""
        request = orjson.dumps(cart.request.without(cloud_id).to_json()).decode()
        fields = {"status": ERASED, "reason": "ERASED", "message": ERASED_MESSAGE, "request": request,
                  "size": "0", "worker": "", "lease_until": "0", "updated_at": repr(at)}  # fmt: skip
        async with translated("mark a cart erased"), self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.cart(cart.id), mapping=hash_fields(fields))
            pipe.hdel(keys.carts_space(), cart.id)
            await pipe.execute()

    async def delete(self, cart_id: str) -> None:
        async with translated("delete a cart"), self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.cart(cart_id))
            pipe.zrem(keys.carts(), cart_id)
            pipe.hdel(keys.carts_space(), cart_id)
            await pipe.execute()

    async def reserve(self, cart_id: str, need: int, disk_free: int, budget: int) -> tuple[bool, int]:
        """Reserve `need` bytes unless the disk or CARTS_MAX_BYTES cannot hold it; (ok, bytes available)."""
        async with translated("reserve cart space"):
            reply = await aw(
                self.redis.eval(
                    _RESERVE,
                    2,
                    keys.carts_space(),
                    keys.cart(""),
                    cart_id,
                    str(need),
                    str(disk_free),
                    str(budget),
                )
            )
        ok, have = cast(list[int], reply)
        return bool(ok), int(have)

    async def set_space(self, cart_id: str, used: int | None) -> None:
        async with translated("record cart space"):
            if used is None:
                await aw(self.redis.hdel(keys.carts_space(), cart_id))
            else:
                await aw(self.redis.hset(keys.carts_space(), cart_id, str(used)))

    async def start_download(self, cart_id: str, now: float | None = None) -> bool:
        """Touch a ready cart (LRU) and lease it against eviction; False when it is not ready."""
        now = time.time() if now is None else now
        async with translated("start a download"):
            got = await aw(
                self.redis.eval(
                    _START_DOWNLOAD, 2, keys.cart(cart_id), keys.carts(), now, now + DOWNLOAD_LEASE_S, cart_id
                )
            )
        return bool(got)

    async def evict(self, cart_id: str, cutoff: float, now: float | None = None) -> bool:
        """Remove the record if finished, idle since `cutoff` and not downloading; True if removed."""
        now = time.time() if now is None else now
        async with translated("evict a cart"):
            got = await aw(
                self.redis.eval(
                    _EVICT, 3, keys.cart(cart_id), keys.carts(), keys.carts_space(), cart_id, now, cutoff
                )
            )
        return bool(got)

    async def idle_since(self, cutoff: float) -> list[str]:
        async with translated("list idle carts"):
            return cast(list[str], await self.redis.zrangebyscore(keys.carts(), "-inf", cutoff))
