"""Heartbeats: each long-running process announces itself in Redis every HEARTBEAT_S.

`rainforest <process> --check` (the container health checks) and `rainforest status` read them.
A clean stop removes the heartbeat at once; a killed process goes stale after STALE_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable

from app.errors import StoreError
from app.settings import Settings
from app.store import Store

HEARTBEAT_S = 10.0
STALE_S = 3 * HEARTBEAT_S
KINDS = ("pinger", "server", "rotate", "cartd", "alerts")


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Beats for one process until stopped; `report()` adds live figures (devices, jobs...)."""

    def __init__(
        self,
        store: Store,
        kind: str,
        report: Callable[[], dict[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.kind, self.report, self.clock = store, kind, report, clock
        self.id = process_id()
        self.info = {"host": socket.gethostname(), "pid": str(os.getpid()), "started_at": repr(clock())}

    async def beat(self) -> None:
        extra = self.report() if self.report else {}
        with contextlib.suppress(StoreError):  # a Redis outage is reported by the process's own work
            await self.store.processes.heartbeat(self.kind, self.id, {**self.info, **extra}, self.clock())

    async def run(self, stop: asyncio.Event) -> None:
        """Beat every HEARTBEAT_S until `stop` is set, then remove the heartbeat."""
        try:
            while not stop.is_set():
                await self.beat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
        finally:
            await self.remove()

    async def remove(self) -> None:
        with contextlib.suppress(StoreError):
            await self.store.processes.remove_process(self.kind, self.id)


async def check(settings: Settings, kind: str, now: float | None = None) -> tuple[bool, str]:
    """Is a `kind` process on this host alive? (ok, one sentence)."""
    now = time.time() if now is None else now
    store = Store.for_settings(settings, max_connections=2)
    try:
        live = await store.processes.live_processes(kind, now - STALE_S)
    except StoreError as exc:
        return False, f"{kind}: cannot tell, {exc}"
    finally:
        await store.close()
    host = socket.gethostname()
    mine = [(pid, beat) for pid, beat, info in live if info.get("host") == host]
    if not mine:
        return False, f"{kind}: no heartbeat from {host} in the last {STALE_S:.0f} s (not running, or stuck)."
    pid, beat = mine[0]
    return True, f"{kind}: alive ({pid}, last heartbeat {now - beat:.0f} s ago)."
