"""`file://` archive: the same key layout under a folder, for `make demo` and single machines.

An object appears all at once and is never replaced: the bytes go to a temporary file in
ROOT/.incoming/ (same filesystem), are fsynced, and are linked into place with link(2), which
fails when the name exists. The folder is fsynced so the new name survives a power cut. A
killed writer leaves at most a temporary file there, never a partial object; `check` clears
those once they are an hour old.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from app.archive.backend import Erased, StoredObject, Upload, file_sha256, gunzip_sha256, read_chunks
from app.archive.layout import ROOT
from app.errors import ArchiveError


class _OSErrors:
    """An OSError raised inside as one ArchiveError sentence: "cannot read K in ROOT: reason"."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, _type: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if isinstance(exc, OSError):
            raise ArchiveError(f"{self.what}: {exc.strerror or exc}", kind="unreachable") from exc


class FileArchive:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        self.incoming = root / ".incoming"

    def check(self) -> None:
        try:
            self.incoming.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.incoming):
                pass
            cutoff = time.time() - 3600
            for stale in self.incoming.iterdir():
                with contextlib.suppress(OSError):
                    if stale.stat().st_mtime < cutoff:
                        stale.unlink()
        except OSError as exc:
            raise ArchiveError(
                f"cannot write to the archive folder {self.root}: {exc.strerror or exc}", kind="unreachable"
            ) from exc

    def put_new(self, key: str, upload: Upload) -> StoredObject | None:
        dest = self._path(key)
        with self._os_errors(f"store {key}"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.incoming.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self.incoming)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out, upload.path.open("rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
                    out.flush()
                    os.fsync(out.fileno())
                try:
                    os.link(tmp, dest)
                except FileExistsError:
                    return None
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(dest.parent)
            return StoredObject(key, upload.size)  # no digest of its own: rotate reads it back

    def stat(self, key: str) -> StoredObject | None:
        path = self._path(key)
        with self._os_errors(f"read {key}"):
            try:
                size = path.stat().st_size
                return StoredObject(key, size, sha256=file_sha256(path), source_bytes=_gzip_isize(path, size))
            except FileNotFoundError:
                return None

    def source_sha256(self, key: str) -> str:
        with self._os_errors(f"read {key}"):
            try:
                return gunzip_sha256(read_chunks(self._path(key)))
            except zlib.error as exc:
                raise ArchiveError(
                    f"{key} in {self.root} is not a readable gzip file: {exc}", kind="integrity"
                ) from exc

    def list(self, prefix: str) -> list[StoredObject]:
        folder, _, _name = prefix.rpartition("/")
        base = self._path(folder) if folder else self.root
        if not base.is_dir():
            return []
        found = []
        root, incoming = str(self.root), str(self.incoming)
        for folder_path, folders, names in os.walk(base):  # os.walk: no Path object per file
            if folder_path == incoming or folder_path.startswith(incoming + os.sep):
                folders[:] = []  # uploads in flight are not objects yet
                continue
            for name in names:
                full = os.path.join(folder_path, name)
                key = full[len(root) + 1 :].replace(os.sep, "/")
                if key.startswith(prefix):
                    try:
                        found.append(StoredObject(key, os.stat(full).st_size))
                    except FileNotFoundError:
                        continue  # removed meanwhile (a superseded compacted file)
        return sorted(found, key=lambda o: o.key)

    def fetch(self, key: str, dest: Path) -> None:
        with self._os_errors(f"read {key}"):
            shutil.copyfile(self._path(key), dest)

    def children(self, prefix: str) -> Sequence[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        with self._os_errors(f"list {prefix}"):
            try:
                return sorted(p.name for p in base.iterdir() if p != self.incoming)
            except FileNotFoundError:
                return []

    def open_read(self, key: str) -> BinaryIO:
        with self._os_errors(f"read {key}"):
            return self._path(key).open("rb")

    def delete(self, key: str) -> None:
        if key.startswith(ROOT + "/"):
            raise ArchiveError(f"refusing to delete an hourly object: {key}", kind="error")
        with self._os_errors(f"delete {key}"):
            self._path(key).unlink(missing_ok=True)

    def erase(self, key: str) -> Erased:
        path = self._path(key)
        with self._os_errors(f"erase {key}"):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return Erased()
            path.unlink(missing_ok=True)
            _fsync_dir(path.parent)
            folder = path.parent
            while folder != self.root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()  # a household's emptied folders go too: their names hold its cloud_id
                folder = folder.parent
        return Erased(1, size)

    def old_versions(self, prefix: str) -> Sequence[str]:
        return []  # a folder keeps no versions

    def _os_errors(self, doing: str) -> _OSErrors:
        return _OSErrors(f"cannot {doing} in {self.root}")

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ArchiveError(f"refusing an archive key outside the archive: {key!r}", kind="error")
        return self.root / key


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _gzip_isize(path: Path, size: int) -> int | None:
    """The uncompressed size a (single-member) gzip file records in its last 4 bytes."""
    if size < 18:
        return None
    with path.open("rb") as f:
        f.seek(size - 4)
        return int.from_bytes(f.read(4), "little")
