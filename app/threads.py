"""Blocking work in a thread that never outlives the task waiting for it.

`asyncio.to_thread` returns as soon as its caller is cancelled, while the thread goes on: a
cancelled cart build could then still be writing files after it has cleaned up. `joined`
waits for the thread before the cancellation goes on, and tells cooperative work to stop
early through the `threading.Event` it passes as `stop=` when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """Raised by cooperative thread work when its `stop` event is set."""


async def joined(fn: Callable[..., T], *args: Any, stoppable: bool = False) -> T:
    """Run `fn(*args)` in the default executor, like `asyncio.to_thread`, keeping contextvars.

    If the caller is cancelled, the thread is waited for (with `stop` set when `stoppable`, so
    `fn(*args, stop=event)` can end early by raising `Stopped`) and the cancellation re-raised."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    call = functools.partial(fn, *args, stop=stop) if stoppable else functools.partial(fn, *args)
    future = loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, call))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: whatever the thread ended with is moot now
        raise
