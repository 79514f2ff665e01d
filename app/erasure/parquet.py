"""A household out of the compacted Parquet days, by the compaction's own rules: each day that
holds it gets a new version without its rows, verified by reading it back (row counts and the
digest of every column), published, and only then are the older versions removed, every stored
version of them with it.

Only the row groups whose statistics may hold the household are decoded and filtered; a file
with none of its rows is copied as it is. The other households' rows, their order and their row
groups are unchanged, and the manifest no longer lists the household's sources, duplicates or
cut lines, so a later compaction of the day finds nothing to do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.archive.backend import Archive
from app.errors import ArchiveError
from app.research.compact import Compactor, RowDigest, sources_digest
from app.research.days import ROOT, DayManifest, current, file_key, manifest_key, may_hold, versions
from app.research.parquet import parquet_writer
from app.research.schema import KINDS

DAY_THREADS = 2  # days rewritten at once (each holds one of its files' row groups in memory)


def compacted_days(archive: Archive) -> list[str]:
    """Every day with a manifest."""
    return sorted(
        n.split("=", 1)[1] for n in archive.children(f"{ROOT}/_manifests/") if n.startswith("date=")
    )


def _older_manifests_hold(archive: Archive, day: str, below: int, cloud_id: str) -> bool:
    for version in (v for v in versions(archive, day) if v < below):
        try:
            with archive.open_read(manifest_key(day, version)) as f:
                if cloud_id in DayManifest.from_json(f.read()).sources:
                    return True
        except ArchiveError:
            return True  # a crashed attempt's files without a manifest: remove them to be sure
    return False


class DayEraser:
    def __init__(self, compactor: Compactor, work_root: Path) -> None:
        self.compactor, self.archive = compactor, compactor.archive
        self.work_root = work_root
        self.read_bytes = self.written_bytes = 0
        self._lock = threading.Lock()

    def erase(self, cloud_id: str) -> dict[str, Any]:
        """Every compacted day of the household, rewritten without it; counts for the tombstone."""
        rewritten: list[dict[str, Any]] = []
        removed: Counter[str] = Counter()

        def one(day: str) -> int:
            """The day rewritten when it holds the household, then its older versions erased."""
            manifest = current(self.archive, day)
            if manifest is None:
                return 0
            holds = cloud_id in manifest.sources
            if not holds and not _older_manifests_hold(self.archive, day, manifest.version, cloud_id):
                return 0
            if holds:
                manifest, gone = self._rewrite(manifest, cloud_id)
                with self._lock:
                    removed.update(gone)
                    rewritten.append(
                        {"day": day, "version": manifest.version, "rows_removed": sum(gone.values())}
                    )
            return self._erase_older(day, manifest.version)

        # days are independent: Arrow and the digests work outside the GIL, so they overlap
        with ThreadPoolExecutor(DAY_THREADS) as pool:
            old = sum(pool.map(one, compacted_days(self.archive)))
        rewritten.sort(key=lambda d: str(d["day"]))
        return {
            "days": len(rewritten),
            "versions_rewritten": [f"{d['day']} v{d['version']}" for d in rewritten],
            "rows": dict(removed),
            "old_objects_erased": old,
            "bytes_read": self.read_bytes,
            "bytes_written": self.written_bytes,
        }

    def _rewrite(self, manifest: DayManifest, cloud_id: str) -> tuple[DayManifest, Counter[str]]:
        day = manifest.day
        version = max(versions(self.archive, day), default=0) + 1
        self.work_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"erase-{day}-{os.getpid()}-", dir=self.work_root))
        removed: Counter[str] = Counter()
        entries: list[dict[str, Any]] = []
        rows: dict[str, int] = {}
        digests: dict[str, str] = {}
        try:
            for kind in KINDS:
                digest, n = RowDigest(kind), 0
                for entry in (f for f in manifest.files if f["kind"] == kind):
                    source = work / f"in-{kind}-{n:03d}.parquet"
                    self.archive.fetch(entry["key"], source)
                    with self._lock:
                        self.read_bytes += source.stat().st_size
                    path = work / f"{kind}-{n:03d}.parquet"
                    kept, gone = self._filtered(source, path, cloud_id, digest)
                    removed[kind] += gone
                    if kept:
                        key = file_key(kind, day, version, n)
                        entries.append(self.compactor.upload(key, path, kind, kept))
                        with self._lock:
                            self.written_bytes += path.stat().st_size
                        n += 1
                rows[kind], digests[kind] = digest.rows, digest.hexdigest()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        sources = {c: objs for c, objs in manifest.sources.items() if c != cloud_id}
        new = DayManifest(
            day=day, version=version,
            sources_sha256=sources_digest({c: [(k, s) for k, s in objs] for c, objs in sources.items()}),
            sources=sources, files=entries, rows=rows, digests=digests,
            duplicates={c: h for c, h in manifest.duplicates.items() if c != cloud_id},
            partial={c: h for c, h in manifest.partial.items() if c != cloud_id},
            created_at=round(time.time(), 3),
        )  # fmt: skip
        for kind in KINDS:
            if manifest.rows.get(kind, 0) - removed[kind] != rows[kind]:
                raise ArchiveError(f"erasing from {day}: {kind} rows do not add up; nothing was replaced.",
                                   kind="integrity")  # fmt: skip
        self.compactor.verify(new)  # read back: rows and every column's digest
        self.compactor.publish(new)
        return new, removed

    def _filtered(self, source: Path, dest: Path, cloud_id: str, digest: RowDigest) -> tuple[int, int]:
        """The file without the household's rows (row groups kept as they were); (kept, removed)."""
        pf = pq.ParquetFile(source)
        try:
            holding = {
                i for i in range(pf.metadata.num_row_groups) if may_hold(pf.metadata.row_group(i), cloud_id)
            }
            if not holding:
                for i in range(pf.metadata.num_row_groups):
                    digest.table(pf.read_row_group(i))
                shutil.copyfile(source, dest)  # none of its rows: the same bytes
                return pf.metadata.num_rows, 0
            kept = gone = 0
            writer = None
            sorted_by = tuple(
                pf.schema_arrow.names[c.column_index] for c in pf.metadata.row_group(0).sorting_columns
            )
            for i in range(pf.metadata.num_row_groups):
                table = pf.read_row_group(i)
                if i in holding:
                    before = table.num_rows
                    table = table.filter(pc.not_equal(table.column("cloud_id"), pa.scalar(cloud_id)))
                    gone += before - table.num_rows
                if table.num_rows == 0:
                    continue
                digest.table(table)
                writer = writer or parquet_writer(dest, table.schema, sorted_by or ("cloud_id", "time"))
                writer.write_table(table, row_group_size=table.num_rows)
                kept += table.num_rows
            if writer is not None:
                writer.close()
            return kept, gone
        finally:
            pf.close()

    def _erase_older(self, day: str, keep: int) -> int:
        """Every older version's files and manifests of the day, and every older stored version
        of any of its objects (a versioned bucket keeps them)."""
        prefixes = [f"{ROOT}/kind={k}/date={day}/" for k in KINDS] + [f"{ROOT}/_manifests/date={day}/"]
        gone = 0
        for prefix in prefixes:
            stale = {o.key for o in self.archive.list(prefix)} | set(self.archive.old_versions(prefix))
            for key in sorted(k for k in stale if _version(k) < keep):
                gone += self.archive.erase(key).versions
        return gone


def _version(key: str) -> int:
    name = key.rsplit("/", 1)[1]
    return int(name[1:5]) if name[:1] == "v" and name[1:5].isdigit() else 0
