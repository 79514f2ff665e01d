"""What gateways in the field send that the manuals do not promise (eagle-protocols.md §7), on
recorded payloads in tests/fixtures/ (each file says where its shape comes from): pure parsers,
the push writer and the push route.

- A price typed into the gateway's app carries TimeStamp and StartTime 0xffffffff ("no time"):
  `price_user_set.xml` (the PriceCluster of the EAGLE-100 REST manual with the sentinel the
  field notes describe) and `push/eagle100_price_no_time.xml` (the same in the uploader's RFA
  envelope).
- The EAGLE-200 uploader's XML:Simple format: `push/eagle200_xml_simple.xml`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from app.commands.ops import clock_words
from app.credentials import Vault
from app.devices import DeviceInput
from app.eagle.parse import parse_history, parse_price
from app.eagle.parse200 import parse_device_query
from app.eagle.readings import plausible_time
from app.errors import DeviceMeterOffline
from app.lines import read as read_lines
from app.pinger.loop import Pinger
from app.push.dialects import BadUpload, parse_upload
from app.push.writer import PushWriter
from app.settings import Settings
from app.store import PollUpdate, Store
from tests.clocked_sim import clocked_sim
from tests.conftest import FIXTURES

NOW = 1_800_000_000.0


def test_a_price_typed_into_the_app_has_no_time_and_keeps_when_it_came() -> None:
    price = parse_price((FIXTURES / "price_user_set.xml").read_bytes())
    assert price.device_time is None and price.price == 0.078 and plausible_time(price.device_time, NOW)
    line = price.record("00ce69", NOW + 0.25)
    assert (
        line["device_time"] is None
        and line["polled_at"] == NOW + 0.25
        and line["rate_label"] == "Set by User"
    )


def test_a_pushed_reading_without_a_time_is_written_once_per_value_within_the_hour(tmp_path: Path) -> None:
    upload = parse_upload((FIXTURES / "push" / "eagle100_price_no_time.xml").read_bytes(), NOW)
    assert [(r.kind, r.device_time) for r in upload.readings] == [("price", None)] and not upload.ignored
    writer = PushWriter(tmp_path, "iseif-rainforest")
    for n in range(3):  # the uploader sends it again and again
        at = NOW + 600 * n
        line = orjson.dumps(upload.readings[0].record("00ce69", at, "push")) + b"\n"
        written, duplicates = writer.write("00ce69", [("price", None, line)], at)
        assert (len(written), duplicates) == ((1, 0) if n == 0 else (0, 1))
    writer.close()
    (path,) = tmp_path.glob("*/*.jl")
    (record,) = read_lines(path).records
    assert record["device_time"] is None and record["polled_at"] == NOW and record["price"] == 0.078


def test_an_xml_simple_batch_becomes_readings_and_a_report_without_one_is_counted() -> None:
    """`push/eagle200_xml_simple.xml`: the EAGLE-200 uploader's XML:Simple format as its
    specification describes it (a nested body, Unix-second times, `Variables`), in a batch of
    three reports (UploadSize 3); element names as the Local API's and the JSON format's."""
    upload = parse_upload((FIXTURES / "push" / "eagle200_xml_simple.xml").read_bytes(), NOW)
    got = [(r.kind, r.device_time, r.record("d8d5b9", NOW, "push")) for r in upload.readings]
    assert [(kind, t) for kind, t, _ in got] == [
        ("demand", 1539632322), ("summation", 1539632322), ("demand", 1539632330), ("price", 1539632330),
    ]  # fmt: skip
    assert got[0][2]["demand_kw"] == 0.472 and got[0][2]["MeterMacId"] == 0x000780E67E73
    assert got[1][2]["delivered_kwh"] == 10563.42 and got[1][2]["received_kwh"] == 3.147
    assert got[2][2]["demand_kw"] == -3.712, "an unsigned 32-bit count of watts, wrapped"
    assert (got[3][2]["price"], got[3][2]["currency"], got[3][2]["tier"]) == (0.0884, "USD", 2)
    assert upload.ignored == ["report 2 holds no reading (empty or unknown variables)"]


def test_an_xml_simple_body_nested_too_deep_is_refused_with_one_sentence() -> None:
    deep = (
        b"<XmlSimple><Report><Variables><Variable><Name><b>x</b></Name></Variable></Variables>"
        b"</Report></XmlSimple>"
    )
    with pytest.raises(BadUpload, match="nested deeper than 5 levels"):
        parse_upload(deep, NOW)


def test_history_data_holds_demand_and_summation_entries_on_both_paths() -> None:
    """`history_mixed.xml`: an EAGLE-100's get_history_data answer with CurrentSummationDelivered
    and InstantaneousDemand entries (the Uploader manual's HistoryData, eagle-protocols.md §7);
    `push/eagle100_history.xml`: the same fragment pushed in the RFA envelope."""
    entries = parse_history((FIXTURES / "history_mixed.xml").read_bytes())
    assert [e.kind for e in entries] == ["summation", "demand", "summation", "demand", "summation"]
    assert entries[1].record("00ce69", NOW)["demand_kw"] == 0.48
    pushed = parse_upload((FIXTURES / "push" / "eagle100_history.xml").read_bytes(), NOW)
    assert not pushed.readings and not pushed.ignored
    assert [(e.kind, e.device_time) for e in pushed.history] == [(e.kind, e.device_time) for e in entries]


def test_what_varies_between_gateways_is_read_not_refused() -> None:
    """`push/eagle200_xml_raw_mixed.xml`: an EAGLE-200's XML:Raw upload (root version 2.0) with
    the migration notes' additions (UnitOfMeasure, Protocol, TimeCluster's UTCTimeString), a
    MessageCluster, a nested ReadAttributesResponse (smart plugs), a DeviceInfo with two Port
    elements, a price in euros with a decimal tier, and a demand whose multiplier is 0.
    `eagle200/query_all_empty.xml`: a device_query whose every Value is empty."""
    upload = parse_upload((FIXTURES / "push" / "eagle200_xml_raw_mixed.xml").read_bytes(), NOW)
    price, demand = (r.record("00ce69", NOW, "push") for r in upload.readings)
    assert (price["price"], price["currency"], price["tier"]) == (0.2121, "EUR", 10)
    assert demand["demand_kw"] == 1.2, "a multiplier of 0 counts as 1"
    assert set(upload.kept) == {"TimeCluster", "MessageCluster", "DeviceInfo"}
    assert upload.kept["TimeCluster"]["UTCTimeString"] == "2015-03-10 14:20:09"
    assert upload.ignored == ["ReadAttributesResponse is nested: not kept"]
    with pytest.raises(DeviceMeterOffline, match="every value its meter reported is empty"):
        parse_device_query((FIXTURES / "eagle200" / "query_all_empty.xml").read_bytes())


async def test_a_new_meter_is_an_event_and_its_lower_total_no_reset(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """The simulator swaps a gateway's meter mid-run (as a utility does): the pinger keeps the
    change in the device's crawl history and marks the first summation from the new meter
    `meter_changed`, not a reset; a total that falls on the same meter is `meter_reset`."""
    quick = {
        "poll_interval_s": 6.0,
        "poll_timeout_s": 2.0,
        "local_request_gap_s": 0.0,
        "summation_interval_s": 6.0,
    }
    async with clocked_sim(1, {"eagle100-cloud": 1}, start=time.time() - 600) as cs:
        settings = make_settings(redis_url, cs.relay_url, **quick)
        await cs.register(settings)
        cid = cs.sim.fleet[0].cloud_id
        pinger = Pinger.create(settings, clock=cs.clock, monotonic=cs.clock)
        store = Store.from_url(redis_url)
        try:
            await pinger.fleet.resync()

            async def polls(n: int) -> None:
                for _ in range(n):
                    await pinger.ownership.renew()
                    await pinger.poll_once(spread=False)
                    cs.clock.now += 6.0

            await polls(3)
            swapped = dataclasses.replace(cs.sim.fleet[0], meter_mac_id=0x0007810000ABCDEF)
            cs.sim.fleet[0] = cs.sim.by_id[cid] = swapped
            await polls(3)
            await pinger.lifetime.drain()
            history = await store.crawls.crawl_history(cid)
        finally:
            await pinger.close()
            await store.close()
    events = [h for h in history if h.get("event")]
    assert (
        len(events) == 1
        and events[0]["event"].endswith("→ 0x0007810000abcdef")
        and events[0]["changed"] == ["meter"]
    )
    sums = [
        r
        for p in sorted(settings.logs_dir.glob("*/*.jl"))
        for r in read_lines(p).records
        if r["kind"] == "summation"
    ]
    assert [r.get("meter_changed", False) for r in sums].count(True) == 1
    assert not any(r.get("meter_reset") for r in sums)


def test_a_total_that_falls_on_the_same_meter_is_a_reset_on_another_a_change() -> None:
    from app.pinger.fleet import DeviceState
    from app.pinger.recorder import mark_summation

    state = DeviceState.__new__(DeviceState)
    state.last_summation = None
    lines = [{"MeterMacId": m, "delivered_kwh": kwh} for m, kwh in ((1, 50.0), (1, 51.0), (1, 0.4), (2, 0.1))]
    for line in lines:
        mark_summation(state, line)  # type: ignore[arg-type]
    assert [(x.get("meter_reset", False), x.get("meter_changed", False)) for x in lines] == [
        (False, False), (False, False), (True, False), (False, True),
    ]  # fmt: skip


async def test_a_gateway_clock_85_minutes_behind_is_kept_as_said_and_shown(
    redis_url: str, secret_key: str
) -> None:
    """A reading stamped 85 minutes before it reached us (the field notes' skew) is written with
    the gateway's own time, and the device's record says how far its clock is behind."""
    upload = parse_upload((FIXTURES / "push" / "eagle100_price.xml").read_bytes(), NOW)
    assert upload.readings and plausible_time(int(NOW) - 85 * 60, NOW)
    store = Store.from_url(redis_url)
    try:
        line = {"cloud_id": "0c1f00", "polled_at": NOW, "device_time": int(NOW) - 85 * 60, "kind": "demand"}
        await store.devices.save_device(
            DeviceInput.from_mapping({"cloud_id": "0c1f00", "protocol": "push"}), Vault(secret_key)
        )
        await store.devices.record_polls([PollUpdate("0c1f00", last_reading=orjson.dumps(line).decode())])
        record = await store.devices.get_device("0c1f00")
    finally:
        await store.close()
    assert record is not None and record.clock_offset_s == 5100.0
    assert record.public()["clock_offset_s"] == 5100.0
    assert clock_words(record.clock_offset_s) == "  gateway clock 85 min behind" and clock_words(-30.0) == ""


def test_a_history_upload_holds_at_most_a_thousand_entries() -> None:
    entry = (
        (FIXTURES / "history_mixed.xml")
        .read_bytes()
        .split(b"<HistoryData>")[1]
        .split(b"</CurrentSummationDelivered>")[0]
    )
    body = b'<rainforest macId="0x1"><HistoryData>' + (entry + b"</CurrentSummationDelivered>") * 1001
    with pytest.raises(BadUpload, match="at most 1000 entries"):
        parse_upload(body + b"</HistoryData></rainforest>", NOW)
