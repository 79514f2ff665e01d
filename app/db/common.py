"""What every Redis domain shares: the await shim for redis-py's types, the one translation of
Redis and socket errors into StoreError, JSON for stored values, and a write that never
recreates a record that is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar, cast

import orjson
from redis.exceptions import RedisError

from app.errors import StoreError

T = TypeVar("T")
CHUNK = 1000  # commands (or items of a script) per round trip when many are read or written
BATCH_TTL_S = 86400  # how long an applied counter batch's token is remembered


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


def to_json(value: object) -> str:
    return orjson.dumps(value).decode()


SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
