"""The uploaders' three dialects on recorded bodies, and hostile ones: pure, no network."""

from __future__ import annotations

import pytest

from app.eagle.readings import MeterDemand, MeterPrice, MeterSummation
from app.push.dialects import MAX_REPORTS, BadUpload, parse_upload
from tests.conftest import FIXTURES

NOW = 1_800_000_000.0


def body(name: str) -> bytes:
    return (FIXTURES / "push" / name).read_bytes()


def test_eagle100_fragments_become_readings_of_their_kind() -> None:
    demand = parse_upload(body("eagle100_demand.xml"), NOW).readings
    assert [(r.kind, r.device_time) for r in demand] == [("demand", 0x1C91EC39 + 946684800)]
    assert demand[0].record("00ce69", 1.0, "push")["demand_kw"] == -0.75  # 32-bit two's complement
    summation = parse_upload(body("eagle100_summation.xml"), NOW).readings[0]
    assert summation.kind == "summation" and summation.record("00ce69", 1.0)["delivered_kwh"] == 20060.767
    price = parse_upload(body("eagle100_price.xml"), NOW).readings[0]
    assert (
        price.record("00ce69", 1.0)["currency"] == "USD" and price.record("00ce69", 1.0)["price"] == 0.01342
    )


def test_other_fragments_are_kept_for_the_record_not_written() -> None:
    upload = parse_upload(body("eagle100_device_info.xml"), NOW)
    assert upload.readings == [] and upload.kept["DeviceInfo"]["ModelId"] == "Z109-EAGLE"


def test_eagle200_xml_current_summation() -> None:
    (reading,) = parse_upload(body("eagle200_summation.xml"), NOW).readings
    record = reading.record("00ce69", 1.0, "push")
    assert (record["delivered_kwh"], record["received_kwh"]) == (10563.388, 3.147)


def test_eagle200_json_batch() -> None:
    upload = parse_upload(body("eagle200_batch.json"), NOW)
    demand, wrapped, summation, price = upload.readings
    assert isinstance(demand, MeterDemand) and demand.device_time == 1539632322 and demand.demand_kw == 0.472
    assert isinstance(wrapped, MeterDemand) and wrapped.demand_kw == pytest.approx(-3.712)
    assert isinstance(summation, MeterSummation) and summation.received_kwh == 3.147
    assert isinstance(price, MeterPrice) and (price.price, price.currency) == (0.0884, "USD")
    assert demand.meter_mac_id == 0x000780E67E73 and "Message" in upload.kept


HOSTILE = {
    "billion laughs": (FIXTURES / "billion_laughs.xml").read_bytes(),
    "external entity": (FIXTURES / "external_entity.xml").read_bytes(),
    "deep nesting": b"<rainforest>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</rainforest>",
    "NaN": b'{"body":[{"timestamp":"1","dataType":"InstantaneousDemand","data":{"demand":NaN}}]}',
    "not json": b"{nope",
    "body not a list": b'{"body": {"a": 1}}',
    "garbage": b"\x00\xff garbage",
    "empty": b"   ",
    "huge batch": b'{"body":[' + b",".join([b"{}"] * (MAX_REPORTS + 1)) + b"]}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_bodies_are_refused_with_one_sentence(name: str) -> None:
    with pytest.raises(BadUpload) as info:
        parse_upload(HOSTILE[name], NOW)
    assert str(info.value).endswith(".") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "report",
    [{"timestamp": "32503680000000", "dataType": "InstantaneousDemand", "data": {"demand": 1.0}},  # year 3000
     {"timestamp": "1000", "dataType": "InstantaneousDemand", "data": {"demand": 1.0}},  # 1970
     {"timestamp": "abc", "dataType": "InstantaneousDemand", "data": {"demand": 1.0}},
     {"timestamp": "1539632322000", "dataType": "InstantaneousDemand", "data": {"demand": "lots"}},
     {"timestamp": "1539632322000", "dataType": "InstantaneousDemand", "data": {"demand": [1]}},
     {"timestamp": "1539632322000", "dataType": "InstantaneousDemand", "data": "x"},
     {"timestamp": "1539632322000", "dataType": "CurrentSummation", "data": {}},
     {"timestamp": True, "dataType": "InstantaneousDemand", "data": {"demand": 1.0}}],
)  # fmt: skip
def test_unusable_reports_are_set_aside_with_a_reason(report: dict[str, object]) -> None:
    import orjson

    upload = parse_upload(orjson.dumps({"body": [report]}), NOW)
    assert upload.readings == [] and len(upload.ignored) == 1
