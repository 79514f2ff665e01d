"""Place one packed device-hour in the archive without ever replacing anything, and confirm it."""

from __future__ import annotations

from dataclasses import dataclass

from app.archive.backend import Archive, Upload
from app.archive.layout import DeviceHour
from app.errors import ArchiveError

MAX_PARTS = 1000


@dataclass(frozen=True)
class Placed:
    """Where a device-hour's content now lives; `stored` is False when it was there already."""

    key: str
    part: int
    stored: bool


def place(archive: Archive, device_hour: DeviceHour, upload: Upload, readback: bool = False) -> Placed:
    """Store `upload` as the first free part of its device-hour, unless a part already holds it.

    Part 1 is tried first (one request in the usual case). The archive's reply confirms the
    stored object when it carries the archive's own digest of it (S3's ETag or checksum);
    otherwise, or with `readback`, the object is read back before anyone deletes anything.

    When a key is taken, its content is compared: identical means an earlier pass stored it and
    died before deleting the local file, so nothing is stored twice; different means this is a
    further part.
    """
    for part in range(1, MAX_PARTS + 1):
        key = device_hour.key(part)
        receipt = archive.put_new(key, upload)
        if receipt is not None:
            if readback or not receipt.proves(upload):
                confirm(archive, key, upload)
            return Placed(key, part, stored=True)
        if archive.source_sha256(key) == upload.source_sha256:
            return Placed(key, part, stored=False)
    raise ArchiveError(
        f"{device_hour.key()} already has {MAX_PARTS} parts; refusing to add more.", kind="error"
    )


def confirm(archive: Archive, key: str, upload: Upload) -> None:
    """Read back what the archive says it stored; anything but our bytes is an integrity error."""
    stored = archive.stat(key)
    if stored is None:
        raise ArchiveError(f"{key} is missing right after it was stored.", kind="integrity")
    if stored.size != upload.size or (stored.sha256 is not None and stored.sha256 != upload.sha256):
        raise ArchiveError(
            f"{key} does not match what was sent ({stored.size} bytes, sha256 {stored.sha256}; "
            f"sent {upload.size} bytes, sha256 {upload.sha256}).",
            kind="integrity",
        )
