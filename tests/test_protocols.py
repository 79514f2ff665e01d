"""A mixed fleet end to end: the relay, EAGLE-100s and EAGLE-200s on the local network, all
served by the real simulator over HTTP; the pinger writes every distinct reading once."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aioeagle import EagleHub

from app.credentials import Vault
from app.devices import DeviceInput
from app.eagle.parse200 import number
from app.lines import read as read_lines
from app.pinger import Pinger
from app.settings import Settings
from app.sim.fleet import build_fleet
from app.store import Store
from tests.conftest import Sim
from tests.test_pinger import noon_offset_s, register, run_for

MIX = "eagle100-cloud=60,eagle200-local=30,eagle100-local=10"
DURATION_S = 4.0


def lines_of(settings: Settings, kind: str) -> dict[str, list[dict[str, object]]]:
    """Each device's lines of one kind, in file order."""
    found: dict[str, list[dict[str, object]]] = defaultdict(list)
    for path in sorted(settings.logs_dir.glob("????-??-??-??/*.jl")):
        for record in read_lines(path).records:
            if record.get("kind", "demand") == kind:
                found[str(record["cloud_id"])].append(record)
    return found


@pytest.fixture
async def mixed(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> AsyncIterator[tuple[Sim, Settings]]:
    sim = start_sim(300, "--protocols", MIX, "--time-offset-s", str(noon_offset_s()))
    # one poll a second with 0.9 s to answer: 900 requests a second would leave the one-process
    # simulator too little slack on a loaded 2-core machine for a 0.4 s timeout (a reading served
    # to a poll that timed out is one the test would count as lost)
    settings = make_settings(
        redis_url, sim.url, summation_interval_s=1.0, price_interval_s=2.0, local_request_gap_s=0.05,
        poll_interval_s=1.0, poll_timeout_s=0.9,
    )  # fmt: skip
    yield sim, settings


async def test_a_mixed_fleet_of_300_writes_every_served_reading_once(mixed: tuple[Sim, Settings]) -> None:
    sim, settings = mixed
    users = {str(u["cloud_id"]): u for u in sim.users()}
    await register(sim, settings)
    await run_for(Pinger.create(settings), DURATION_S)

    # demand: every distinct reading served is in the files exactly once, decoded right
    truth = {(str(r["cloud_id"]), int(r["device_time"])): r for r in sim.served()}  # type: ignore[call-overload]
    files: dict[tuple[str, int], list[dict[str, object]]] = defaultdict(list)
    for cid, records in lines_of(settings, "demand").items():
        for record in records:
            files[(cid, int(record["device_time"]))].append(record)  # type: ignore[call-overload]
    assert files.keys() == truth.keys()
    assert all(len(found) == 1 for found in files.values()), "a reading was written twice"
    for key, (record,) in files.items():
        protocol = users[key[0]]["protocol"]
        assert record["source"] == protocol and record["kind"] == "demand"
        assert record["demand_kw"] == pytest.approx(truth[key]["demand_w"] / 1000, abs=1e-6)  # type: ignore[operator]
    by_protocol = {p: {k for k in files if users[k[0]]["protocol"] == p} for p in MIX_PROTOCOLS}
    assert all(len(keys) > 0 for keys in by_protocol.values()), "a protocol wrote nothing"
    exporting = [k for k, (r,) in files.items() if float(r["demand_kw"]) < 0]  # type: ignore[arg-type]
    assert any(users[cid]["protocol"] == "eagle200-local" for cid, _ in exporting), (
        "no EAGLE-200 exporter seen"
    )

    # summation and price: at their cadence, only on change, rising
    summations, prices = lines_of(settings, "summation"), lines_of(settings, "price")
    assert set(summations) == set(users), "a device has no summation line"
    for cid, records in summations.items():
        keys = [(r["device_time"], r["delivered_kwh"], r["received_kwh"]) for r in records]
        assert len(keys) == len(set(keys)), f"{cid}: a summation line repeats the one before"
        assert len(records) <= DURATION_S / 1.0 + 2, f"{cid}: summation faster than its interval"
        delivered = [float(r["delivered_kwh"]) for r in records]  # type: ignore[arg-type]
        assert delivered == sorted(delivered), f"{cid}: summation went down"
        assert all(r["source"] == users[cid]["protocol"] for r in records)
    assert len(prices) > 100, "prices were not captured"
    for cid, records in prices.items():
        assert len(records) <= DURATION_S / 2.0 + 2, f"{cid}: price faster than its interval"
        assert all(isinstance(r["price"], float) and r["currency"] == "USD" for r in records)
        timed = [r for r in records if r["device_time"] is not None]
        assert all(r["tier"] in (1, 2) and r["rate_label"] in ("Peak", "Off-peak") for r in timed)
        typed = [r for r in records if r["device_time"] is None]  # a price set in the app: no time
        assert len(typed) <= 1 and all(r["rate_label"] == "Set by User" for r in typed), cid
    assert any(r["device_time"] is None for rs in prices.values() for r in rs), "no user-set price seen"


MIX_PROTOCOLS = ("eagle100-cloud", "eagle200-local", "eagle100-local")


async def test_eagle200_summation_is_the_demand_integrated(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """Between two summation lines, delivered energy grows by the served demand × its interval."""
    sim = start_sim(20, "--protocols", "eagle200-local=1")
    settings = make_settings(redis_url, sim.url, summation_interval_s=1.0, local_request_gap_s=0.05)
    await register(sim, settings)
    await run_for(Pinger.create(settings), 4.0)
    demand = {(str(r["cloud_id"]), int(r["device_time"])): float(r["demand_w"]) for r in sim.served()}  # type: ignore[call-overload,arg-type]
    # the same seed builds the same fleet: leave out meters that send "21.499 kWh" (1 Wh steps)
    precise = {d.cloud_id for d in build_fleet(20, 7, {"eagle200-local": 1}) if not d.inline_units}
    checked = 0
    for cid, records in lines_of(settings, "summation").items():
        if cid not in precise:
            continue
        for a, b in itertools.pairwise(records):
            t1, t2 = int(a["device_time"]), int(b["device_time"])  # type: ignore[call-overload]
            between = [demand.get((cid, t)) for t in range(t1 + 1, t2 + 1)]
            if not between or None in between:
                continue  # a reading in between was not polled: nothing to compare
            expected_kwh = sum(max(w, 0.0) for w in between if w is not None) / 1000 / 3600  # 1 s readings
            grown = float(b["delivered_kwh"]) - float(a["delivered_kwh"])  # type: ignore[arg-type]
            assert grown == pytest.approx(expected_kwh, abs=2e-6), f"{cid} {t1}..{t2}"
            checked += 1
    assert checked >= 10


async def test_home_assistants_aioeagle_reads_the_simulated_eagle200s_unchanged(
    start_sim: Callable[..., Sim],
) -> None:
    sim = start_sim(8, "--protocols", "eagle200-local=1")

    async def read(session: aiohttp.ClientSession, user: dict[str, object]) -> None:
        hub = EagleHub(session, str(user["cloud_id"]), str(user["install_code"]), host=str(user["address"]))
        meters = await hub.get_device_list()  # aioeagle waits 1 s between requests to one hub
        connected = [m for m in meters if m.is_connected]
        assert len(connected) == 1 and connected[0].model_id == "electric_meter"
        data = await connected[0].get_device_query()
        assert number(data["zigbee:InstantaneousDemand"]["Value"]) is not None
        assert number(data["zigbee:CurrentSummationDelivered"]["Value"]) > 0  # type: ignore[operator]
        details = await connected[0].get_device_details()
        assert details and details[0]["Name"] == "Main"

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(read(session, user) for user in sim.users()))


async def test_a_wrong_install_code_is_auth_with_the_long_backoff(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    sim = start_sim(3, "--protocols", "eagle200-local=1,eagle100-local=1")
    settings = make_settings(redis_url, sim.url, auth_backoff_s=600.0, local_request_gap_s=0.05)
    good, wrong, other = (str(u["cloud_id"]) for u in sim.users())
    await register(sim, settings)
    store, vault = Store.from_url(settings.redis_url), Vault(settings.secret_key)
    user = next(u for u in sim.users() if u["cloud_id"] == wrong)
    await store.devices.save_device(
        DeviceInput.from_mapping({**user, "install_code": "0000000000000000"}), vault
    )
    pinger = Pinger.create(settings)
    await pinger.fleet.resync()
    first = await pinger.poll_once(spread=False)
    second = await pinger.poll_once(spread=False)
    await pinger.close()
    assert first.errors == {"auth": 1} and first.ok == 2
    assert second.backoff == 1 and second.ok == 2, "a refused install code must not be retried at once"
    assert pinger.fleet.devices[wrong].retry_at > time.monotonic() + 500  # the schedule's clock
    record = await store.devices.get_device(wrong)
    assert record is not None and record.status == "failing" and record.last_error.startswith("auth:")
    assert "0000000000000000" not in record.last_error
    for cid in (good, other):
        assert (await store.devices.get_device(cid)).status == "ok"  # type: ignore[union-attr]
    await store.close()


async def test_a_hanging_local_gateway_never_delays_the_others(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    sim = start_sim(30, "--protocols", MIX, "--timeout-hold-s", "3")
    settings = make_settings(redis_url, sim.url, local_request_gap_s=0.05)
    await register(sim, settings)
    local = [str(u["cloud_id"]) for u in sim.users() if u["protocol"] != "eagle100-cloud"][:4]
    sim.set_faults({"devices": {cid: {"error": "timeout"} for cid in local}})
    pinger = Pinger.create(settings)
    await run_for(pinger, 2.5)
    files = {(cid, r["device_time"]) for cid, rs in lines_of(settings, "demand").items() for r in rs}
    truth = {(r["cloud_id"], r["device_time"]) for r in sim.served()}
    healthy = {k for k in truth if k[0] not in local}
    assert healthy and healthy <= files, "a healthy device lost a reading while others hung"
    store = Store.from_url(settings.redis_url)
    for record in await store.devices.load_devices(local):
        assert record.status == "failing" and record.last_error.startswith("timeout:")
    await store.close()
