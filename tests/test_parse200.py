"""EAGLE-200 Local API parsers, EAGLE-100 history and the line kinds, on recorded payloads."""

from __future__ import annotations

import datetime as dt

import pytest

from app.eagle import parse
from app.eagle.parse200 import choose_meter, number, parse_device_list, parse_device_query
from app.eagle.readings import MeterPrice, MeterSummation
from app.errors import DeviceBadReply, DeviceMeterOffline
from tests.conftest import FIXTURES

ALL = frozenset(["demand", "summation", "price"])


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_device_list_gives_the_connected_meter() -> None:
    meters = parse_device_list(fixture("eagle200/device_list.xml"))
    assert choose_meter(meters).hardware_address == "0x0007810000123456"
    assert meters[0].last_contact == 0x5C5AFF97 and meters[0].usable


def test_a_stale_not_joined_meter_listed_first_is_skipped() -> None:
    meters = parse_device_list(fixture("eagle200/device_list_stale_first.xml"))
    assert len(meters) == 2 and not meters[0].usable
    assert choose_meter(meters).hardware_address == "0x0007810000123456"


def test_no_connected_meter_is_meter_offline_and_says_what_it_saw() -> None:
    meters = parse_device_list(fixture("eagle200/device_list_none_connected.xml"))  # lower-case tags
    with pytest.raises(DeviceMeterOffline, match="Not joined"):
        choose_meter(meters)


def test_query_with_units_decodes_demand_summation_and_price() -> None:
    r = parse_device_query(fixture("eagle200/query_units.xml"), ALL)
    assert r.demand is not None and r.demand.demand_kw == pytest.approx(1.965)
    when = dt.datetime.fromtimestamp(r.demand.device_time, dt.UTC)
    assert when.strftime("%Y-%m-%d") == "2021-08-18" and r.demand.meter_mac_id == 0x0007810000123456
    assert isinstance(r.summation, MeterSummation)
    assert (r.summation.delivered_kwh, r.summation.received_kwh) == (2853.662, 0.0)
    assert isinstance(r.price, MeterPrice)
    assert (r.price.price, r.price.currency, r.price.tier, r.price.rate_label) == (0.1342, "USD", 2, "Peak")


def test_inline_values_wrapped_demand_and_renamed_variables() -> None:
    r = parse_device_query(fixture("eagle200/query_inline_wrapped_renamed.xml"), ALL)
    assert r.demand is not None and r.demand.demand_kw == pytest.approx(-3.712)  # 4294963.584 kW wrapped
    assert r.summation is not None and (r.summation.delivered_kwh, r.summation.received_kwh) == (21.499, 3.25)
    assert isinstance(r.price, MeterPrice)
    # an integer price with trailing digits, the numeric currency, Tier / RateLabel names
    assert (r.price.price, r.price.currency, r.price.tier, r.price.rate_label) == (
        0.1342,
        "USD",
        1,
        "Off-peak",
    )


def test_empty_and_invalid_values_are_missing_not_zero() -> None:
    r = parse_device_query(fixture("eagle200/query_invalid_price.xml"), ALL)
    assert r.demand is None and r.summation is None and r.price is None


def test_only_the_kinds_asked_for_are_read() -> None:
    r = parse_device_query(fixture("eagle200/query_units.xml"))
    assert r.demand is not None and r.summation is None and r.price is None


@pytest.mark.parametrize(
    ("name", "error"),
    [("eagle200/query_no_device_root.xml", DeviceBadReply),
     ("eagle200/query_not_joined.xml", DeviceMeterOffline), ("billion_laughs.xml", DeviceBadReply),
     ("external_entity.xml", DeviceBadReply), ("malformed.xml", DeviceBadReply)],
)  # fmt: skip
def test_bad_query_replies_are_classified(name: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_device_query(fixture(name), ALL)


@pytest.mark.parametrize("value", ["", "invalid", "nan", "NaN", "inf", "kW", " "])
def test_number_refuses_what_is_not_a_value(value: str) -> None:
    assert number(value) is None


@pytest.mark.parametrize("name", ["history.xml", "history_no_braces.json"])
def test_history_in_xml_and_braceless_json(name: str) -> None:
    entries = parse.parse_history(fixture(name))
    assert [e.timestamp for e in entries] == [0x1C91EC39, 0x1C91ED65]
    assert [e.delivered_kwh for e in entries] == [pytest.approx(20060.767), pytest.approx(20060.986)]
    record = entries[0].record("00ce69", 1.0, source="history")
    assert record["kind"] == "summation" and record["source"] == "history"
    assert record["device_time"] == 0x1C91EC39 + 946684800


def test_price_sentinels_mean_no_price() -> None:
    assert parse.parse_price(fixture("price_none.xml")).price is None
    assert parse.parse_price(fixture("price_trailing_255.xml")).price is None
    price = parse.parse_price(fixture("price.xml"))
    record = price.record("00ce69", 1.0)
    assert (record["kind"], record["price"], record["currency"], record["tier"]) == (
        "price",
        0.01342,
        "USD",
        1,
    )
    assert record["rate_label"] == "Tier 1"


def test_every_line_has_its_kind_and_source() -> None:
    demand = parse.parse_demand(fixture("demand_manual.xml")).record("00ce69", 1.0, "eagle100-local")
    assert (demand["kind"], demand["source"]) == ("demand", "eagle100-local")
    summation = parse.parse_summation(fixture("summation.xml")).record("00ce69", 1.0)
    assert summation["kind"] == "summation" and summation["delivered_kwh"] == pytest.approx(20060.767)
    assert summation["received_kwh"] == 1.0
