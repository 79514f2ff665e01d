"""Series for charts: every complete line read, buckets with gaps as nulls, gaps kept in full resolution."""

from __future__ import annotations

import random

from app.series import as_series, downsample, with_gaps, within


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


def _reference(
    points: list[tuple[int, float]], start: float, end: float, bucket_s: int
) -> dict[str, list[object]]:
    """Bucket by bucket, in plain Python: what `downsample` (vectorised) must answer exactly."""
    count = max(1, int((end - start + bucket_s - 1) // bucket_s))
    sums, ns = [0.0] * count, [0] * count
    lows: list[float | None] = [None] * count
    highs: list[float | None] = [None] * count
    for t, v in points:
        i = int((t - start) // bucket_s)
        if 0 <= i < count:
            sums[i] += v
            ns[i] += 1
            low, high = lows[i], highs[i]
            lows[i] = v if low is None or v < low else low
            highs[i] = v if high is None or v > high else high
    return {"t": [int(start) + i * bucket_s for i in range(count)], "min": lows, "max": highs,
            "mean": [round(sums[i] / ns[i], 6) if ns[i] else None for i in range(count)]}  # fmt: skip


def test_downsample_answers_exactly_what_bucket_by_bucket_arithmetic_does() -> None:
    rng = random.Random(1)
    for _ in range(300):
        start = rng.uniform(1.7e9, 1.8e9)
        end, bucket = start + rng.randint(100, 3 * 86400), rng.choice([10, 60, 77, 300, 3600])
        found = {
            int(rng.uniform(start - 500, end + 500)): round(rng.uniform(-5, 5), 3)
            for _ in range(rng.randint(0, 3000))
        }
        points = sorted(found.items())
        assert downsample(points, start, end, bucket) == _reference(points, start, end, bucket)


def test_within_keeps_the_points_of_a_window_start_included_end_not_and_none_without_one() -> None:
    series = as_series([(t, float(t)) for t in range(0, 100, 10)])
    t, v = within(series, (20.0, 50.0))
    assert t.tolist() == [20, 30, 40] and v.tolist() == [20.0, 30.0, 40.0]
    assert within(series, None)[0].tolist() == []
