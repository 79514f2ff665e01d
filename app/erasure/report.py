"""`rainforest participants erasure-report STUDY PARTICIPANT`: the tombstone, and every place looked
at again, now. The tombstone no longer knows the cloud_id, so each place is searched for any
cloud_id whose keyed digest is the tombstone's: the archive's household folders, the compacted
days (their sources and the cloud_id column of every file), the carts, this host's hourly files,
and every key, field and member in Redis.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.archive.backend import Archive
from app.archive.layout import ROOT as HOURLY_ROOT
from app.archive.layout import parse_key, parse_local
from app.carts.model import ERASED
from app.carts.registry import CartRegistry
from app.erasure.hourly import household_prefix
from app.erasure.marks import Mark, Marks, digests
from app.erasure.parquet import compacted_days
from app.erasure.tombstone import Tombstone
from app.hours import Hour
from app.research.days import current, versions
from app.settings import Settings
from app.store import Store

LIVE_S = 120.0


class Recheck:
    def __init__(self, settings: Settings, store: Store, archive: Archive, tomb: Tombstone) -> None:
        self.settings, self.store, self.archive, self.tomb = settings, store, archive, tomb

    def _is_it(self, cloud_id: str) -> bool:
        return self.tomb.digest in digests(self.settings.secret_key, cloud_id)

    async def run(self) -> dict[str, Any]:
        """Place → what is left there (0 everywhere: erased)."""
        hourly = await asyncio.to_thread(self._hourly)
        parquet = await asyncio.to_thread(self._parquet)
        left = {
            "hourly": hourly,
            "parquet": parquet,
            "carts": await self._carts(),
            "local": await asyncio.to_thread(self._local),
            "redis": await self._redis(),
        }
        return {
            "tombstone": self.tomb.public(),
            "left": left,
            "erased": all(not v for v in _counts(left)),
            "hosts_not_reported": await self._silent_hosts(),
        }

    def _hourly(self) -> int:
        """Objects (or stored versions) of the household's hours before the erasure."""
        folders = [c for c in self.archive.children(f"{HOURLY_ROOT}/") if len(c) == 6]
        left = 0
        for cid in (c for c in folders if self._is_it(c)):
            prefix = household_prefix(cid)
            for key in {o.key for o in self.archive.list(prefix)} | set(self.archive.old_versions(prefix)):
                parsed = parse_key(key)
                left += parsed is None or Hour.parse(parsed[0].hour).start < self.tomb.requested_at
        return left

    def _parquet(self) -> dict[str, int]:
        rows = sources = 0
        for day in compacted_days(self.archive):
            manifest = current(self.archive, day)
            if manifest is None:
                continue
            sources += sum(1 for c in manifest.sources if self._is_it(c))
            older = [v for v in versions(self.archive, day) if v < manifest.version]
            sources += len(older)  # an older version not removed may hold it: counted as left
            for entry in manifest.files:
                with self.archive.open_read(entry["key"]) as f:
                    table = pq.read_table(f, columns=["cloud_id", "time"])
                for value in table.column("cloud_id").unique().to_pylist():
                    if value and self._is_it(str(value)):
                        theirs = table.filter(pc.equal(table.column("cloud_id"), pa.scalar(value)))
                        times = theirs.column("time").to_pylist()
                        rows += sum(
                            1 for at in times if at is not None and at.timestamp() < self.tomb.requested_at
                        )
        return {"rows": rows, "sources_or_old_versions": sources}

    async def _carts(self) -> int:
        left = 0
        for cart in await CartRegistry(self.store.redis).all():
            devices = cart.request.devices or ()
            if (cart.status != ERASED and any(self._is_it(d) for d in devices)) or (
                cart.status == ERASED and (self.settings.carts_dir / cart.id).exists()
            ):
                left += 1
        return left

    def _local(self) -> int:
        """This host's hourly files of the household (found, not removed: a look only)."""
        probe = Marks(
            self.settings.secret_key, {self.tomb.digest: Mark(self.tomb.requested_at, self.tomb.id)}
        )
        found = 0
        logs = self.settings.logs_dir
        for folder in logs.iterdir() if logs.is_dir() else []:
            for path in folder.iterdir() if folder.is_dir() else []:
                parsed = parse_local(path)
                if parsed is not None and probe.erased(parsed.cloud_id, Hour.parse(parsed.hour).start):
                    found += 1
        return found

    async def _redis(self) -> int:
        found = {w for w in await self.store.erasures.cloud_ids() if self._is_it(w)}
        total = 0
        for cloud_id in found:
            record = await self.store.devices.get_device(cloud_id)
            if record is not None and record.created_at >= self.tomb.requested_at:
                continue  # the gateway registered again since: a new participant, its own record
            traces = await self.store.erasures.sweep(cloud_id, remove=False)
            total += traces.keys + traces.fields
        return total

    async def _silent_hosts(self) -> list[str]:
        """Live pinger, rotate and server hosts that have not reported their local files yet."""
        reported = {h.split(":", 1)[0] for h in self.tomb.hosts}
        now, silent = time.time(), set()
        for kind in ("pinger", "rotate", "server"):
            for pid, _, _ in await self.store.processes.live_processes(kind, now - LIVE_S):
                if pid.split(":", 1)[0] not in reported:
                    silent.add(pid.split(":", 1)[0])
        return sorted(silent)


def _counts(left: dict[str, Any]) -> list[int]:
    out: list[int] = []
    for value in left.values():
        out += list(value.values()) if isinstance(value, dict) else [value]
    return out
