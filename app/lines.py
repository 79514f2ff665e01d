"""A line of an hourly file: its bytes, the reading it holds, and the one rule for "written once".

A line is one reading as one JSON object and a newline (DESIGN "Line kinds"); a line without
`kind` is a demand reading (files written before kinds existed). Every writer and every reader of
`.jl` bytes goes through this module:
- `parse` reads a buffer of lines: every complete line that is a JSON object, and how many were
  not (a last line cut by a crash, or one that is not JSON);
- `cut_partial_tail` cuts a file's unterminated last line before it is appended to again;
- `identity` is what makes two lines the same reading.

**The rule.** A reading is the same reading when its device, kind and device time are (a reading
without a device time, a price typed into the gateway's app: device, kind and values). A reading
is written once: a writer does not write a line whose identity is in the device's file of the
same hour or of the hour before (`WINDOW_HOURS`), and a reader that merges hours drops a repeat
within the same window. A re-send later than that (a gateway replaying old history) is written
again and counted as `late` where hours are merged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

Record = dict[str, Any]
Identity = tuple[str, object]  # (kind, device_time), or (kind, the values) without a device time
WINDOW_HOURS = 1  # a repeat is looked for in its own hour and this many before
TAIL_BYTES = 8192  # read back from a file's end when only its last lines matter
VALUE = {"demand": "demand_kw", "summation": "delivered_kwh", "price": "price"}
_NOT_VALUES = frozenset({"polled_at", "source", "cloud_id"})  # how a reading came, not what it is


def kind_of(record: Record) -> str:
    return str(record.get("kind", "demand"))


def identity(record: Record) -> Identity:
    """What makes two lines of one device the same reading."""
    t = record.get("device_time")
    if t is None:
        values = tuple(sorted((k, repr(v)) for k, v in record.items() if k not in _NOT_VALUES))
        return kind_of(record), values
    return kind_of(record), t


def time_of(record: Record) -> float:
    """When a reading was: its device time, or, for one sent without a time, when it reached us."""
    for name in ("device_time", "polled_at"):
        t = record.get(name)
        if isinstance(t, int | float) and not isinstance(t, bool):
            return float(t)
    return 0.0


def encode(record: Record) -> bytes:
    """One reading as the bytes of its line."""
    return orjson.dumps(record) + b"\n"


@dataclass
class Parsed:
    """The lines read from `.jl` bytes; `partial` counts an unterminated or unparseable line."""

    records: list[Record]
    partial: int = 0


def parse(data: bytes) -> Parsed:
    """Every complete line of `.jl` bytes, parsed in one call when every line is whole JSON (files
    are read by the thousand), else line by line; what is not a JSON object is skipped and counted."""
    cut = data.rfind(b"\n") + 1
    result = Parsed([], partial=1 if cut < len(data) else 0)  # a last line cut by a crash
    body = data[: cut - 1] if cut else b""
    if not body:
        return result
    try:
        parsed = orjson.loads(b"[" + body.replace(b"\n", b",") + b"]")
    except orjson.JSONDecodeError:
        parsed = []
        for raw in body.split(b"\n"):
            try:
                parsed.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                result.partial += 1
    result.records = [r for r in parsed if type(r) is dict]
    result.partial += len(parsed) - len(result.records)
    return result


def keep(data: bytes, wanted: Callable[[Record], bool]) -> tuple[bytes, int]:
    """The complete lines of `.jl` bytes whose reading is `wanted`, byte for byte, and how many;
    a line that cannot be read (or a partial last one) is not kept: its time is unknown."""
    kept = []
    for raw in data.split(b"\n")[:-1]:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if type(record) is dict and wanted(record):
            kept.append(raw + b"\n")
    return b"".join(kept), len(kept)


def read(path: Path) -> Parsed:
    """Every complete line of a file (FileNotFoundError when there is none)."""
    return parse(path.read_bytes())


def read_parts(paths: Iterable[Path]) -> Parsed:
    """Every complete line of an hour's parts, in order."""
    out = Parsed([])
    for path in paths:
        result = read(path)
        out.records.extend(result.records)
        out.partial += result.partial
    return out


def whole(data: bytes) -> bytes:
    """The complete lines of `data`: up to and including its last newline."""
    return data[: data.rfind(b"\n") + 1]


def cut_partial_tail(fd: int) -> int:
    """Cut an unterminated last line off the file open at `fd` (a crash mid-write: every writer
    appends a whole line in one write, so only a crash or a full disk leaves one), before it is
    appended to again; returns the bytes cut."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    start = max(0, size - TAIL_BYTES)
    tail = os.pread(fd, size - start, start)
    cut = tail.rfind(b"\n")
    keep = start + cut + 1 if cut >= 0 else 0
    os.ftruncate(fd, keep)
    return size - keep


def tail_records(path: Path) -> Iterator[Record]:
    """Complete lines near the end of a file, last first (none when the file does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return iter(())
    lines = tail.split(b"\n")
    lines.pop()  # after the last newline: empty, or a partial line
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first is cut by where the tail starts
    return _objects(reversed([line for line in lines if line]))


def _objects(lines: Iterable[bytes]) -> Iterator[Record]:
    for raw in lines:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            yield value


_TIME_RE = re.compile(rb'"device_time":(-?[0-9][0-9.eE+-]*)[,}]')
_KIND_RE = re.compile(rb'"kind":"([a-z]+)"')


def identities(data: bytes) -> Parsed:
    """Like `parse`, but each line only as its kind and device time (enough to count and to drop
    repeats), several times quicker than parsing every field; a line the pattern misses (a null
    device time, another layout) is parsed whole."""
    out = Parsed([])
    lines = data.split(b"\n")
    if lines[-1]:
        out.partial += 1  # a last line cut by a crash
    for raw in lines[:-1]:
        found = _TIME_RE.search(raw)
        if found is None or not raw.startswith(b"{"):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                out.partial += 1
                continue
            if isinstance(record, dict):
                out.records.append(record)
            else:
                out.partial += 1
            continue
        kind = _KIND_RE.search(raw)
        t = found.group(1)
        out.records.append({"kind": kind.group(1).decode() if kind else "demand",
                            "device_time": int(t) if t.isdigit() else float(t)})  # fmt: skip
    return out


_QUICK: dict[str, re.Pattern[bytes]] = {
    kind: re.compile(
        rb'"device_time":(\d+),"kind":"' + kind.encode() + rb'","source":"[a-z0-9-]*","'
        + name.encode() + rb'":(-?[0-9][0-9.eE+-]*)'
    )
    for kind, name in VALUE.items()
}  # fmt: skip


def points(data: bytes, kind: str) -> dict[int, float]:
    """(device time → value) of one kind's lines of `.jl` bytes, the first line of a reading kept
    (a chart's series). Lines as this version writes them are matched without parsing whole
    lines; anything else (older lines without a kind, a null value, another layout) is parsed."""
    name = VALUE[kind]
    body = whole(data)
    found = _QUICK[kind].findall(body)
    lines = body.count(b"\n")
    out: dict[int, float] = {}
    if body.count(b'"kind":"') == lines and body.count(b'"kind":"' + kind.encode() + b'"') == len(found):
        for t, v in found:
            out.setdefault(int(t), float(v))
        return out
    for r in parse(body).records:
        when, value = int(time_of(r)), r.get(name)  # a reading without a time: when it came
        if kind_of(r) == kind and when and isinstance(value, int | float) and type(value) is not bool:
            out.setdefault(when, float(value))
    return out


class Seen:
    """What a writer remembers of the readings it wrote or found in one device's files, to keep
    the rule without reading the files again: per kind, the newest device time and the last
    `recent` identities, each with the hour (`Hour.number`) of the file it is in.

    `has` answers True (a repeat within the window), False (newer than anything written: new),
    or None (older than the newest and not remembered: only the files can tell)."""

    __slots__ = ("_known", "_newest", "recent")

    def __init__(self, recent: int = 64) -> None:
        self.recent = recent
        self._newest: dict[str, float] = {}
        self._known: dict[str, dict[object, int]] = {}  # kind → identity key → hour, oldest first

    def has(self, ident: Identity, hour: int) -> bool | None:
        kind, key = ident
        known = self._known.get(kind)
        at = known.get(key) if known is not None else None
        if at is not None:
            return at >= hour - WINDOW_HOURS or None  # older than the window: ask the files
        newest = self._newest.get(kind)
        if newest is None or not isinstance(key, int | float):
            return None if newest is not None or known else False
        return None if key <= newest else False

    def add(self, ident: Identity, hour: int) -> None:
        kind, key = ident
        known = self._known.get(kind)
        if known is None:
            known = self._known[kind] = {}
        known[key] = max(hour, known.pop(key, hour))  # re-inserted: the newest last
        if len(known) > self.recent:
            del known[next(iter(known))]
        if isinstance(key, int | float):
            self._newest[kind] = max(key, self._newest.get(kind, key))

    def forget(self) -> None:
        self._newest.clear()
        self._known.clear()
