"""Write a cart's tar: MANIFEST.json and SHA256SUMS first, then every file, zero-copy.

Headers come from the standard library's `tarfile` (POSIX pax format, so long or non-ASCII
names are safe); file bodies go from the staged file to the tar with sendfile(2), never through
Python memory. The tar is written as `cart.tar.partial`, fsynced, and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from app.threads import Stopped

BLOCK = 512
RECORD = 20 * BLOCK  # tar files are a whole number of 10 KiB records


@dataclass(frozen=True)
class Member:
    name: str  # path inside the tar
    path: Path  # the staged file
    size: int
    sha256: str


def tar_size(sizes: list[int]) -> int:
    """Upper bound of a tar holding files of these sizes (headers, padding, the end)."""
    body = sum(3 * BLOCK + -(-s // BLOCK) * BLOCK for s in sizes)  # header (+ pax header) + data
    return -(-(body + 2 * BLOCK) // RECORD) * RECORD + 64 * 1024


def manifest_bytes(manifest: dict[str, object]) -> bytes:
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"


def sums_bytes(entries: list[tuple[str, str]]) -> bytes:
    """`sha256sum -c` format: `<hex>  <name>` per line."""
    return "".join(f"{sha}  {name}\n" for name, sha in entries).encode()


def write_tar(
    dest: Path,
    members: list[Member],
    manifest: bytes,
    mtime: float,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Write the tar; returns its size. `progress(bytes_done)` is called after each member.

    When `stop` is set (the build was cancelled) it ends before the next member, raising `Stopped`."""
    sums = sums_bytes(
        [("MANIFEST.json", hashlib.sha256(manifest).hexdigest())] + [(m.name, m.sha256) for m in members]
    )
    partial = dest.with_name(dest.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    written = 0
    try:
        for name, data in (("MANIFEST.json", manifest), ("SHA256SUMS", sums)):
            written += _write(fd, _header(name, len(data), mtime) + data + _pad(len(data)))
        for member in members:
            if stop is not None and stop.is_set():
                raise Stopped(f"{dest} was not finished: the build stopped")
            written += _write(fd, _header(member.name, member.size, mtime))
            with member.path.open("rb") as src:
                sent = 0
                while sent < member.size:
                    n = os.sendfile(fd, src.fileno(), sent, member.size - sent)
                    if n == 0:
                        raise OSError(f"{member.path} is shorter than staged ({sent} of {member.size} bytes)")
                    sent += n
            written += member.size + _write(fd, _pad(member.size))
            if progress is not None:
                progress(written)
        end = 2 * BLOCK
        end += -(written + end) % RECORD
        written += _write(fd, b"\0" * end)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        partial.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(partial, dest)
    return written


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, int(mtime), 0o644, tarfile.REGTYPE
    info.uname = info.gname = "rainforest"
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _write(fd: int, data: bytes) -> int:
    view = memoryview(data)
    done = 0
    while done < len(data):
        done += os.write(fd, view[done:])
    return len(data)
