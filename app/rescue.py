"""Readings a pinger saved to a rescue file (its disk failed until it stopped) put back where they
belong: each line into its hourly file, once.

A line's hour is the hour the pinger would have filed it under: the hour of `polled_at` (when it
reached us), except for a line refilled from a gateway's history (`source: history`), which is
filed under the hour of its own `device_time`. A reading already in its file (same kind and
device time) is not written again, so running it twice changes nothing; rotate ships the lines
with the rest of their hour, or as a further part of an hour already shipped.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from app.hourly import HourlyWriter, hour_key, read_lines, reading_path
from app.settings import Settings


def line_hour_at(record: dict[str, object]) -> float:
    """The instant whose UTC hour files this line (see the module's docstring)."""
    at = record["device_time"] if record.get("source") == "history" else record["polled_at"]
    return float(at)  # type: ignore[arg-type]


def put_back(settings: Settings, rescue: Path) -> Counter[str]:
    """Append a rescue file's lines to their hourly files; counts written, already, unreadable."""
    counts: Counter[str] = Counter()
    result = read_lines(rescue)
    counts["unreadable"] = result.partial
    known: dict[Path, set[tuple[str, object]]] = {}
    writer = HourlyWriter(settings.logs_dir, settings.file_prefix, 64)
    try:
        for record in result.records:
            try:
                cid, at = str(record["cloud_id"]), line_hour_at(record)
            except (KeyError, TypeError, ValueError):
                counts["unreadable"] += 1
                continue
            path = reading_path(settings.logs_dir, settings.file_prefix, cid, hour_key(at))
            if path not in known:
                present = read_lines(path).records if path.exists() else []
                known[path] = {(str(r.get("kind", "demand")), r.get("device_time")) for r in present}
            identity = (str(record.get("kind", "demand")), record.get("device_time"))
            if identity in known[path]:
                counts["already"] += 1
                continue
            writer.append(cid, at, orjson.dumps(record) + b"\n")
            known[path].add(identity)
            counts["written"] += 1
    finally:
        HourlyWriter.sync(writer.close())
    return counts
