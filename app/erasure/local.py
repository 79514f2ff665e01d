"""A host's own copies of an erased household, removed by the host itself: every process with a
DATA_DIR (pinger, rotate, server) sweeps it at start and whenever an erasure begins or ends (looked
at every SWEEP_S), and rotate before every pass, so a host that was down during the erasure
deletes, rather than ships, the household's files when it returns.

It removes the household's hourly files from before the erasure, its lines in rescue files
(`unwritten-*.jl`), and the folders of carts marked erased, then reports to the tombstone what it
removed (a host that had nothing reports 0, so the receipt shows it looked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from app import lines
from app.archive.layout import parse_local
from app.carts.model import ERASED
from app.carts.registry import CartRegistry
from app.erasure.marks import Marks
from app.erasure.tombstone import DONE
from app.errors import RainforestError
from app.hours import HOUR_RE, Hour
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)
SWEEP_S = 30.0


def host_id(settings: Settings) -> str:
    """This host and its DATA_DIR: what the receipt calls it."""
    return f"{socket.gethostname()}:{settings.data_dir.resolve()}"


def sweep_files(settings: Settings, marks: Marks) -> tuple[Counter[str], Counter[str]]:
    """Remove the erased households' local hourly files and rescue lines; (files, bytes) by
    tombstone."""
    files: Counter[str] = Counter()
    size: Counter[str] = Counter()
    logs = settings.logs_dir
    for folder in sorted(logs.iterdir()) if logs.is_dir() else []:
        if not folder.is_dir() or not HOUR_RE.match(folder.name):
            continue
        start = Hour.parse(folder.name).start
        for path in folder.iterdir():
            found = parse_local(path)
            mark = marks.of(found.cloud_id) if found is not None else None
            if mark is None or start >= mark.cutoff:
                continue
            with contextlib.suppress(FileNotFoundError):
                size[mark.tombstone] += path.stat().st_size
                path.unlink()
                files[mark.tombstone] += 1
    for rescue in settings.data_dir.glob("unwritten-*.jl"):
        _sweep_rescue(rescue, marks, files, size)
    return files, size


def _sweep_rescue(path: Path, marks: Marks, files: Counter[str], size: Counter[str]) -> None:
    data = path.read_bytes()
    hit: Counter[str] = Counter()

    def wanted(record: lines.Record) -> bool:
        mark = marks.of(str(record.get("cloud_id", "")))
        if mark is not None and float(record.get("polled_at") or 0) < mark.cutoff:
            hit[mark.tombstone] += 1
            return False
        return True

    kept, _ = lines.keep(data, wanted)
    if not hit:
        return
    tmp = path.with_name(path.name + ".erasing")
    tmp.write_bytes(kept)
    os.replace(tmp, path)
    removed, total = len(data) - len(kept), sum(hit.values())
    for tombstone, n in hit.items():  # the file stays (other households' lines): only bytes count
        size[tombstone] += removed * n // total


class LocalSweep:
    """This host's part of every erasure (see the module)."""

    def __init__(self, settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.settings, self.store, self.clock = settings, store, clock
        self.host = host_id(settings)
        self._reported: set[str] = set()
        self._swept: frozenset[str] | None = None  # the marks (and finished erasures) last swept by

    async def once(self, changed_only: bool = False) -> Counter[str]:
        """One sweep (with `changed_only`, only when the marks changed since the last); files
        removed by tombstone."""
        marks = await self.store.erasures.marks(self.settings.secret_key)
        if not marks:
            return Counter()
        # an erasure marks carts erased after its mark appears: its end is a change too
        done = {f"done:{t.id}" for t in await self.store.erasures.all() if t.state == DONE}
        seen = frozenset(marks.marks) | frozenset(done)
        if changed_only and seen == self._swept:
            return Counter()
        self._swept = seen
        files, size = await asyncio.to_thread(sweep_files, self.settings, marks)
        carts = await self._carts()
        tombstones = {m.tombstone for m in marks.marks.values()}
        for tombstone in sorted(tombstones):
            if files[tombstone] or size[tombstone] or tombstone not in self._reported:
                await self.store.erasures.host_report(
                    tombstone, self.host, files[tombstone], size[tombstone], self.clock()
                )
                self._reported.add(tombstone)
        if files or carts:
            counts = {"files": sum(files.values()), "bytes": sum(size.values()), "carts": carts}
            log.info("erased households' local copies removed", extra=counts)
        return files

    async def _carts(self) -> int:
        """Remove the folders of carts the erasure marked (built on this host)."""
        folder = self.settings.carts_dir
        if not folder.is_dir():
            return 0
        removed = 0
        registry = CartRegistry(self.store.redis)
        for child in folder.iterdir():
            cart = await registry.get(child.name) if child.is_dir() else None
            if cart is not None and cart.status == ERASED:
                await asyncio.to_thread(shutil.rmtree, child, True)
                removed += 1
        return removed

    async def run(self, stop: asyncio.Event, every_s: float = SWEEP_S) -> None:
        """Sweep at start, then whenever the marks change (looked at every `every_s`) until
        `stop`; a failure costs one sweep. (Rotate sweeps before every pass: `once()`.)"""
        while not stop.is_set():
            try:
                await self.once(changed_only=True)
            except RainforestError as exc:
                log.warning("local erasure sweep skipped", extra={"reason": str(exc)})
            except OSError as exc:
                log.error("local erasure sweep failed", extra={"reason": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
