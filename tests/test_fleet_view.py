"""The fleet table's snapshot and views: no request waits for a refresh once there is a snapshot,
a failed refresh keeps the last one, and a view's sorted rows are worked out once per snapshot."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.web.fleet_view import SNAPSHOT_TTL_S, FleetRow, Snapshot, Table, View


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_stale_snapshot_is_answered_at_once_and_refreshed_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, loads, gate = Clock(), [], asyncio.Event()

    async def load() -> int:
        loads.append(clock.now)
        if len(loads) > 1:
            await gate.wait()  # a slow registry read
        if len(loads) == 3:
            raise OSError("Redis is away")
        return len(loads)

    snapshot = Snapshot(load, clock)
    assert await snapshot.get() == 1, "the first request waits for the first snapshot"
    clock.now += SNAPSHOT_TTL_S + 1
    assert await asyncio.wait_for(snapshot.get(), 5) == 1, "stale: the last one at once, not the refresh"
    assert await asyncio.wait_for(snapshot.get(), 5) == 1 and len(loads) == 2, "one refresh at a time"
    gate.set()
    for _ in range(100):
        await asyncio.sleep(0)
    assert await snapshot.get() == 2, "the refreshed one once it is there"
    clock.now += SNAPSHOT_TTL_S + 1
    with caplog.at_level(logging.WARNING):
        assert await snapshot.get() == 2
        for _ in range(100):
            await asyncio.sleep(0)
        assert await snapshot.get() == 2, "a failed refresh leaves the last snapshot in use"
    assert any("not refreshed" in r.getMessage() for r in caplog.records)


def row(cid: str, status: str) -> FleetRow:
    return FleetRow(cid, f"{cid}@example.org", "eagle200-local", status, 1.0, 100.0, 1, "", "", "")


def test_a_views_rows_are_sorted_once_per_snapshot_and_anew_for_the_next() -> None:
    everything = Table(row(f"00aa{n:02x}", "ok" if n % 3 else "frozen") for n in range(40))
    view = View(sort="status")
    first = view.matching(everything)
    assert [r.status for r in first[:14]] == ["frozen"] * 14 and first[14].status == "ok"
    assert view.matching(everything) is first, "the same snapshot and view: the same sorted rows"
    assert View(sort="cloud_id").matching(everything) is not first
    changed = Table(row(r.cloud_id, "ok") for r in everything)  # the next snapshot
    assert all(r.status == "ok" for r in view.matching(changed))
    assert view.matching(list(everything)) is not view.matching(list(everything)), "a plain list: each time"
