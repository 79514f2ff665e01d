"""The uploaders' three dialects on recorded bodies, and hostile ones: pure, no network."""

from __future__ import annotations

import pytest

from app.eagle.readings import MeterDemand, MeterPrice, MeterSummation
from app.push.dialects import MAX_REPORTS, BadUpload, flat_upload, parse_upload, xml_upload
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


FLAT_SHAPES = [
    b'<rainforest macId="0xf0ad4e00ce69" timestamp="1355292588s">'
    b"<InstantaneousDemand><TimeStamp>0x30c67fc0</TimeStamp><Demand>0x0003b0</Demand>"
    b"<Multiplier>0x1</Multiplier><Divisor>0x3e8</Divisor></InstantaneousDemand></rainforest>",
    b'<?xml version="1.0"?>\n<rainforest macId="0x1">\n <NetworkInfo>\n  <Status> Connected </Status>'
    b"\n  <LinkStrength>0x64</LinkStrength>\n </NetworkInfo>\n</rainforest>\n",
    b"<InstantaneousDemand><TimeStamp>0x30c67fc0</TimeStamp><Demand>0x12</Demand></InstantaneousDemand>",
    b'<Rainforest a="1"><PriceCluster><TimeStamp>0x30c67fc0</TimeStamp><Price>0x34</Price>'
    b"<TrailingDigits>0x2</TrailingDigits><Currency>0x348</Currency></PriceCluster></Rainforest>",
    b"<rainforest><CurrentSummation><TimeStamp>0x30c67fc0</TimeStamp><SummationDelivered>0x9</SummationDelivered>"
    b"<Multiplier>0x1</Multiplier><Divisor>0x3e8</Divisor><Demand>0xzz</Demand></CurrentSummation></rainforest>",
    b"<rainforest><DeviceInfo><Name>caf\xc3\xa9 > x</Name><Empty></Empty></DeviceInfo></rainforest>",
]
TRICKY = [
    b"\r",
    b"\x01",
    b"]]>",
    b"\xff",
    b"&amp;",
    b"<!-- c -->",
    b"<![CDATA[x]]>",
    b'"',
    b"<",
    b">",
    b" ",
    b"\n",
    b"\xef\xbb\xbf",
    b"<X>",
    b"</X>",
    b'a="1" a="2"',
    b"\xc3\xa9",
    b"\t",
    b"\x0c",
]


def _outcome(text: bytes) -> object:
    """What the full parser makes of a body: an Upload, or its refusal."""
    try:
        return xml_upload(text, NOW)
    except BadUpload as exc:
        return f"refused: {exc}"


def test_the_usual_rfa_body_read_without_a_tree_gives_what_the_parser_gives() -> None:
    """The fast path for one flat fragment takes the usual bodies and gives exactly the full
    parser's Upload; any body it would read otherwise (seeded mutations with the characters XML
    treats specially) it leaves to the parser."""
    import random

    taken = [b for b in [*FLAT_SHAPES, *(body(n) for n in ("eagle100_demand.xml", "eagle100_price.xml"))]
             if flat_upload(b.strip(), NOW) is not None]  # fmt: skip
    assert len(taken) == len(FLAT_SHAPES) + 2  # every usual shape takes the fast path
    assert flat_upload(body("eagle100_history.xml").strip(), NOW) is None  # HistoryData: a tree
    demand = FLAT_SHAPES[0]
    for other in (
        demand.replace(b'macId="', b'macId="1" macId="'),
        demand.replace(b"0x3e8", b"0x3\r\ne8"),
        demand.replace(b"0x3e8", b"&#x33;e8"),
        demand.replace(b"0x3e8", b"<![CDATA[0x3e8]]>"),
        demand.replace(b"rainforest", b"gateway"),  # another envelope: its fragment is nested, not read
        b"<XmlSimple><Timestamp>1539632334</Timestamp></XmlSimple>",  # read as XmlSimple's report
    ):
        assert flat_upload(other, NOW) is None  # read by the parser: it refuses or reads otherwise
    rng = random.Random(25)
    recorded = (
        "eagle100_demand.xml",
        "eagle200_summation.xml",
        "eagle100_device_info.xml",
        "eagle200_xml_simple.xml",
    )
    corpus = [b.strip() for b in FLAT_SHAPES] + [body(n).strip() for n in recorded]
    compared = refused_by_fast = 0
    for n in range(3000):
        text = rng.choice(corpus)
        for _ in range(rng.choice((0, 1, 1, 2))):
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(TRICKY) + text[at:]
        text = text.strip()
        fast = flat_upload(text, NOW)
        if fast is None:
            refused_by_fast += 1
            continue
        compared += 1
        assert fast == _outcome(text), f"case {n}: {text!r}"
    assert compared > 500 and refused_by_fast > 500  # both sides of the fast path were exercised
