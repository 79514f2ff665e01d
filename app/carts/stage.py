"""Stage a cart's parts under DATA_DIR/carts/<id>/staging/, each verified.

An archived part is fetched, its bytes checked against the archive's SHA-256 of the object,
then decompressed and checked against the SHA-256 of the original `.jl` recorded when rotate
stored it. A local (not yet rotated) hour is copied up to its last complete line. Each staged
file is recorded in `.staged.jl`, so a rebuild (`carts fixit`) reuses files that still verify.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from app import lines
from app.archive.backend import Archive, file_sha256, gunzip_chunks, read_chunks
from app.carts.plan import Part
from app.errors import ArchiveError

RECORD = ".staged.jl"


class HashMismatch(Exception):
    """A fetched object does not match the archive's checksum for it."""


class Vanished(Exception):
    """A local hour disappeared while staging: rotate shipped it meanwhile."""


@dataclass(frozen=True)
class Staged:
    name: str  # path inside the cart (and under the staging folder)
    size: int
    sha256: str
    source: str  # archive key, or local:<path>
    source_sha256: str = ""  # the archive's record of the .jl content ("" for local files)
    lines: int = 0
    partial: int = 0  # a trailing partial line (kept in jl carts, skipped in CSV)


def load_record(stage_dir: Path) -> dict[str, Staged]:
    path = stage_dir / RECORD
    if not path.exists():
        return {}
    found: dict[str, Staged] = {}
    for raw in path.read_bytes().splitlines():
        try:
            item = Staged(**orjson.loads(raw))
        except (orjson.JSONDecodeError, TypeError):
            continue  # a torn last line from a crash: that file is staged again
        found[item.name] = item
    return found


def append_record(stage_dir: Path, staged: Staged) -> None:
    with (stage_dir / RECORD).open("ab") as f:
        f.write(orjson.dumps(asdict(staged)) + b"\n")


def stage_part(
    archive: Archive, part: Part, stage_dir: Path, previous: dict[str, Staged]
) -> tuple[Staged, bool]:
    """Stage one part; returns it and whether an earlier attempt's copy was reused."""
    dest = stage_dir / part.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if part.key is None:
        return _copy_local(part, dest), False
    stored = archive.stat(part.key)
    if stored is None:
        raise ArchiveError(
            f"{part.key} disappeared from {archive.url} while the cart was staged.", kind="error"
        )
    earlier = previous.get(part.name)
    if (
        earlier is not None
        and earlier.source == part.key
        and earlier.source_sha256 == (stored.source_sha256 or earlier.source_sha256)
        and dest.exists()
        and file_sha256(dest) == earlier.sha256
    ):
        return earlier, True
    fetched = dest.with_name(dest.name + ".gz.fetching")
    try:
        archive.fetch(part.key, fetched)
        if stored.sha256 is not None and file_sha256(fetched) != stored.sha256:
            raise HashMismatch(
                f"{part.key}: the fetched bytes do not match the archive's SHA-256 of the object."
            )
        staged = _gunzip(fetched, dest, part)
    finally:
        fetched.unlink(missing_ok=True)
    if stored.source_sha256 and staged.sha256 != stored.source_sha256:
        dest.unlink(missing_ok=True)
        raise HashMismatch(
            f"{part.key}: its content does not match the SHA-256 recorded when it was archived."
        )
    return Staged(
        staged.name, staged.size, staged.sha256, part.key, staged.sha256, staged.lines, staged.partial
    ), False


def _gunzip(src: Path, dest: Path, part: Part) -> Staged:
    digest = hashlib.sha256()
    size = count = 0
    last = b"\n"
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        with tmp.open("wb") as out:
            for plain in gunzip_chunks(read_chunks(src)):
                out.write(plain)
                digest.update(plain)
                size += len(plain)
                count += plain.count(b"\n")
                last = plain[-1:]
        os.replace(tmp, dest)
    except zlib.error as exc:
        tmp.unlink(missing_ok=True)
        raise HashMismatch(f"{part.key}: not a readable gzip object ({exc}).") from exc
    return Staged(part.name, size, digest.hexdigest(), part.source, "", count, 0 if last == b"\n" else 1)


def _copy_local(part: Part, dest: Path) -> Staged:
    assert part.local is not None
    try:
        data = part.local.read_bytes()
    except FileNotFoundError:
        raise Vanished(str(part.local)) from None
    data = lines.whole(data)  # the pinger may be appending: take whole lines only
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return Staged(
        part.name, len(data), hashlib.sha256(data).hexdigest(), part.source, "", data.count(b"\n"), 0
    )


__all__ = ["HashMismatch", "Staged", "Vanished", "stage_part"]
