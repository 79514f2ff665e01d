"""Requests that read much (a month of readings, a cart download): bounded per token, off the
default executor.

Each token may have HEAVY_REQUESTS_PER_TOKEN of them running at once in a server process; one
more is a 429 with one sentence. Their file and archive reads run in a pool of their own
(HEAVY_THREADS), so however many arrive, the default executor and the event loop stay free for
everything else: /healthz, pushes, the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class TooMany(Exception):
    """This token has as many heavy requests running as it may."""


class HeavyWork:
    def __init__(self, per_token: int, threads: int) -> None:
        self.per_token = per_token
        self._running: Counter[str] = Counter()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="heavy")

    @contextlib.asynccontextmanager
    async def slot(self, token: str) -> AsyncIterator[None]:
        """Hold one of the token's slots for the request; TooMany when none is free."""
        if self._running[token] >= self.per_token:
            raise TooMany(token)
        self._running[token] += 1
        try:
            yield
        finally:
            self._running[token] -= 1
            if not self._running[token]:
                del self._running[token]

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` in the heavy pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
