"""What a cart holds: every archived part of each device-hour in range, plus hours not yet rotated."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.archive.backend import Archive
from app.archive.layout import DeviceHour, parse_key
from app.carts.model import CartRequest
from app.hourly import reading_path
from app.hours import Hour, hour_key, hours_between


@dataclass(frozen=True)
class Part:
    """One file to stage: an archived object (`key`) or a local hourly file (`local`)."""

    device_hour: DeviceHour
    part: int
    name: str  # its path inside a jl cart: <cloud_id>/YYYY/MM/DD/<file>.jl
    key: str | None = None
    local: Path | None = None
    stored_size: int = 0  # the archive object's bytes, or the local file's

    @property
    def source(self) -> str:
        if self.key is not None:
            return self.key
        assert self.local is not None  # a part is an archived object or a local file
        # the hour folder and file name, never the server's own path (manifests are downloaded)
        return f"local:{self.local.parent.name}/{self.local.name}"


def hours_in(request: CartRequest, now: float) -> list[int]:
    """Start of every UTC hour overlapping [start, end), up to the current hour."""
    return [h.start for h in hours_between(request.start, min(request.end, now + 1))]


def member_name(device_hour: DeviceHour, part: int) -> str:
    suffix = "" if part == 1 else f".part{part}"
    base = f"{device_hour.prefix}-{device_hour.cloud_id}-{device_hour.hour}{suffix}.jl"
    y, m, d, _ = device_hour.hour.split("-")
    return f"{device_hour.cloud_id}/{y}/{m}/{d}/{base}"


def plan(
    archive: Archive,
    logs_dir: Path,
    prefix: str,
    request: CartRequest,
    devices: Iterable[str],
    now: float | None = None,
) -> list[Part]:
    """Every part in range, ordered by device, hour and part. One archive listing per device-day."""
    now = time.time() if now is None else now
    hours = hours_in(request, now)
    wanted = {hour_key(h) for h in hours}
    days = sorted({Hour.at(h).day.key for h in hours})
    parts: list[Part] = []
    for cloud_id in devices:
        archived: dict[str, list[Part]] = {}
        for day in days:
            y, m, d = day.split("-")
            for obj in archive.list(f"rainforest-logs/{cloud_id}/{y}/{m}/{d}/"):
                parsed = parse_key(obj.key)
                if parsed is None or parsed[0].hour not in wanted or parsed[0].cloud_id != cloud_id:
                    continue
                dh, number = parsed
                archived.setdefault(dh.hour, []).append(
                    Part(dh, number, member_name(dh, number), key=obj.key, stored_size=obj.size)
                )
        for hour in sorted(wanted):
            found = sorted(archived.get(hour, []), key=lambda p: p.part)
            parts.extend(found)
            local = reading_path(logs_dir, prefix, cloud_id, hour)
            try:
                size = local.stat().st_size
            except FileNotFoundError:
                continue
            if size:
                dh = DeviceHour(hour, cloud_id, prefix)
                number = (found[-1].part + 1) if found else 1  # what rotate will name it
                parts.append(Part(dh, number, member_name(dh, number), local=local, stored_size=size))
    return parts
