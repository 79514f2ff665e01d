"""Take one local hourly file for shipping, and pack it as a verifiable gzip.

A claim holds an exclusive flock(2) on the file. The pinger holds a shared lock on every file it
has open, so a claim succeeds only when no one is appending, and a writer that opens the file
while it is claimed backs off and retries (on a fresh file once this one is gone).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from app.archive.backend import CHUNK, Upload

COMPRESS_LEVEL = 6


class Busy(Exception):
    """Someone holds the file open for writing; try again next pass."""


class Claim:
    """An exclusively locked local file; `finish` deletes it, `release` leaves it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Busy(f"{path} is gone (another rotate took it)") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The name must still be this file: another pass may have shipped and deleted it,
            # and a late writer made a new one under the same name.
            if os.stat(path).st_ino != os.fstat(self.fd).st_ino:
                raise Busy(f"{path} was replaced while being claimed")
        except BlockingIOError:
            os.close(self.fd)
            raise Busy(f"{path} is open for writing") from None
        except (Busy, FileNotFoundError):
            os.close(self.fd)
            raise Busy(f"{path} was replaced while being claimed") from None

    def pack(self, tmp_dir: Path) -> tuple[Upload, int]:
        """Gzip the file, streaming, into `tmp_dir`; returns the upload and its partial-line count.

        The bytes go in exactly as they are, a crash's partial last line included, so the
        archive holds what the disk held; readers skip (and count) such a line.
        """
        tmp_dir.mkdir(parents=True, exist_ok=True)
        out_fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="rotate-", suffix=".jl.gz")
        source = hashlib.sha256()
        sink = _HashingSink(os.fdopen(out_fd, "wb"))
        size = lines = 0
        last = b"\n"
        try:
            with gzip.GzipFile(
                filename="", mode="wb", compresslevel=COMPRESS_LEVEL, fileobj=sink, mtime=0
            ) as gz:
                os.lseek(self.fd, 0, os.SEEK_SET)
                while chunk := os.read(self.fd, CHUNK):
                    source.update(chunk)
                    gz.write(chunk)
                    size += len(chunk)
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
            sink.close()
        except BaseException:
            sink.close()
            Path(name).unlink(missing_ok=True)
            raise
        partial = 0 if last == b"\n" else 1
        upload = Upload(
            path=Path(name),
            size=sink.size,
            sha256=sink.sha256.hexdigest(),
            md5=sink.md5.digest(),
            source_sha256=source.hexdigest(),
            source_bytes=size,
            lines=lines,
        )
        return upload, partial

    def finish(self) -> None:
        """Delete the shipped file (and its hour folder once empty), then drop the lock."""
        try:
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: other devices, or a late writer
                self.path.parent.rmdir()
        finally:
            self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _HashingSink:
    """A write-only file object that digests what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        self.out.close()


def clean_tmp(tmp_dir: Path, older_than_s: float = 3600) -> None:
    """Remove packed files a killed pass left behind."""
    if not tmp_dir.is_dir():
        return
    cutoff = time.time() - older_than_s
    for path in tmp_dir.glob("rotate-*.jl.gz"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
