"""Pushed readings into the hourly files, exactly once, from any number of server processes.

A reading is appended with one write(2) to its device's file for the hour it arrived, while
the writer holds an exclusive flock(2) on that file. Under the lock it first reads whatever
other processes appended since it last looked, so its view of what the file holds is complete;
a reading whose (kind, device_time) is already there (a gateway re-sending after a timeout,
even to another process or after a restart) is not written again. The lock is only ever tried
(never waited for on the event loop): a busy file raises FileBusy, and the receiver tries again
a few times, asleep in between, before answering 503 so the uploader sends again later. The
2xx answer is sent only after the write: a reading answered is in the file, in the page cache.
It survives a crash or kill of the server; a power loss or kernel crash can lose what was not
yet written back (files are fsynced when their hour closes). rotate takes a file only with an
exclusive lock too, and only once its hour has closed, so a file being written is never shipped.

Memory stays small however large the fleet: per open file, the newest device time of each kind
and the last few times seen; a rarer, older re-send is checked against the file itself.
"""

from __future__ import annotations

import fcntl
import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from app import lines
from app.errors import FileBusy, WriteError
from app.hourly import fd_budget, reading_path, write_all
from app.hours import Hour, hour_key

RECENT = 64  # device times remembered per kind and file
TAIL_BYTES = 65536  # read back from a file when it is (re)opened


@dataclass
class _Kind:
    newest: int = -1
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT))
    recent_set: set[int] = field(default_factory=set)

    def add(self, t: int) -> None:
        if len(self.recent) == RECENT:
            self.recent_set.discard(self.recent[0])
        self.recent.append(t)
        self.recent_set.add(t)
        self.newest = max(self.newest, t)


@dataclass
class _File:
    fd: int
    ino: int
    seen_to: int  # bytes of the file already read into `kinds`
    kinds: dict[str, _Kind] = field(default_factory=dict)
    complete: bool = False  # `kinds` was built from the whole file, not a tail
    mid_line: bool = False  # `seen_to` is a tail's start, inside a line

    def has(self, kind: str, t: int) -> bool | None:
        """True or False when known; None when only the file itself can tell."""
        k = self.kinds.get(kind)
        if k is None or t > k.newest:
            return False if (k is not None or self.complete) else None
        if t in k.recent_set:
            return True
        return False if self.complete else None


class PushWriter:
    """Appends pushed lines to hourly files, deduplicated on (kind, device_time) per device."""

    def __init__(self, logs_dir: Path, prefix: str, max_open: int = 256) -> None:
        self.logs_dir = logs_dir
        self.prefix = prefix
        self.max_open = max(1, min(max_open, fd_budget()))
        self._files: OrderedDict[Path, _File] = OrderedDict()
        self._hour = -1  # the newest hour written: its devices' file names are kept in `_named`
        self._named: dict[str, tuple[Path, Path]] = {}

    def _paths(self, cloud_id: str, hour: Hour) -> tuple[Path, Path]:
        """The device's file of `hour` and of the hour before, named once an hour (an upload of
        the newest hour reuses them; a history entry's older hour is named afresh). Only
        authenticated devices write, so the names kept are bounded by the fleet."""
        if hour.number > self._hour:
            self._hour, self._named = hour.number, {}
        if hour.number == self._hour and (paths := self._named.get(cloud_id)) is not None:
            return paths
        paths = (
            reading_path(self.logs_dir, self.prefix, cloud_id, hour.key),
            reading_path(self.logs_dir, self.prefix, cloud_id, (hour - 1).key),
        )
        if hour.number == self._hour:
            self._named[cloud_id] = paths
        return paths

    def write(
        self, cloud_id: str, readings: list[tuple[str, int | None, bytes]], now: float
    ) -> tuple[list[tuple[str, int | None, bytes]], int]:
        """Append the (kind, device_time, line) not yet in the file; returns those written and
        how many were duplicates.

        Raises WriteError when the file cannot be written (nothing is then written)."""
        hour = Hour.at(now)
        path, earlier = self._paths(cloud_id, hour)
        try:
            entry = self._locked(path)
            try:
                self._catch_up(path, entry)
                fresh, duplicates = self._fresh(path, earlier, hour.start, entry, readings)
                if fresh:
                    data = b"".join(line for _, _, line in fresh)
                    write_all(entry.fd, data)
                    entry.seen_to += len(data)
                    for kind, t, _ in fresh:
                        if t is not None:
                            entry.kinds.setdefault(kind, _Kind()).add(t)
            finally:
                fcntl.flock(entry.fd, fcntl.LOCK_UN)
        except OSError as exc:  # FileBusy is no OSError: it reaches the caller as it is
            self._close(path)
            raise WriteError(f"cannot append to {path}: {exc.strerror or exc}") from exc
        return fresh, duplicates

    def _fresh(
        self,
        path: Path,
        earlier: Path,
        hour_start: int,
        entry: _File,
        readings: list[tuple[str, int | None, bytes]],
    ) -> tuple[list[tuple[str, int | None, bytes]], int]:
        fresh: list[tuple[str, int | None, bytes]] = []
        batch: set[lines.Identity] = set()
        duplicates = 0
        for kind, t, line in readings:
            if t is None:  # no device time: the same reading is the same values (app.lines)
                ident = lines.identity(lines.parse(line).records[0])
                if ident in batch or ident in _file_keys(path) or ident in _file_keys(earlier):
                    duplicates += 1
                else:
                    batch.add(ident)
                    fresh.append((kind, t, line))
                continue
            known = entry.has(kind, t)
            if known is None:
                known = (kind, t) in _file_keys(path)
            if not known and t < hour_start:  # a re-send that may have landed last hour
                known = (kind, t) in _file_keys(earlier)
            if known or (kind, t) in batch:
                duplicates += 1
                continue
            batch.add((kind, t))
            fresh.append((kind, t, line))
        return fresh, duplicates

    def _open(self, path: Path) -> _File:
        entry = self._files.get(path)
        if entry is not None:
            self._files.move_to_end(path)
            return entry
        while len(self._files) >= self.max_open:
            _, old = self._files.popitem(last=False)
            os.close(old.fd)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:  # the hour's first file (rotate removes an hour's folder once shipped)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o644)
        st = os.fstat(fd)
        start = max(0, st.st_size - TAIL_BYTES)
        entry = _File(fd, st.st_ino, start, complete=start == 0, mid_line=start > 0)
        self._files[path] = entry
        return entry

    def _locked(self, path: Path) -> _File:
        """The open file at `path`, exclusively locked; rotate may have shipped and removed the
        one we had open, so the inode is checked under the lock and a new file opened if so.
        Raises FileBusy (holding no lock) when another process holds the lock."""
        for _ in range(3):
            entry = self._open(path)
            _lock(entry.fd, path)
            try:
                same = os.stat(path).st_ino == entry.ino
            except FileNotFoundError:
                same = False
            if same:
                return entry
            self._close(path)  # closing drops the lock
        raise FileBusy(f"{path.name} was replaced three times while it was being opened")

    def _catch_up(self, path: Path, entry: _File) -> None:
        """Read what was appended since we last looked (by us or another process)."""
        size = os.fstat(entry.fd).st_size
        if size <= entry.seen_to:
            return
        data = os.pread(entry.fd, size - entry.seen_to, entry.seen_to)
        if not data.endswith(b"\n"):
            # a partial last line (a crash mid-write: writers hold this lock while they write):
            # cut it off, as the pinger does, so the next line starts clean
            size -= lines.cut_partial_tail(entry.fd)
            data = lines.whole(data)
        if entry.mid_line:  # a tail read starts inside a line: skip to the next one
            data = data[data.find(b"\n") + 1 :]
            entry.mid_line = False
        for record in lines.identities(data).records:
            kind, t = lines.identity(record)
            if isinstance(t, int):
                entry.kinds.setdefault(kind, _Kind()).add(t)
        entry.seen_to = size

    def close_hours_before(self, now: float) -> list[Path]:
        """Close the files of hours before `now`'s; returns them for fsync."""
        current = hour_key(now)
        closed = [p for p in self._files if p.parent.name < current]
        for path in closed:
            self._close(path)
        return closed

    def close(self) -> list[Path]:
        paths = list(self._files)
        for path in paths:
            self._close(path)
        return paths

    def _close(self, path: Path) -> None:
        entry = self._files.pop(path, None)
        if entry is not None:
            os.close(entry.fd)


def _lock(fd: int, path: Path) -> None:
    """Take the file's exclusive lock without waiting: this runs on the server's event loop, and a
    blocking flock(2) there would stall every request the process serves for as long as another
    holder (rotate shipping the file, a pinger that still writes the device) keeps it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FileBusy(f"{path.name} is locked by another writer right now") from None


def _file_keys(path: Path) -> set[lines.Identity]:
    """The identity of every line in a file: the rare, exact check."""
    try:
        return {lines.identity(r) for r in lines.identities(path.read_bytes()).records}
    except FileNotFoundError:
        return set()
