"""Process lifecycle in one place: build the service inside the loop, wire SIGTERM/SIGINT to
its `request_stop`, run it to completion (it drains, flushes and closes), exit 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Protocol


class Service(Protocol):
    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


def run(build: Callable[[], Service]) -> None:
    """Run `build()`'s service on uvloop (when available) until it returns."""

    async def main() -> None:
        service = build()  # inside the loop: sessions and pools bind to it
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.request_stop)
        await service.run()

    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
