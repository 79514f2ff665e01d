"""A device's chart points of a closed day from the compacted archive: one read per day (the row
groups whose cloud_id statistics may hold it, five columns) instead of a GET per hourly object.

A day is read from Parquet only when its current compacted version was made from exactly the
device's hourly objects there now (a late part not yet compacted again, or a day not compacted,
falls back to the hourly objects) and this host holds no unshipped file of that device-day.
Points are grouped by the hour whose file each line was in, as the hourly path files them, so
the two paths answer the same points."""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.archive.backend import Archive
from app.archive.layout import ROOT as HOURLY_ROOT
from app.archive.layout import parse_key
from app.hourly import reading_path
from app.hours import Day, hour_numbers_ms
from app.lines import VALUE
from app.research.days import DayManifest, current, may_hold
from app.settings import Settings

Series = tuple[Any, Any]  # numpy arrays of the same length: Unix seconds (int64), values (float64)
_EMPTY: Series = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))


class CompactedPoints:
    """Points of one kind of one device-day, by file hour, from the compacted archive."""

    def __init__(self, settings: Settings, archive: Archive) -> None:
        self.settings, self.archive = settings, archive
        self.days_read = 0  # device-days answered from Parquet (not from hourly objects)
        self._lock = threading.Lock()  # days are read in threads
        warm_up()

    def day(self, cloud_id: str, kind: str, day: Day) -> dict[int, Series] | None:
        """Hour number → its points (every hour of the day, empty where there were none), or None
        when the compacted archive does not hold exactly this device-day."""
        manifest = current(self.archive, day.key)
        if manifest is None or not self._exact(manifest, cloud_id, day):
            return None
        found = []
        for entry in manifest.files:
            if entry["kind"] == kind:
                with self.archive.open_read(entry["key"]) as handle:
                    found.append(_read(pq.ParquetFile(handle), cloud_id, kind))
        with self._lock:
            self.days_read += 1
        by_hour: dict[int, Series] = {hour.number: _EMPTY for hour in day.hours()}
        for hour in {h for points in found for h in points}:  # a household's day in two files at a roll
            parts = [points[hour] for points in found if hour in points]
            by_hour[hour] = parts[0] if len(parts) == 1 else _first_of_each(parts)
        return by_hour

    def _exact(self, manifest: DayManifest, cloud_id: str, day: Day) -> bool:
        """The manifest's sources of the device are the hourly objects there now, and nothing of
        that device-day waits on this host to be shipped."""
        logs = self.settings.logs_dir
        hours = [name for name in (os.listdir(logs) if logs.is_dir() else []) if name.startswith(day.key)]
        for hour in hours:  # the day's hour folders still here (rotate removes them once shipped)
            if reading_path(logs, self.settings.file_prefix, cloud_id, hour).exists():
                return False
        now = set()
        for obj in self.archive.list(f"{HOURLY_ROOT}/{cloud_id}/{day.path}/"):
            parsed = parse_key(obj.key)
            if parsed is not None and parsed[0].cloud_id == cloud_id and parsed[0].hour.startswith(day.key):
                now.add((obj.key, obj.size))
        return now == {(key, size) for key, size in manifest.sources.get(cloud_id, [])}


def _first_of_each(parts: list[Series]) -> Series:
    """Several files' points of one hour as one, in time order, the first of a reading kept."""
    t, v = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    first = np.ones(len(t), dtype=bool)
    first[1:] = t[1:] != t[:-1]
    return t[first], v[first]


def _read(pf: pq.ParquetFile, cloud_id: str, kind: str) -> dict[int, Series]:
    """The device's points in one file, by file hour: the row groups that may hold it, the
    columns a point needs, worked out column by column (no Python object per row but the
    points themselves)."""
    groups = [i for i in range(pf.metadata.num_row_groups) if may_hold(pf.metadata.row_group(i), cloud_id)]
    if not groups:
        return {}
    columns = ["cloud_id", "time", VALUE[kind], "polled_at", "source"]
    table = pf.read_row_groups(groups, columns=columns)
    table = table.filter(
        pc.and_(
            pc.equal(table.column("cloud_id"), pa.scalar(cloud_id, pa.string())),
            pc.is_valid(table.column(VALUE[kind])),
        )
    )
    t = pc.cast(table.column("time"), pa.int64())  # Unix ms; null: sent without a time
    p = pc.cast(table.column("polled_at"), pa.int64())
    is_history: Any = pc.equal(table.column("source"), pa.scalar("history", pa.string()))
    history: Any = pc.fill_null(is_history, pa.scalar(False))
    when: Any = pc.coalesce(t, p)  # a reading sent without a time: when it reached us
    # the hour whose file a line was in: refilled history by its own time, the rest by arrival
    filed = pc.if_else(pc.and_(pc.is_valid(t), pc.or_(history, pc.is_null(p))), t, p)
    keep = pc.and_(pc.is_valid(when), pc.greater(when, pa.scalar(0, pa.int64())))
    seconds = np.asarray(pc.filter(when, keep)) // 1000
    hours = hour_numbers_ms(np.asarray(pc.filter(filed, keep)))
    values = np.asarray(pc.filter(table.column(VALUE[kind]), keep), dtype=np.float64)
    order = np.lexsort((seconds, hours))  # stable: the first line of a reading comes first
    seconds, hours, values = seconds[order], hours[order], values[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (hours[1:] != hours[:-1]) | (seconds[1:] != seconds[:-1])
    seconds, hours, values = seconds[first], hours[first], values[first]
    cuts = [0, *(np.flatnonzero(np.diff(hours)) + 1).tolist(), len(hours)]
    return {int(hours[a]): (seconds[a:b], values[a:b]) for a, b in itertools.pairwise(cuts) if b > a}


def warm_up() -> None:
    """pyarrow's compute functions load pandas on their first use (about 0.3 s): paid when the
    server starts, not by the first chart."""
    pc.is_valid(pa.array([1]))
