"""Find local hourly files whose hour is closed: hour end plus a grace period has passed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.archive.layout import DeviceHour, parse_local
from app.hours import HOUR_RE, Hour


@dataclass(frozen=True)
class LocalFile:
    path: Path
    device_hour: DeviceHour


def is_closed(hour: str, now: float, grace_s: float) -> bool:
    return Hour.parse(hour).end + grace_s <= now


def closed_files(logs_dir: Path, now: float, grace_s: float, only_hour: str | None = None) -> list[LocalFile]:
    """Every `.jl` file of a closed hour, oldest hour first; other files are left alone."""
    if not logs_dir.is_dir():
        return []
    found: list[LocalFile] = []
    for folder in sorted(logs_dir.iterdir()):
        if not folder.is_dir() or not HOUR_RE.match(folder.name):
            continue  # process log folders (pinger/, server/ ...) live here too
        if only_hour is not None and folder.name != only_hour:
            continue
        if not is_closed(folder.name, now, grace_s):
            continue
        for path in sorted(folder.iterdir()):
            device_hour = parse_local(path)
            if device_hour is not None and path.is_file():
                found.append(LocalFile(path, device_hour))
    return found
