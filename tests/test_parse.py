"""Parsers on recorded payloads (tests/fixtures/): pure functions, no network."""

from __future__ import annotations

import datetime as dt

import pytest

from app.eagle import parse
from app.errors import DeviceAuthError, DeviceBadReply, DeviceReplyError, DeviceUnavailable
from tests.conftest import FIXTURES


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_manual_sample_decodes_to_the_documented_values() -> None:
    r = parse.parse_demand(fixture("demand_manual.xml"))
    assert r.demand == 944 and r.demand_kw == pytest.approx(0.944)
    assert r.device_mac_id == 0xD8D5B90000002AEB and r.meter_mac_id == 0x000781000081FD17
    when = dt.datetime.fromtimestamp(r.device_time, dt.UTC)
    assert when.strftime("%Y-%m-%d %H:%M") == "2015-03-10 17:54"
    assert (r.multiplier, r.divisor, r.digits_right, r.digits_left) == (1, 1000, 3, 6)
    assert r.suppress_leading_zero == "Y"


def test_record_has_every_field_the_design_names() -> None:
    record = parse.parse_demand(fixture("demand_manual.xml")).record("00ce69", 1426010000.5)
    assert record["cloud_id"] == "00ce69" and record["polled_at"] == 1426010000.5
    for name in ("device_time", "demand_kw", "DeviceMacId", "MeterMacId", "TimeStamp", "Demand",
                 "Multiplier", "Divisor", "DigitsRight", "DigitsLeft", "SuppressLeadingZero"):  # fmt: skip
        assert name in record


def test_json_format_reply() -> None:
    r = parse.parse_demand(fixture("demand_json.json"))
    assert r.demand_kw == pytest.approx(0.944) and r.timestamp == 0x1C9347B8


@pytest.mark.parametrize("name", ["demand_negative_32bit.xml", "demand_negative_24bit.xml"])
def test_negative_demand_in_both_encodings(name: str) -> None:
    r = parse.parse_demand(fixture(name))
    assert r.demand == -750 and r.demand_kw == pytest.approx(-0.75)


def test_zero_multiplier_and_divisor_count_as_one_and_names_are_case_insensitive() -> None:
    r = parse.parse_demand(fixture("demand_zero_scale.xml"))
    assert r.demand_kw == 5.0 and r.multiplier == 0 and r.divisor == 0


@pytest.mark.parametrize(
    ("name", "kind"),
    [("error_auth.xml", DeviceAuthError), ("error_offline.xml", DeviceUnavailable),
     ("error_other.xml", DeviceReplyError)],
)  # fmt: skip
def test_error_replies_map_to_distinct_kinds(name: str, kind: type[Exception]) -> None:
    with pytest.raises(kind):
        parse.parse_demand(fixture(name))


@pytest.mark.parametrize("name", ["malformed.xml", "billion_laughs.xml", "external_entity.xml"])
def test_hostile_or_broken_xml_is_a_bad_reply(name: str) -> None:
    with pytest.raises(DeviceBadReply):
        parse.parse_demand(fixture(name))


def test_oversized_reply_is_refused_before_parsing() -> None:
    body = b"<InstantaneousDemand>" + b" " * parse.MAX_REPLY_BYTES + b"</InstantaneousDemand>"
    with pytest.raises(DeviceBadReply, match="bound"):
        parse.parse_demand(body)


@pytest.mark.parametrize(
    "body",
    [b"", b"OK", b"<NetworkInfo/>", b'{"a":1,"b":2}', b"[1]",
     b"<InstantaneousDemand><TimeStamp>0x1</TimeStamp></InstantaneousDemand>",
     b"<InstantaneousDemand><DeviceMacId>0x1</DeviceMacId><TimeStamp>0x1</TimeStamp>"
     b"<Demand>nan</Demand></InstantaneousDemand>"],
)  # fmt: skip
def test_wrong_shapes_are_bad_replies(body: bytes) -> None:
    with pytest.raises(DeviceBadReply):
        parse.parse_demand(body)


def test_json_without_outer_braces() -> None:
    root, fields = parse.parse_document(fixture("json_no_braces.json"))
    assert root == "historydata" and fields == {"currentsummation": "x"}


def test_summation_price_and_network_info() -> None:
    s = parse.parse_summation(fixture("summation.xml"))
    assert s.delivered_kwh == pytest.approx(0x1321A5F / 1000) and s.received_kwh == 1.0
    p = parse.parse_price(fixture("price.xml"))
    assert p.price == pytest.approx(0.01342) and p.currency == 840 and p.tier == 1
    assert parse.parse_price(fixture("price_none.xml")).price is None
    n = parse.parse_network_info(fixture("network_info.xml"))
    assert n.model_id == "Z109-EAGLE" and n.firmware == "1.4.47 (6798)"
