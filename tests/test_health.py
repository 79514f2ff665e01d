"""Health by cause: the simulator drives each cause through a real pinger, on one injected clock;
the server's API, the pages' rows and `rainforest status` read the same state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
import requests

from app import health
from app.credentials import Vault
from app.devices import DeviceInput, DeviceRecord
from app.health import Thresholds, Tracker
from app.leases import Leases
from app.pinger.loop import Pinger
from app.settings import Settings
from app.sim.fleet import build_fleet
from app.store import Store
from tests.api_helpers import make_token, start_api
from tests.clocked_sim import ClockedSim, clocked_sim

LIMITS = Thresholds(frozen_s=60, silent_s=60, meter_offline_s=60, auth_s=60, bad_reply_s=60,
                    push_stale_s=60, unpolled_s=60)  # fmt: skip


# --- the rule, on its own --------------------------------------------------------------------


def test_one_failure_in_three_polls_is_not_an_outage() -> None:
    t = Tracker(state="ok", since=0.0, fresh_at=0.0)
    for n in range(1, 60):  # an hour of polls every 6 s (a minute apart here), every third failing
        at = n * 60.0
        if n % 3 == 0:
            t.failed("timeout", at, replace(LIMITS, silent_s=61))
        else:
            t.fresh(at, LIMITS)
        assert t.state == "ok", n


def test_a_condition_takes_over_after_its_threshold_and_a_new_reading_ends_it() -> None:
    t = Tracker(state="ok", since=0.0, fresh_at=0.0)
    assert not t.stale(30.0, LIMITS), "a reading 30 s old is not news"
    assert t.stale(61.0, LIMITS) and t.state == "frozen" and t.since == 0.0, "frozen since the last reading"
    assert t.failed("timeout", 100.0, LIMITS) and t.state == "frozen", "unreachable has not lasted yet"
    assert t.failed("timeout", 160.0, LIMITS) and (t.state, t.since) == ("unreachable", 100.0)
    assert t.fresh(170.0, LIMITS) and (t.state, t.since) == ("ok", 170.0)


def test_a_reader_sees_a_condition_past_its_threshold_that_no_poll_has_seen() -> None:
    """A device refused for its credentials is not polled again for AUTH_BACKOFF_S: the state
    still turns to `auth` when the condition has lasted, for whoever reads it."""
    record = DeviceRecord(
        cloud_id="00ab12", user_email="", encrypted_secret="", protocol="eagle100-cloud", address="",
        active=True, created_at=0.0, last_success_at=10.0,
        health_fields={"health": "ok", "health_since": "10", "condition": "auth", "condition_since": "20"},
    )  # fmt: skip
    assert health.view(record, 79.0, LIMITS).state == "ok"
    seen = health.view(record, 80.0, LIMITS)
    assert (seen.state, seen.since) == ("auth", 20.0) and "enter it again" in seen.action
    assert health.view(record, 200.0, LIMITS, held={}).state == "unpolled", "and no pinger holds it"
    assert health.view(record, 200.0, LIMITS, held={"00ab12": 300.0}).state == "auth"


def test_a_push_device_is_silent_or_refused() -> None:
    base = DeviceRecord(
        cloud_id="00ab13", user_email="", encrypted_secret="", protocol="push", address="", active=True,
        created_at=0.0,
    )  # fmt: skip
    assert health.view(base, 1000.0, LIMITS).state == "never"
    uploading = replace(base, last_success_at=990.0)
    assert health.view(uploading, 1000.0, LIMITS).state == "ok"
    quiet = health.view(uploading, 1050.0, LIMITS)
    assert (quiet.state, quiet.since) == ("push_silent", 990.0)
    refused = replace(uploading, health_fields={"push_refused": "12", "push_refused_since": "995",
                                                "push_refused_at": "1049"})  # fmt: skip
    seen = health.view(refused, 1056.0, LIMITS)
    assert (seen.state, seen.since) == ("auth", 995.0) and "12 uploads refused" in seen.detail
    assert health.view(replace(base, active=False), 1000.0, LIMITS).state == "inactive"


# --- every cause through a real pinger ---------------------------------------------------------


@pytest.fixture
async def sim_on_clock() -> AsyncIterator[ClockedSim]:
    async with clocked_sim(8, {"eagle200-local": 1, "eagle100-cloud": 1}) as found:
        yield found


async def test_every_cause_reaches_its_state_through_a_real_pinger_and_server(
    sim_on_clock: ClockedSim,
    make_settings: Callable[..., Settings],
    redis_url: str,
    secret_key: str,
) -> None:
    sim, clock = sim_on_clock.sim, sim_on_clock.clock
    settings = make_settings(
        redis_url, sim_on_clock.relay_url, poll_interval_s=6.0, poll_timeout_s=2.0,
        local_request_gap_s=0.0, frozen_after_s=60.0, silent_after_s=60.0, meter_offline_after_s=60.0,
        auth_after_s=60.0, bad_reply_after_s=60.0,
    )  # fmt: skip
    local = [d for d in sim.fleet if d.protocol == "eagle200-local"]
    relay = [d for d in sim.fleet if d.protocol == "eagle100-cloud"]
    expected = {
        local[0].cloud_id: ("ok", None),
        local[1].cloud_id: ("frozen", "frozen"),
        local[2].cloud_id: ("meter_offline", "meter_offline"),
        local[3].cloud_id: ("bad_reply", "malformed"),
        relay[0].cloud_id: ("unreachable", "http_503"),
        relay[1].cloud_id: ("auth", "bad_credentials"),
        relay[2].cloud_id: ("ok", "flaky"),  # one request in three fails: no outage
        relay[3].cloud_id: ("ok", None),
    }
    await sim_on_clock.register(settings)
    pinger = Pinger.create(settings, clock=clock, monotonic=clock)
    await pinger.fleet.resync()
    for _ in range(3):  # every device reads well first
        await pinger.poll_once(spread=False)
        clock.now += 6.0
    faults = {cid: {"error": fault} for cid, (_, fault) in expected.items() if fault and fault != "flaky"}
    faults[relay[2].cloud_id] = {"error": "http_503", "rate": 1 / 3}
    sim.faults.replace({"devices": faults})
    for _ in range(20):  # two minutes of the clock: every threshold (60 s) passed
        await pinger.poll_once(spread=False)
        clock.now += 6.0
    await pinger.close()

    store = Store.from_url(settings.redis_url)
    try:
        records = {r.cloud_id: r for r in await store.devices.load_devices(list(expected))}
    finally:
        await store.close()
    seen = {cid: health.view(r, clock.now, LIMITS).state for cid, r in records.items()}
    assert seen == {cid: state for cid, (state, _) in expected.items()}
    bad = health.view(records[local[3].cloud_id], clock.now, LIMITS)
    assert "<InstantaneousDemand" in bad.detail or "<Response>" in bad.detail, "the unreadable reply is kept"
    assert local[3].install_code not in bad.detail

    # the server reads the same states (on its own clock, later still; this pinger took no leases,
    # so "no pinger holds them" must not have lasted UNPOLLED_AFTER_S)
    server = start_api(redis_url, secret_key, FROZEN_AFTER_S="60", SILENT_AFTER_S="60",
                       METER_OFFLINE_AFTER_S="60", AUTH_AFTER_S="60", BAD_REPLY_AFTER_S="60",
                       UNPOLLED_AFTER_S="3600")  # fmt: skip
    try:
        token = await asyncio.to_thread(make_token, redis_url, "health-reader", True)
        auth = {"Authorization": f"Bearer {token}"}
        for cid, (state, _) in expected.items():
            got = requests.get(f"{server.url}/api/users/{cid}", headers=auth, timeout=10).json()["health"]
            assert got["state"] == state, (cid, got)
            assert got["action"] == health.ACTIONS[state]
        found = {"health": "frozen"}
        listed = requests.get(f"{server.url}/api/users/", params=found, headers=auth, timeout=10)
        assert [u["cloud_id"] for u in listed.json()["users"]] == [local[1].cloud_id]
    finally:
        server.stop()


async def test_an_active_device_no_pinger_holds_is_unpolled(redis_url: str, secret_key: str) -> None:
    store, vault = Store.from_url(redis_url), Vault(secret_key)
    try:
        device = build_fleet(1, 12)[0]
        await store.devices.save_device(DeviceInput.from_mapping(device.users_line()), vault)
        record = await store.devices.get_device(device.cloud_id)
        held = await Leases(store.redis).held()
    finally:
        await store.close()
    assert record is not None and device.cloud_id not in held
    assert health.view(record, record.created_at + 30, LIMITS, held).state == "never"
    late = health.view(record, record.created_at + 61, LIMITS, held)
    assert (late.state, late.since) == ("unpolled", record.created_at) and "pingers" in late.action
