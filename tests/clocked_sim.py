"""The simulator in the test's process, on a free port, its meters on a clock the test moves
(the pinger gets the same clock): hours of gateway behaviour in a second, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from app.credentials import Vault
from app.devices import DeviceInput
from app.settings import Settings
from app.sim.fleet import build_fleet
from app.sim.server import Simulator, make_app
from app.store import Store
from tests.conftest import free_port


class Clock:
    """Wall time for the simulator and the pinger alike, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class ClockedSim:
    sim: Simulator
    host: str
    clock: Clock

    @property
    def relay_url(self) -> str:
        return f"http://{self.host}/cgi-bin/post_manager"

    async def register(self, settings: Settings) -> None:
        store, vault = Store.from_url(settings.redis_url), Vault(settings.secret_key)
        try:
            for device in self.sim.fleet:
                await store.devices.save_device(DeviceInput.from_mapping(device.users_line(self.host)), vault)
        finally:
            await store.close()


@asynccontextmanager
async def clocked_sim(
    devices: int, mix: dict[str, int], start: float | None = None
) -> AsyncIterator[ClockedSim]:
    clock = Clock(time.time() - 200.0 if start is None else start)
    fleet = build_fleet(devices, 11, mix)
    sim = Simulator(fleet, 11, reading_interval_s=4.0, timeout_hold_s=0.5, clock=clock)
    runner = web.AppRunner(make_app(sim))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield ClockedSim(sim, f"127.0.0.1:{port}", clock)
    finally:
        await runner.cleanup()
