"""Series for charts: every complete line read, buckets with gaps as nulls, gaps kept in full resolution."""

from __future__ import annotations

import orjson

from app.series import downsample, parse_lines, with_gaps


def line(t: int) -> bytes:
    return orjson.dumps({"kind": "demand", "device_time": t, "demand_kw": t / 10}) + b"\n"


def test_parse_lines_skips_a_partial_tail_and_survives_a_corrupt_line() -> None:
    assert [r["device_time"] for r in parse_lines(line(1) + line(2) + b'{"kind": "dem')] == [1, 2]
    assert [r["device_time"] for r in parse_lines(line(1) + b"garbage\n" + line(3))] == [1, 3]
    assert parse_lines(b"") == [] and parse_lines(b'{"partial') == []


def test_downsample_keeps_min_max_mean_and_an_empty_bucket_is_a_gap() -> None:
    points = [(0, 1.0), (10, 3.0), (50, 5.0)]
    out = downsample(points, 0, 60, 20)
    assert out["t"] == [0, 20, 40]
    assert (out["min"], out["max"], out["mean"]) == ([1.0, None, 5.0], [3.0, None, 5.0], [2.0, None, 5.0])


def test_full_resolution_puts_a_null_where_readings_stop_for_a_while() -> None:
    points = [(t, 1.0) for t in range(0, 80, 8)] + [(t, 2.0) for t in range(400, 480, 8)]
    out = with_gaps(points, min_gap_s=12)
    assert out["value"].count(None) == 1 and out["t"][out["value"].index(None)] == 73
    assert with_gaps(points[:5], 12)["value"] == [1.0] * 5


def test_the_quick_reader_agrees_with_the_full_one_or_steps_aside() -> None:
    from app.eagle.parse import parse_demand
    from app.series import quick_points
    from tests.conftest import FIXTURES

    demand = parse_demand((FIXTURES / "demand_manual.xml").read_bytes())
    lines = b"".join(
        orjson.dumps(demand.record("00ce69", float(t), "eagle100-cloud") | {"device_time": t}) + b"\n"
        for t in (10, 20, 30)
    )
    assert quick_points(lines, "demand", "demand_kw") == [(10, 0.944), (20, 0.944), (30, 0.944)]
    old = b'{"cloud_id":"00ce69","polled_at":1.0,"device_time":5,"demand_kw":1.5}\n'  # before kinds
    assert quick_points(old + lines, "demand", "demand_kw") is None
    reordered = b'{"kind":"demand","device_time":7,"source":"push","demand_kw":2.0}\n'
    assert quick_points(lines + reordered, "demand", "demand_kw") is None
    price_null = b'{"device_time":9,"kind":"price","source":"push","price":null}\n'
    assert quick_points(price_null, "price", "price") is None
    assert quick_points(lines + b'{"partial', "demand", "demand_kw") == [
        (10, 0.944),
        (20, 0.944),
        (30, 0.944),
    ]
