"""A pinger's lifetime as its helpers see it: whether it is stopping, a sleep a stop cuts short,
and the short tasks (fsyncs, counts on their way to Redis) it awaits before it closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class Lifetime:
    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def stop(self) -> None:
        self.stopped.set()

    def stopping(self) -> bool:
        return self.stopped.is_set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, waking early when a stop is requested."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), seconds)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run short work in the background; `drain` awaits it at close, so none is cut off."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        await asyncio.gather(*self._tasks)
