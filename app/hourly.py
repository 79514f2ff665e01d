"""Hourly JSON-lines files: one per device per UTC hour, appended a whole line at a time.

Layout: DATA_DIR/logs/YYYY-MM-DD-HH/<prefix>-<cloud_id>-YYYY-MM-DD-HH.jl

Each line goes out in one write(2) on an O_APPEND descriptor, so a killed process leaves
every accepted line complete in the page cache; only a power loss or a full disk can leave a
partial tail, which is cut off (and counted) before the file is appended to again. Open
descriptors are pooled in an LRU bounded well below the process's file limit, and a closed
hour's files are fsynced once, so rotate ships durable data. Each open descriptor holds a
shared flock(2); rotate takes a file only with an exclusive one (see app/rotate/).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from app import lines
from app.errors import WriteError
from app.hours import Hour, hour_key

log = logging.getLogger(__name__)


def reading_path(logs_dir: Path, prefix: str, cloud_id: str, hour: str) -> Path:
    """DATA_DIR/logs/<hour>/<prefix>-<cloud_id>-<hour>.jl: the one place the name is spelled."""
    return logs_dir / hour / f"{prefix}-{cloud_id}-{hour}.jl"


class HourlyWriter:
    """Appends reading lines to their hourly files through a bounded pool of descriptors."""

    def __init__(self, logs_dir: Path, prefix: str, max_open: int) -> None:
        self.logs_dir = logs_dir
        self.prefix = prefix
        self.max_open = max(1, min(max_open, fd_budget()))
        self._fds: OrderedDict[Path, int] = OrderedDict()
        self._by_device: dict[str, set[Path]] = {}  # cloud_id → its files with a descriptor open
        self._checked: set[Path] = set()  # files whose tail was verified by this process
        self._hours: dict[int, str] = {}  # Hour.number → its key, folder made
        self._written: dict[int, set[Path]] = {}  # hour number → files written, fsynced at close
        self.partial_tails_repaired = 0

    def append(self, cloud_id: str, polled_at: float, line: bytes) -> Path:
        """Write one newline-terminated line to the file for its hour; all or nothing."""
        number = Hour.at(polled_at).number
        hour = self._hours.get(number)  # the name is formatted and its folder made once an hour
        path = reading_path(self.logs_dir, self.prefix, cloud_id, hour or hour_key(polled_at))
        try:
            if hour is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._hours[number] = path.parent.name
            try:
                fd = self._fd(path, cloud_id)
            except FileNotFoundError:  # rotate shipped this hour and removed its folder
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = self._fd(path, cloud_id)
            write_all(fd, line)
        except OSError as exc:
            self._drop(path)
            raise WriteError(f"cannot append to {path}: {exc.strerror or exc}") from exc
        self._written.setdefault(number, set()).add(path)
        return path

    def path(self, cloud_id: str, at: float) -> Path:
        """The device's file for the hour of `at`."""
        return reading_path(self.logs_dir, self.prefix, cloud_id, hour_key(at))

    def last_records(self, cloud_id: str, now: float) -> dict[str, dict[str, object]]:
        """The last complete line of each kind (demand, summation, price) near the end of a
        device's file for this hour, or the last; a line without `kind` is demand.

        Raises WriteError when a file exists but cannot be read (the answer is unknown).
        """
        found: dict[str, dict[str, object]] = {}
        for at in (now, now - 3600):
            path = reading_path(self.logs_dir, self.prefix, cloud_id, hour_key(at))
            try:
                records = lines.tail_records(path)
            except OSError as exc:
                raise WriteError(f"cannot read {path}: {exc.strerror or exc}") from exc
            for record in records:
                found.setdefault(lines.kind_of(record), record)
            if "demand" in found:
                break
        return found

    def close_hours_before(self, now: float) -> list[Path]:
        """Close the files of hours that ended before `now`'s hour; returns them for `sync`."""
        current = Hour.at(now).number
        to_sync: list[Path] = []
        for number in [n for n in self._written if n < current]:
            for path in self._written.pop(number):
                self._drop(path)
                self._checked.discard(path)
                to_sync.append(path)
        for number in [n for n in self._hours if n < current]:
            del self._hours[number]
        if to_sync:  # once an hour: forget the closed files of each device
            self._by_device = {
                cid: live for cid, paths in self._by_device.items() if (live := paths & self._fds.keys())
            }
        return to_sync

    def release(self, cloud_ids: Iterable[str]) -> int:
        """Close the descriptors (and so drop the shared locks) of devices this process no longer
        writes: a device moved to push, or to another pinger, is written by someone else now, and
        rotate must be able to take its files when their hour closes. Returns how many closed."""
        closed = 0
        for cid in cloud_ids:
            for path in self._by_device.pop(cid, ()):
                closed += path in self._fds
                self._drop(path)
        return closed

    def close(self) -> list[Path]:
        """Close every descriptor; returns every file written, for `sync` (the SIGTERM path)."""
        for path in list(self._fds):
            self._drop(path)
        to_sync = [path for paths in self._written.values() for path in paths]
        self._written.clear()
        return to_sync

    @staticmethod
    def sync(paths: list[Path]) -> None:
        """fsync files (blocking: run it in a thread when the loop must stay responsive)."""
        for path in paths:
            _fsync_path(path)

    def _fd(self, path: Path, cloud_id: str) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        while len(self._fds) >= self.max_open:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        fd = _open_locked(path)
        if path not in self._checked:
            self._repair_tail(fd, path)
            self._checked.add(path)
        self._fds[path] = fd
        self._by_device.setdefault(cloud_id, set()).add(path)  # once per open, not per line
        return fd

    def _repair_tail(self, fd: int, path: Path) -> None:
        cut = lines.cut_partial_tail(fd)
        if cut:
            self.partial_tails_repaired += 1
            log.warning(
                "cut a partial last line left by a crash", extra={"path": str(path), "partial_bytes": cut}
            )

    def _drop(self, path: Path) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)


def _open_locked(path: Path) -> int:
    """Open (or create) `path` for appending, holding a shared flock(2) on it.

    The lock is held for as long as the descriptor is open: rotate takes a file only when it
    can lock it exclusively, so it never ships (and deletes) a file mid-write. Between our
    open(2) and our flock(2) rotate may have shipped and unlinked the file: the inode is checked
    again under the lock, and a file that is no longer at `path` is opened anew, so no line
    ever lands in a file that no one will read.
    """
    for _ in range(3):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(errno.EAGAIN, "rotate is archiving this file right now") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        path.parent.mkdir(parents=True, exist_ok=True)  # rotate removes an emptied hour folder
    raise OSError(errno.EAGAIN, "the file was replaced while it was being opened")


def write_all(fd: int, line: bytes) -> None:
    """Write all of `line` to an O_APPEND descriptor, or undo the part that went out and raise."""
    view = memoryview(line)
    done = 0
    try:
        while done < len(line):
            done += os.write(fd, view[done:])
    except OSError:
        # Undo a short write (ENOSPC mid-line) so the file never ends in half a reading: the
        # caller is the file's only writer at this moment (the pinger owns its devices' files; a
        # push server holds the file's exclusive lock), so its last `done` bytes are ours.
        if done:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, os.fstat(fd).st_size - done)
        raise


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # rotate got there first
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fd_budget() -> int:
    """How many hourly files a process may hold open: half of RLIMIT_NOFILE, less a margin, for
    sockets (the HTTP pool, uploads in flight) and everything else, after raising the soft limit
    to the hard one. With a file per device open, 10,000 devices need more than the usual soft
    1024, and re-opening a file for every line costs more CPU than the request that brought the
    reading."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return max(16, soft // 2 - 64)
