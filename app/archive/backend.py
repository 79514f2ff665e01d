"""The interface every archive backend keeps (the choice between them is `app.archive.factory`).

Rules a backend must keep:
- `put_new` never replaces an object: it answers None when the key already exists.
- `delete` exists for derived data only (superseded compacted days); the hourly objects, the
  source of truth, are never deleted or replaced, with one exception: `erase`, which removes an
  object and every version of it a versioned bucket keeps, for a household that withdrew
  (`app.erasure`) and for nothing else.
- `stat` reports what the archive holds, so rotate can confirm an upload before deleting.
- Failures are ArchiveError with a `kind`, never a library's own exception.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from isal import isal_zlib

from app.errors import ArchiveError

_INFLATE_ERROR = cast("type[Exception]", isal_zlib.error)  # isal's stubs call it an instance

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """A gzip file ready to store, with the digests that prove what it holds."""

    path: Path
    size: int
    sha256: str  # hex, of the gzip bytes stored
    md5: bytes  # raw digest of the gzip bytes (S3's Content-MD5)
    source_sha256: str  # hex, of the uncompressed .jl bytes
    source_bytes: int
    lines: int
    extra: tuple[tuple[str, str], ...] = ()  # more metadata: the device-hour's completeness

    def metadata(self) -> dict[str, str]:
        """Stored with the object, so a later pass or a cart can tell what it holds."""
        return {
            "sha256": self.sha256,
            "source-sha256": self.source_sha256,
            "source-bytes": str(self.source_bytes),
            "lines": str(self.lines),
            **dict(self.extra),
        }


@dataclass(frozen=True)
class StoredObject:
    """An object as the archive reports it; digests are None when the archive does not know."""

    key: str
    size: int
    sha256: str | None = None
    source_sha256: str | None = None
    source_bytes: int | None = None  # size of the uncompressed .jl, when recorded
    md5: str | None = None  # hex; S3's ETag of a single-part object (the server's digest of what it stored)

    def proves(self, upload: Upload) -> bool:
        """True when the archive's own digest of what it stored equals ours."""
        return self.size == upload.size and (self.sha256 == upload.sha256 or self.md5 == upload.md5.hex())


class Archive(Protocol):
    url: str  # for messages; never carries credentials

    def check(self) -> None:
        """Raise ArchiveError unless the archive can be written now."""

    def put_new(self, key: str, upload: Upload) -> StoredObject | None:
        """Store `upload` at `key` unless the key exists (then None); never overwrites.

        Returns what the archive reported storing (its digests, when the reply carries them).
        """

    def stat(self, key: str) -> StoredObject | None:
        """What is stored at `key` (size and digests), or None."""

    def source_sha256(self, key: str) -> str:
        """SHA-256 of the uncompressed content at `key`, from its metadata or by reading it."""

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with `prefix`, in key order (digests may be None)."""

    def fetch(self, key: str, dest: Path) -> None:
        """Copy the object at `key` to `dest`."""

    def children(self, prefix: str) -> Sequence[str]:
        """The names one level below `prefix` (which ends with "/"), objects and folders, sorted."""

    def open_read(self, key: str) -> BinaryIO:
        """The object at `key` as a seekable file (reads only the ranges asked for, on S3)."""

    def delete(self, key: str) -> None:
        """Remove a derived object (a superseded compacted file); never an hourly object."""

    def erase(self, key: str) -> Erased:
        """Remove `key` and every older version of it the archive keeps (erasure only)."""

    def old_versions(self, prefix: str) -> Sequence[str]:
        """Keys under `prefix` of which the archive keeps an older version or a deleted one (a
        versioned bucket); an archive that keeps no versions has none."""


@dataclass(frozen=True)
class Erased:
    """What erasing one key removed: versions (the current one included) and their bytes; `kept`
    counts versions the archive would not let us remove (say so; never pretend)."""

    versions: int = 0
    bytes: int = 0
    kept: int = 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(path: Path) -> tuple[str, bytes]:
    """A file's sha256 (hex) and MD5 (raw, S3's Content-MD5), in one streaming read."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.digest()


def gunzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The decompressed bytes of a stream of gzip bytes, every member of it (zlib.error if not gzip).

    Inflated by ISA-L (`isal`): the same deflate, five to six times quicker than zlib's, which
    compaction, carts and the readings route pay on every hourly object they read."""
    inflater = isal_zlib.decompressobj(wbits=31)
    try:
        for chunk in chunks:
            data = chunk
            while data:
                plain = inflater.decompress(data)
                if plain:
                    yield plain
                if inflater.eof:  # a further gzip member may follow
                    data = inflater.unused_data
                    inflater = isal_zlib.decompressobj(wbits=31)
                else:
                    data = b""
        tail = inflater.flush()
    except _INFLATE_ERROR as exc:
        raise zlib.error(str(exc)) from None
    if tail:
        yield tail


def gunzip_object(key: str, gz: bytes) -> bytes:
    """An hourly object's lines; bytes that are not gzip are an ArchiveError that names the object."""
    try:
        return b"".join(gunzip_chunks([gz]))
    except zlib.error as exc:
        raise ArchiveError(f"{key} is not a readable gzip object: {exc}", kind="integrity") from exc


def gunzip_sha256(chunks: Iterable[bytes]) -> str:
    """SHA-256 of what a stream of gzip bytes decompresses to (all members, streaming)."""
    digest = hashlib.sha256()
    for plain in gunzip_chunks(chunks):
        digest.update(plain)
    return digest.hexdigest()


def read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(CHUNK), b"")


__all__ = [
    "Archive",
    "StoredObject",
    "Upload",
    "file_sha256",
    "gunzip_chunks",
    "gunzip_sha256",
    "read_chunks",
]
