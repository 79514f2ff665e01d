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

from app import lines
from app.hourly import HourlyWriter, reading_path
from app.hours import hour_key
from app.settings import Settings


def line_hour_at(record: dict[str, object]) -> float:
    """The instant whose UTC hour files this line (see the module's docstring)."""
    at = record["device_time"] if record.get("source") == "history" else record["polled_at"]
    return float(at)  # type: ignore[arg-type]


def put_back(settings: Settings, rescue: Path) -> Counter[str]:
    """Append a rescue file's lines to their hourly files; counts written, already, unreadable."""
    counts: Counter[str] = Counter()
    result = lines.read(rescue)
    counts["unreadable"] = result.partial
    known: dict[Path, set[lines.Identity]] = {}
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
                present = lines.read(path).records if path.exists() else []
                known[path] = {lines.identity(r) for r in present}
            identity = lines.identity(record)
            if identity in known[path]:
                counts["already"] += 1
                continue
            writer.append(cid, at, lines.encode(record))
            known[path].add(identity)
            counts["written"] += 1
    finally:
        HourlyWriter.sync(writer.close())
    return counts
