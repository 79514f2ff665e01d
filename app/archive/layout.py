"""Archive keys, spelled in one place.

    rainforest-logs/<cloud_id>/YYYY/MM/DD/<prefix>-<cloud_id>-YYYY-MM-DD-HH.jl.gz         part 1
    rainforest-logs/<cloud_id>/YYYY/MM/DD/<prefix>-<cloud_id>-YYYY-MM-DD-HH.part2.jl.gz   part 2, ...

An archived object is never overwritten: a second file for the same device-hour (a late write,
a pinger restarted on another host) becomes the next part beside it, and readers read them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from app.hours import HOUR_PATTERN, Day, Hour

ROOT = "rainforest-logs"
_LOCAL_RE = re.compile(rf"^(?P<prefix>.+)-(?P<cloud_id>[0-9a-f]{{6}})-(?P<hour>{HOUR_PATTERN})\.jl$")
_PART_RE = re.compile(
    rf"^(?P<prefix>.+)-(?P<cloud_id>[0-9a-f]{{6}})-(?P<hour>{HOUR_PATTERN})(?:\.part(?P<part>[1-9]\d*))?\.jl\.gz$"
)


@dataclass(frozen=True, order=True)
class DeviceHour:
    """One device's readings for one UTC hour: the unit rotate ships and carts read."""

    hour: str  # YYYY-MM-DD-HH
    cloud_id: str
    prefix: str

    def day_folder(self) -> str:
        """`rainforest-logs/<cloud_id>/YYYY/MM/DD`."""
        return f"{ROOT}/{self.cloud_id}/{self.day.path}"

    @property
    def day(self) -> Day:
        return Hour.parse(self.hour).day

    def key(self, part: int = 1) -> str:
        """The archive key of this device-hour's `part` (1 is the plain name)."""
        suffix = "" if part == 1 else f".part{part}"
        return f"{self.day_folder()}/{self.prefix}-{self.cloud_id}-{self.hour}{suffix}.jl.gz"

    def parts_prefix(self) -> str:
        """A key prefix every part of this device-hour starts with (and nothing else)."""
        return f"{self.day_folder()}/{self.prefix}-{self.cloud_id}-{self.hour}."


def parse_local(path: Path) -> DeviceHour | None:
    """The device-hour of a local `.jl` file, or None when the name is not ours."""
    m = _LOCAL_RE.match(path.name)
    if m is None or m["hour"] != path.parent.name:
        return None
    return DeviceHour(m["hour"], m["cloud_id"], m["prefix"])


def parse_key(key: str) -> tuple[DeviceHour, int] | None:
    """(device-hour, part number) of an archive key, or None when it is not an hourly part."""
    m = _PART_RE.match(key.rsplit("/", 1)[-1])
    if m is None:
        return None
    return DeviceHour(m["hour"], m["cloud_id"], m["prefix"]), int(m["part"] or 1)
