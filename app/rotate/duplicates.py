"""Readings a further part of a device-hour repeats, counted when rotate stores that part.

Two hosts writing the same device-hour (a pinger cut off from Redis kept polling while another
took its devices) leave two files; the second becomes part 2 in the archive. A reading's identity
is its kind and device time (DESIGN "Line kinds"), so the repeats are counted on that, reported in
the device-hour's completeness, and dropped by the carts that merge parts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from app.archive.backend import Archive, gunzip_chunks, read_chunks
from app.archive.layout import DeviceHour


def reading_ids(chunks: Iterable[bytes]) -> Iterator[tuple[str, object]]:
    """(kind, device_time) of every complete line in a stream of `.jl` bytes."""
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()  # after the last newline: empty, or a line still coming (or cut)
        for raw in lines:
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield str(record.get("kind", "demand")), record.get("device_time")


def repeated(archive: Archive, device_hour: DeviceHour, part: int, local: Path, tmp_dir: Path) -> int:
    """How many readings of `local` (stored as `part`) the earlier parts already hold."""
    seen: set[tuple[str, object]] = set()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    for earlier in range(1, part):
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix="parts-", suffix=".jl.gz") as tmp:
            archive.fetch(device_hour.key(earlier), Path(tmp.name))
            seen.update(reading_ids(gunzip_chunks(read_chunks(Path(tmp.name)))))
    return sum(ident in seen for ident in reading_ids(read_chunks(local)))
