"""Readings a further part of a device-hour repeats, counted when rotate stores that part.

Two hosts writing the same device-hour (a pinger cut off from Redis kept polling while another
took its devices) leave two files; the second becomes part 2 in the archive. A reading's identity
is its kind and device time (DESIGN "Line kinds"), so the repeats are counted on that, reported in
the device-hour's completeness, and dropped by the carts that merge parts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from app import lines
from app.archive.backend import Archive, gunzip_chunks, read_chunks
from app.archive.layout import DeviceHour


def reading_ids(data: bytes) -> set[lines.Identity]:
    """The identity of every complete line of `.jl` bytes."""
    return {lines.identity(r) for r in lines.identities(data).records}


def repeated(archive: Archive, device_hour: DeviceHour, part: int, local: Path, tmp_dir: Path) -> int:
    """How many readings of `local` (stored as `part`) the earlier parts already hold."""
    seen: set[lines.Identity] = set()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    for earlier in range(1, part):
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix="parts-", suffix=".jl.gz") as tmp:
            archive.fetch(device_hour.key(earlier), Path(tmp.name))
            seen |= reading_ids(b"".join(gunzip_chunks(read_chunks(Path(tmp.name)))))
    return sum(lines.identity(r) in seen for r in lines.identities(local.read_bytes()).records)
