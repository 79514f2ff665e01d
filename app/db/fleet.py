"""The fleet's figures in Redis: its demand, minute by minute."""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

from app import keys
from app.db.common import aw, translated
from app.hours import Day


class FleetFigures:
    """The fleet's demand, minute by minute."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def add_fleet_demand(self, now: float, kw: float, devices: int) -> None:
        """Add one pinger's share of the fleet's demand to this minute (each pinger once a minute)."""
        today = Day.at(now)
        day, minute = today.key, int((now - today.start) // 60)
        async with translated("record the fleet's demand"), self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrbyfloat(keys.fleet_demand(day), str(minute), kw)
            pipe.hincrby(keys.fleet_demand(day), f"{minute}:n", devices)
            pipe.expire(keys.fleet_demand(day), 3 * 86400)
            await pipe.execute()

    async def fleet_demand(self, since: float, until: float) -> list[tuple[int, float, int]]:
        """(minute start, kW, devices) of each minute with figures between two times."""
        days = sorted({Day.at(t) for t in (since, until)})
        out = []
        async with translated("read the fleet's demand"):
            for day in days:
                h = cast(dict[str, str], await aw(self.redis.hgetall(keys.fleet_demand(day.key))))
                base = day.start
                for name, value in h.items():
                    if ":" not in name:
                        at = base + int(name) * 60
                        if since <= at <= until:
                            out.append((at, round(float(value), 3), int(h.get(f"{name}:n", "0"))))
        return sorted(out)
