"""The archived hourly objects of a household, every part and every version, removed."""

from __future__ import annotations

from typing import Any

from app.archive.backend import Archive
from app.archive.layout import ROOT


def household_prefix(cloud_id: str) -> str:
    return f"{ROOT}/{cloud_id}/"


def erase_hourly(archive: Archive, cloud_id: str) -> dict[str, Any]:
    """Erase every object under the household's folder (its hourly objects and their further
    parts), with the old versions a versioned bucket keeps; what was removed, and what was not."""
    prefix = household_prefix(cloud_id)
    objects = versions = size = kept = 0
    for key in sorted({o.key for o in archive.list(prefix)} | set(archive.old_versions(prefix))):
        gone = archive.erase(key)
        objects += 1
        versions, size, kept = versions + gone.versions, size + gone.bytes, kept + gone.kept
    return {"objects": objects, "versions": versions, "bytes": size, "versions_kept": kept}


def hourly_left(archive: Archive, cloud_id: str) -> int:
    """Objects (current or older versions) still under the household's folder."""
    prefix = household_prefix(cloud_id)
    return len({o.key for o in archive.list(prefix)} | set(archive.old_versions(prefix)))
