"""When each device is polled: a stable phase per device and drift-free cycle starts."""

from __future__ import annotations

import math
import zlib


def phase_fraction(cloud_id: str) -> float:
    """Where in every interval a device is polled, in [0, 1): stable across restarts and hosts."""
    return zlib.crc32(cloud_id.encode()) / 4294967296.0


def next_cycle_start(now: float, interval_s: float) -> float:
    """The first cycle boundary at or after `now`; cycles start at multiples of the interval."""
    return math.ceil(now / interval_s) * interval_s


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]
