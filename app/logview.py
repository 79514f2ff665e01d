"""`rainforest logs`: read the processes' JSON log files, filter them, render actions as trees.

Each process writes `DATA_DIR/logs/<process>/<process>.log` (rolled to `.1`, `.2`, ...). A line
logged inside an action (a poll cycle, a rotate pass, a cart build) carries `action` and
`action_id`; the action's summary line is its last. `--tree` shows each action as that summary
with the lines it caused beneath it (nested actions beneath their parent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

PROCESSES = ("pinger", "server", "rotate", "cartd", "sim")
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
STYLES = {"DEBUG": "dim", "INFO": "", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}
_SKIP = {"timestamp", "level", "logger", "message", "process", "action", "action_id", "parent_id", "taskName"}

Record = dict[str, Any]


@dataclass
class Filters:
    level: int = 0
    device: str | None = None
    since: float | None = None  # Unix seconds

    def keep(self, record: Record) -> bool:
        if LEVELS.get(str(record.get("level", "INFO")), 20) < self.level:
            return False
        if self.device is not None and record.get("cloud_id") != self.device:
            return False
        return not (self.since is not None and _when(record) < self.since)


def files(logs_dir: Path, process: str) -> list[Path]:
    """A process's log files, oldest first (`.5` … `.1`, then the live one)."""
    folder = logs_dir / process
    rolled = sorted(
        folder.glob(f"{process}.log.*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0
    )
    live = folder / f"{process}.log"
    return [*rolled, *([live] if live.exists() else [])]


def read(paths: Iterable[Path]) -> Iterator[Record]:
    for path in paths:
        with path.open("rb") as f:
            for raw in f:
                record = _parse(raw)
                if record is not None:
                    yield record


def follow(path: Path, stop: Callable[[], bool], poll_s: float = 0.5) -> Iterator[Record]:
    """New lines of a live log file as they are written, across its rolling over."""
    handle = path.open("rb")
    handle.seek(0, 2)
    inode = path.stat().st_ino
    try:
        while not stop():
            raw = handle.readline()
            if raw.endswith(b"\n"):
                record = _parse(raw)
                if record is not None:
                    yield record
                continue
            if raw:
                handle.seek(-len(raw), 1)  # half a line: wait for the rest
            try:
                rolled = path.stat().st_ino != inode
            except FileNotFoundError:
                rolled = False
            if rolled:
                handle.close()
                handle = path.open("rb")
                inode = path.stat().st_ino
                continue
            time.sleep(poll_s)
    finally:
        handle.close()


def line(record: Record) -> str:
    """`2026-11-24T03:10:00Z INFO    pinger  poll cycle  ok=50 failed=0 …`"""
    extras = " ".join(f"{k}={_short(v)}" for k, v in record.items() if k not in _SKIP)
    stamp = str(record.get("timestamp", ""))[:19] + "Z" if record.get("timestamp") else "?"
    text = (
        f"{stamp} {record.get('level', '?'):<7} {record.get('process', '?'):<6}  {record.get('message', '')}"
    )
    return f"{text}  {extras}" if extras else text


@dataclass
class Action:
    action_id: str
    name: str
    parent_id: str | None = None
    lines: list[Record] = field(default_factory=list)
    children: list[Action] = field(default_factory=list)

    @property
    def root(self) -> Record:
        return self.lines[-1]  # the summary line is logged last


def actions(records: Iterable[Record]) -> tuple[list[Action], list[Record]]:
    """Group lines into actions (nested by parent) and the lines outside any action."""
    by_id: dict[str, Action] = {}
    loose: list[Record] = []
    for record in records:
        action_id = record.get("action_id")
        if not action_id:
            loose.append(record)
            continue
        found = by_id.get(action_id)
        if found is None:
            found = by_id[action_id] = Action(action_id, str(record.get("action")), record.get("parent_id"))
        found.lines.append(record)
    top: list[Action] = []
    for found in by_id.values():
        parent = by_id.get(found.parent_id or "")
        (parent.children if parent is not None else top).append(found)
    return top, loose


def tree_text(found: Action, colour: bool) -> list[tuple[str, str]]:
    """(text, style) lines: the summary, then each line and nested action beneath it."""
    out = [(f"{found.name} {found.action_id}  " + line(found.root), style(found.root, colour))]
    items: list[Record | Action] = [*found.lines[:-1], *found.children]
    items.sort(key=lambda i: _when(i.lines[0]) if isinstance(i, Action) else _when(i))
    for n, item in enumerate(items):
        last = n == len(items) - 1
        branch, rest = ("└─ ", "   ") if last else ("├─ ", "│  ")
        if isinstance(item, Action):
            sub = tree_text(item, colour)
            out.append((branch + sub[0][0], sub[0][1]))
            out.extend((rest + text, style) for text, style in sub[1:])
        else:
            out.append((branch + line(item), style(item, colour)))
    return out


def style(record: Record, colour: bool) -> str:
    """The rich style for a line's level (none off a terminal)."""
    return STYLES.get(str(record.get("level")), "") if colour else ""


def _parse(raw: bytes) -> Record | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # a torn last line of a crashed process
    return value if isinstance(value, dict) else None


def _when(record: Record) -> float:
    stamp = record.get("timestamp")
    if not isinstance(stamp, str):
        return 0.0
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _short(value: object) -> str:
    text = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 120 else text[:117] + "..."
