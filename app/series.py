"""A device's readings over a time range, for charts: from the hourly files and the archive.

An hour is read from its local file (still there until rotate ships it) and from every part
of it in the archive; lines of one kind are deduplicated on device time. A closed day that the
compacted archive holds exactly (`app.research.points`) is read from its Parquet instead, one
read per day. Closed hours are kept
in a small in-process cache, so a month's chart reads each hour once. Series are downsampled to
min/max/mean per bucket, and a gap stays a gap: an empty bucket is null, never zero.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app import lines
from app.archive.backend import Archive, gunzip_object
from app.archive.layout import DeviceHour
from app.hourly import reading_path
from app.hours import Hour
from app.research.points import CompactedPoints, Series
from app.settings import Settings

VALUE = lines.VALUE
CACHE_HOURS = 20_000  # device-hours of points kept (about 450 points each)
DAY_THREADS = 4  # compacted days read at once (pyarrow decodes without the GIL)


@dataclass
class HourCache:
    entries: OrderedDict[tuple[str, int, str], Series] = field(default_factory=OrderedDict)

    def get(self, key: tuple[str, int, str]) -> Series | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: tuple[str, int, str], points: Series) -> None:
        self.entries[key] = points
        while len(self.entries) > CACHE_HOURS:
            self.entries.popitem(last=False)


class SeriesSource:
    """Reads (device_time, value) points of one kind; blocking (run it in a thread)."""

    def __init__(self, settings: Settings, archive: Archive | None) -> None:
        self.settings = settings
        self.archive = archive
        self.cache = HourCache()
        self.compacted = CompactedPoints(settings, archive) if archive is not None else None

    def points(self, cloud_id: str, kind: str, start: float, end: float) -> list[tuple[int, float]]:
        """The points as (time, value) pairs, in time order."""
        t, v = self.series(cloud_id, kind, start, end)
        return list(zip(t.tolist(), v.tolist(), strict=True))

    def series(self, cloud_id: str, kind: str, start: float, end: float) -> Series:
        """The points in [start, end) as arrays of Unix seconds and values, in time order."""
        times: list[Any] = []
        values: list[Any] = []
        now = time.time()
        first, last = Hour.at(start).number, Hour.at(end).number + 1
        self._from_compacted(cloud_id, kind, first, last, now)
        # a line is filed under the hour it arrived; look one hour past the range for late ones
        for hour in range(first, last + 1):
            closed = Hour(hour).end + self.settings.rotate_grace_s < now
            key = (cloud_id, hour, kind)
            found = self.cache.get(key) if closed else None
            if found is None:
                found = self._hour(cloud_id, hour, kind)
                if closed:
                    self.cache.put(key, found)
            times.append(found[0])
            values.append(found[1])
        t, v = np.concatenate(times), np.concatenate(values)
        if len(t) > 1 and not bool(np.all(t[1:] > t[:-1])):
            # a reading filed twice (a late part) or out of order: the last one kept, as dict() would
            order = np.argsort(t, kind="stable")
            t, v = t[order], v[order]
            last_of_run = np.ones(len(t), dtype=bool)
            last_of_run[:-1] = t[1:] != t[:-1]
            t, v = t[last_of_run], v[last_of_run]
        inside = (t >= start) & (t < end)
        return t[inside], v[inside]

    def _from_compacted(self, cloud_id: str, kind: str, first: int, last: int, now: float) -> None:
        """Put the closed days of the range that the compacted archive holds exactly in the cache,
        one read per day (several days at once), so their hours are not read one by one."""
        if self.compacted is None:
            return
        days = sorted({Hour(h).day for h in range(first, last + 1)})
        wanted = [d for d in days if d.end + self.settings.rotate_grace_s < now and any(
            self.cache.get((cloud_id, h.number, kind)) is None for h in d.hours())]  # fmt: skip
        if not wanted:
            return
        reader = self.compacted
        with ThreadPoolExecutor(DAY_THREADS) as pool:
            for found in pool.map(lambda d: reader.day(cloud_id, kind, d), wanted):
                for hour, points in (found or {}).items():
                    self.cache.put((cloud_id, hour, kind), points)

    def _hour(self, cloud_id: str, hour: int, kind: str) -> Series:
        label = Hour(hour).key
        blobs: list[bytes] = []
        path = reading_path(self.settings.logs_dir, self.settings.file_prefix, cloud_id, label)
        if path.exists():
            blobs.append(path.read_bytes())
        if self.archive is not None:
            blobs += self._archived(DeviceHour(label, cloud_id, self.settings.file_prefix))
        points: dict[int, float] = {}
        for data in blobs:  # the first line of a reading kept, whichever part it is in
            for t, v in lines.points(data, kind).items():
                points.setdefault(t, v)
        return as_series(sorted(points.items()))

    def _archived(self, dh: DeviceHour) -> list[bytes]:
        """The content of every part of a device-hour in the archive."""
        assert self.archive is not None
        blobs: list[bytes] = []
        for obj in self.archive.list(dh.parts_prefix()):
            with tempfile.TemporaryDirectory(prefix="rf-series-") as tmp:
                dest = Path(tmp) / "part.jl.gz"
                self.archive.fetch(obj.key, dest)
                blobs.append(gunzip_object(obj.key, dest.read_bytes()))
        return blobs


def within(series: Series, window: tuple[float, float] | None) -> Series:
    """The points in [window): a household's consent window (None: no point at all)."""
    t, v = series
    if window is None:
        return t[:0], v[:0]
    inside = (t >= window[0]) & (t < window[1])
    return t[inside], v[inside]


def as_series(points: Sequence[tuple[int, float]]) -> Series:
    """(time, value) pairs as the two arrays of a Series."""
    t = np.fromiter((p[0] for p in points), dtype=np.int64, count=len(points))
    v = np.fromiter((p[1] for p in points), dtype=np.float64, count=len(points))
    return t, v


def downsample(
    points: Series | Sequence[tuple[int, float]], start: float, end: float, bucket_s: int
) -> dict[str, list[Any]]:
    """min/max/mean per bucket of `bucket_s`; an empty bucket is null in all three (a gap)."""
    count = max(1, int((end - start + bucket_s - 1) // bucket_s))
    t, v = points if isinstance(points, tuple) else as_series(points)
    i = np.floor_divide(t - start, bucket_s).astype(np.int64)
    inside = (i >= 0) & (i < count)
    i, v = i[inside], v[inside]
    n = np.bincount(i, minlength=count)
    sums = np.bincount(i, weights=v, minlength=count)
    lows = np.full(count, np.inf)
    highs = np.full(count, -np.inf)
    np.minimum.at(lows, i, v)
    np.maximum.at(highs, i, v)
    empty = n == 0
    means = [None if k == 0 else round(s / k, 6) for s, k in zip(sums.tolist(), n.tolist(), strict=True)]
    return {
        "t": [int(start) + k * bucket_s for k in range(count)],
        "min": _or_null(lows, empty),
        "max": _or_null(highs, empty),
        "mean": means,
    }


def _or_null(values: Any, empty: Any) -> list[float | None]:
    return [None if gap else x for x, gap in zip(values.tolist(), empty.tolist(), strict=True)]


def with_gaps(points: list[tuple[int, float]], min_gap_s: float) -> dict[str, list[Any]]:
    """Full resolution; where two readings are further apart than three times the series' usual
    spacing (and at least `min_gap_s`) a null is put between them, so a chart draws the gap
    instead of a line across it."""
    spacings = sorted(b[0] - a[0] for a, b in itertools.pairwise(points))
    usual = spacings[len(spacings) // 2] if spacings else 0
    gap_s = max(min_gap_s, 3 * usual)
    ts: list[int] = []
    vs: list[float | None] = []
    previous: int | None = None
    for t, v in points:
        if previous is not None and t - previous > gap_s:
            ts.append(previous + 1)
            vs.append(None)
        ts.append(t)
        vs.append(v)
        previous = t
    return {"t": ts, "value": vs}
