"""Series for charts: every complete line read, buckets with gaps as nulls, gaps kept in full resolution."""

from __future__ import annotations

from app.series import downsample, with_gaps


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
