"""Readings a further part of a device-hour repeats, counted when rotate stores that part.

Two hosts writing the same device-hour (a pinger cut off from Redis kept polling while another
took its devices) leave two files; the second becomes part 2 in the archive. A reading's identity
is its kind and device time (DESIGN "Line kinds"), so the repeats are counted on that, reported in
the device-hour's completeness, and dropped by the carts that merge parts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from app.archive.backend import Archive, gunzip_chunks, read_chunks
from app.archive.layout import DeviceHour
from app.hourly import parse_lines


def reading_ids(data: bytes) -> set[tuple[str, object]]:
    """(kind, device_time) of every complete line of `.jl` bytes."""
    return {(str(r.get("kind", "demand")), r.get("device_time")) for r in parse_lines(data).records}


def repeated(archive: Archive, device_hour: DeviceHour, part: int, local: Path, tmp_dir: Path) -> int:
    """How many readings of `local` (stored as `part`) the earlier parts already hold."""
    seen: set[tuple[str, object]] = set()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    for earlier in range(1, part):
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix="parts-", suffix=".jl.gz") as tmp:
            archive.fetch(device_hour.key(earlier), Path(tmp.name))
            seen |= reading_ids(b"".join(gunzip_chunks(read_chunks(Path(tmp.name)))))
    lines = parse_lines(local.read_bytes()).records
    return sum((str(r.get("kind", "demand")), r.get("device_time")) in seen for r in lines)
