"""Find local hourly files whose hour is closed: hour end plus a grace period has passed."""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from pathlib import Path

from app.archive.layout import HOUR_RE, DeviceHour, parse_local
from app.errors import ValidationError


@dataclass(frozen=True)
class LocalFile:
    path: Path
    device_hour: DeviceHour


def hour_start(hour: str) -> int:
    """Unix seconds at the start of `YYYY-MM-DD-HH` (UTC); ValidationError when it is not one."""
    if not HOUR_RE.match(hour):
        raise ValidationError(f"an hour looks like 2026-11-24-03 (YYYY-MM-DD-HH, UTC), got {hour!r}.")
    try:
        return calendar.timegm(time.strptime(hour, "%Y-%m-%d-%H"))
    except ValueError:
        raise ValidationError(f"{hour!r} is not a real hour (YYYY-MM-DD-HH, UTC).") from None


def is_closed(hour: str, now: float, grace_s: float) -> bool:
    return hour_start(hour) + 3600 + grace_s <= now


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
