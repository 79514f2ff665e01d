"""Gaps refilled from a gateway's own history, exactly once, across pinger restarts.

Scaled down from the field (a 5-minute outage, 6 s polls, 60 s summations): the simulator
makes a reading every second, the pinger polls every 0.5 s and BACKFILL_AFTER_S is 1 s.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from app.lines import read as read_lines
from app.pinger import Pinger
from app.settings import Settings
from app.store import Store
from tests.conftest import Sim
from tests.test_pinger import register, run_for

MIX = "eagle100-cloud=1,eagle100-local=1,eagle200-local=1"


def summation_lines(settings: Settings, cid: str) -> list[dict[str, object]]:
    found = []
    for path in sorted(settings.logs_dir.glob(f"????-??-??-??/*-{cid}-*.jl")):
        found += [r for r in read_lines(path).records if r.get("kind") == "summation"]
    return found


async def test_an_outage_is_refilled_from_history_exactly_once_across_restarts(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    sim = start_sim(3, "--protocols", MIX)
    settings = make_settings(
        redis_url, sim.url, summation_interval_s=1.0, price_interval_s=60.0, backfill_after_s=1.0,
        local_request_gap_s=0.05,
    )  # fmt: skip
    await register(sim, settings)
    protocol = {str(u["cloud_id"]): str(u["protocol"]) for u in sim.users()}
    down = list(protocol)

    # pinger A polls, the gateways go silent, and A is stopped while they are
    first = Pinger.create(settings)
    task = asyncio.create_task(first.run())
    await asyncio.sleep(1.5)
    sim.set_faults({"devices": {cid: {"error": "offline"} for cid in down}})
    outage_start = time.time()
    await asyncio.sleep(3.0)
    first.request_stop()
    await asyncio.wait_for(task, 10)
    outage_end = time.time()
    sim.set_faults({})

    # pinger B takes the fleet over: the gateways answer again, and their gap is refilled
    await run_for(Pinger.create(settings), 2.5)
    store = Store.from_url(settings.redis_url)
    for cid in down:
        lines = summation_lines(settings, cid)
        history = [r for r in lines if r["source"] == "history"]
        record = await store.devices.get_device(cid)
        assert record is not None
        if protocol[cid] == "eagle200-local":
            assert not history and record.last_backfill is None, "the EAGLE-200 has no history to ask"
            continue
        times = [int(r["device_time"]) for r in history]  # type: ignore[call-overload]
        assert times, f"{protocol[cid]} {cid}: the outage was not refilled"
        assert min(times) <= outage_start + 1 and max(times) >= int(outage_end) - 2, (
            "part of the gap was missed"
        )
        per_time = Counter(int(r["device_time"]) for r in lines)  # type: ignore[call-overload]
        assert max(per_time.values()) == 1, "a summation was written twice"
        assert record.last_backfill is not None and record.last_backfill["lines"] == len(history)
        delivered = [float(r["delivered_kwh"]) for r in sorted(history, key=lambda r: r["device_time"])]  # type: ignore[arg-type,return-value]
        assert delivered == sorted(delivered)

    # pinger C: nothing new to refill, and the same refill forced to run again, even with its
    # mark in Redis forgotten, writes nothing new (the hour files already hold those lines)
    before = {cid: len(summation_lines(settings, cid)) for cid in down}
    ended = {cid: (await store.devices.get_device(cid)).last_backfill for cid in down}  # type: ignore[union-attr]
    third = Pinger.create(settings)
    await third.fleet.resync()
    await third.poll_once(spread=False)
    for cid in down:
        state = third.fleet.devices[cid]
        assert state.refill_from is None, "a gap already refilled was queued again after the restart"
        if ended[cid] is None:
            continue
        state.refill_from, state.refill_until = ended[cid]["start"], ended[cid]["end"]  # type: ignore[index]
        state.history_through, state.history_asked_at = 0, 0.0
        third.refiller.on_success(cid, state, third.clients.for_protocol(protocol[cid]), time.time(), None)
    await asyncio.gather(*third.refiller.tasks)
    await third.close()
    for cid in down:
        fresh = [r for r in summation_lines(settings, cid)[before[cid] :] if r["source"] == "history"]
        assert not fresh, "a second refill of the same gap wrote it again"
        record = await store.devices.get_device(cid)
        if protocol[cid] != "eagle200-local":
            assert (
                record is not None and record.last_backfill is not None and record.last_backfill["lines"] == 0
            )
    await store.close()
