"""What every Redis domain shares: the await shim for redis-py's types, the one translation of
Redis and socket errors into StoreError, JSON for stored values, and a write that never
recreates a record that is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast, overload

import orjson
from redis.exceptions import RedisClusterException, RedisError
from redis.typing import EncodableT, FieldT

from app import keys
from app.errors import StoreError

T = TypeVar("T")
# commands (or devices of a script) per round trip when many are read or written: a round trip's
# commands are packed and its replies parsed on the event loop, a few ms for 200 (1,000 held it
# 20-30 ms, the tail of every request waiting behind it)
CHUNK = 200
BATCH_TTL_S = 86400  # how long an applied counter batch's token is remembered


@overload
def aw(value: Awaitable[T]) -> Awaitable[T]: ...
@overload
def aw(value: T) -> Awaitable[T]: ...
def aw(value: Any) -> Any:
    """Some of redis-py's asyncio methods are typed as returning `Awaitable[T] | T` (the sync and
    asyncio clients share them); on the asyncio client they always await."""
    return value


def hash_fields(fields: Mapping[str, str]) -> Mapping[FieldT, EncodableT]:
    """A hash's fields as redis-py's `hset` takes them: its mapping's key type is a union, and a
    mapping is invariant in its key, so a `dict[str, str]` is refused by the type checker alone."""
    return cast(Mapping[FieldT, EncodableT], fields)


@asynccontextmanager
async def translated(action: str) -> AsyncIterator[None]:
    """Turn Redis and socket errors inside the block into StoreError naming the action."""
    try:
        yield
    except (RedisError, RedisClusterException) as exc:  # the cluster client's own errors are apart
        raise StoreError(f"Redis failed while trying to {action}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"Redis is unreachable while trying to {action}: {exc}") from exc


def to_json(value: object) -> str:
    return orjson.dumps(value).decode()


SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def publish(client: Any, channel: str, message: str) -> Any:
    """Publish on a channel, or queue it on a pipeline: sharded (SPUBLISH, delivered by the
    channel's own shard, its slot that of the keys it reports on) on a cluster, plain on one
    server."""
    return client.execute_command("SPUBLISH" if keys.clustered() else "PUBLISH", channel, message)


async def union(redis: Any, names: Iterable[str]) -> set[str]:
    """The members of many sets (one per slot group) in one pipelined round trip per node."""
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.smembers(name)
        found: list[set[str]] = await pipe.execute()
    return set().union(*found)
