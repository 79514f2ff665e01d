"""`rainforest compact --day YYYY-MM-DD`: a closed, shipped UTC day as Parquet beside its hourly objects.

For every device with hourly objects that day (in cloud_id order): every part merged, repeats
dropped (`app.research.merge`), rows in time order, into one file set per kind, each file rolled
at about FILE_BYTES (64–256 MB for a fleet; a small day is one small file), sorted by cloud_id
then time so a query for one household reads few row groups. The hourly `.jl.gz` objects stay the
source of truth and are never touched.

Never overwriting, idempotent, verified:
- a day's files and manifest carry a version; a new version takes the next unused number;
- the manifest records the source objects (key and size): compacting again with the same sources
  does nothing; a late part (a further part of an hour of that day) makes a new version;
- every file is read back from the archive, and the digest of every column and the row count
  must equal those worked out from the source lines before the manifest is written; only then
  are the older versions' files removed (they are derived data).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app import lines
from app.archive.backend import Archive, Upload, file_digests, gunzip_chunks
from app.archive.layout import ROOT as HOURLY_ROOT
from app.archive.layout import parse_key
from app.erasure.marks import NONE, Marks
from app.errors import ArchiveError, Interrupted, ValidationError
from app.hours import Day, Hour
from app.research.days import DayManifest, current, file_key, manifest_key, versions
from app.research.merge import DeviceLines
from app.research.parquet import KindWriter
from app.research.schema import KINDS, SCHEMAS
from app.settings import Settings

log = logging.getLogger(__name__)
FILE_BYTES = 128 * 2**20
# Row groups of about 36 household-days: few enough that readers parse little metadata (a query
# for one household over a week of 1,000 households: 12 ms in DuckDB, against 110 ms with groups of
# one household-day), small enough that one is buffered in memory while written (~60 MB).
ROW_GROUP_ROWS = 512 * 1024
FETCH_THREADS = 8


@dataclass
class Compacted:
    """What one `compact` did."""

    day: str
    version: int | None  # None: nothing to do (already compacted from these sources, or no data)
    devices: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    note: str = ""

    def fields(self) -> dict[str, Any]:
        return {"day": self.day, "version": self.version, "devices": self.devices, "files": self.files,
                "bytes": self.bytes, "duplicates": self.duplicates, "seconds": round(self.seconds, 2),
                **{f"{k}_rows": v for k, v in self.rows.items()}, "note": self.note}  # fmt: skip


def day_start(day: str) -> int:
    """Unix seconds of a YYYY-MM-DD UTC day's start; a ValidationError naming the format otherwise."""
    try:
        return Day.parse(day).start
    except ValidationError:
        raise ValidationError(f"--day must be a UTC day written YYYY-MM-DD, got {day!r}.") from None


class RowDigest:
    """A digest of every column of a kind's rows, one stream per column, that does not depend on
    how the rows are cut into batches, row groups or files.

    `lines` digests what each column must hold, worked out from the merged source lines themselves
    (the line-kind contract restated here on purpose: a mistake in the writer's conversion, a
    column filled from the wrong field or dropped, then shows as a mismatch); `table` digests what
    a Parquet file read back does hold. A missing or mistyped value is null."""

    def __init__(self, kind: str) -> None:
        self.schema = SCHEMAS[kind]
        self.rows = 0
        self._h = {(f.name, part): hashlib.sha256() for f in self.schema for part in ("null", "size", "data")}
        self._expect = [(f, _LINE_FIELD.get(f.name, f.name), _expected(f.type)) for f in self.schema]

    def lines(self, records: list[dict[str, Any]]) -> None:
        self.rows += len(records)
        for f, field_name, expect in self._expect:
            self._array(f, pa.array([expect(r.get(field_name)) for r in records], type=f.type))

    def table(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        for f in self.schema:
            for chunk in table.column(f.name).chunks:
                self._array(f, chunk)

    def _array(self, f: pa.Field[Any], array: pa.Array[Any]) -> None:
        """Which values are null, their lengths (text) and their bytes (fixed width: the machine
        form), each its own stream, so that the digest does not depend on how rows are chunked."""
        self._h[f.name, "null"].update(_data(cast("pa.Array[Any]", pc.is_null(array)).cast(pa.uint8()), 1))
        h = self._h[f.name, "data"]
        if pa.types.is_string(f.type):
            lengths = cast("pa.Array[Any]", pc.fill_null(pc.binary_length(array), 0)).cast(pa.int64())  # type: ignore[call-overload]
            self._h[f.name, "size"].update(_data(lengths, 8))
            offsets = array.buffers()[1]
            data = array.buffers()[2]
            if offsets is not None and data is not None and len(array):
                ends = memoryview(offsets).cast("i")
                h.update(memoryview(data)[ends[array.offset] : ends[array.offset + len(array)]])
        else:
            width = f.type.bit_width // 8
            h.update(_data(cast("pa.Array[Any]", pc.fill_null(array, pa.scalar(0, f.type))), width))

    def hexdigest(self) -> str:
        return hashlib.sha256("".join(h.hexdigest() for h in self._h.values()).encode()).hexdigest()


def _data(array: pa.Array[Any], width: int) -> memoryview:
    """The slice of a fixed-width array's value buffer that holds its values."""
    data = array.buffers()[1]
    assert data is not None
    return memoryview(data)[array.offset * width : (array.offset + len(array)) * width]


_LINE_FIELD = {"time": "device_time"}  # a column → the line's field it comes from, where they differ


def _expected(kind: pa.DataType) -> Callable[[Any], Any]:
    """What a column of this type must hold for a line's value (DESIGN "Line kinds", schema.py)."""
    if pa.types.is_timestamp(kind):
        return lambda v: round(v * 1000) if type(v) in (int, float) else None
    if pa.types.is_floating(kind):
        return lambda v: float(v) if type(v) in (int, float) else None
    if pa.types.is_integer(kind):
        return lambda v: v if type(v) is int else None
    return lambda v: None if v is None else str(v)


class _KindFiles:
    """One kind's rows of the day into files of about FILE_BYTES, digested as they are written."""

    def __init__(self, kind: str, day: str, version: int, work: Path) -> None:
        self.kind, self.day, self.version, self.work = kind, day, version, work
        self.digest = RowDigest(kind)
        self.done: list[tuple[str, Path, int]] = []  # (key, path, rows)
        self._writer: KindWriter | None = None

    def add(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.digest.lines(rows)
        if self._writer is None:
            n = len(self.done)
            path = self.work / f"{self.kind}-{n:03d}.parquet"
            self._writer = KindWriter(
                path,
                self.kind,
                ("cloud_id", "time"),
                row_group_rows=ROW_GROUP_ROWS,
            )
        self._writer.add(rows)
        if self._writer.size() >= FILE_BYTES:
            self._roll()

    def close(self) -> None:
        if self._writer is not None:
            self._roll()

    def _roll(self) -> None:
        assert self._writer is not None
        rows = self._writer.close()
        if rows:
            key = file_key(self.kind, self.day, self.version, len(self.done))
            self.done.append((key, self._writer.path, rows))
        self._writer = None


class Compactor:
    def __init__(
        self, settings: Settings, archive: Archive, clock: Any = time.time, marks: Marks = NONE
    ) -> None:
        self.settings, self.archive, self.clock = settings, archive, clock
        self.marks = marks  # erased households: their hours before the erasure are never compacted

    def check_closed(self, day: str) -> None:
        """A day is compacted once it ended (plus ROTATE_GRACE_S) and this host shipped all of it."""
        start = day_start(day)
        ready_at = start + 86400 + self.settings.rotate_grace_s
        if self.clock() < ready_at:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ready_at))
            raise ValidationError(f"{day} is not over and shipped yet; it can be compacted from {when}.")
        local = sorted(self.settings.logs_dir.glob(f"{day}-??/*.jl"))
        if local:
            raise ValidationError(
                f"{len(local)} hourly files of {day} are not shipped yet (e.g. {local[0].name}); "
                "run `rainforest rotate` first."
            )

    def sources(self, day: str) -> dict[str, list[tuple[str, int]]]:
        """cloud_id → the day's hourly objects (key, size), hour and part order."""
        y, m, d = day.split("-")
        devices = [c for c in self.archive.children(f"{HOURLY_ROOT}/") if len(c) == 6]

        def listed(cid: str) -> tuple[str, list[tuple[str, int]]]:
            found = []
            for obj in self.archive.list(f"{HOURLY_ROOT}/{cid}/{y}/{m}/{d}/"):
                parsed = parse_key(obj.key)
                if parsed is None or not parsed[0].hour.startswith(day) or parsed[0].cloud_id != cid:
                    continue
                if not self.marks.erased(cid, Hour.parse(parsed[0].hour).start):
                    found.append((parsed[0].hour, parsed[1], obj.key, obj.size))
            return cid, [(key, size) for _, _, key, size in sorted(found)]

        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            return {cid: objs for cid, objs in pool.map(listed, devices) if objs}

    def compact(
        self, day: str, check: bool = True, should_stop: Callable[[], bool] = lambda: False
    ) -> Compacted:
        """Compact one day (see the module's docstring); returns what it did. `should_stop` is
        asked between devices and before publishing: Interrupted when it says yes."""
        started = time.monotonic()
        self._clean_tmp()
        if check:
            self.check_closed(day)
        else:
            day_start(day)
        sources = self.sources(day)
        digest = sources_digest(sources)
        existing = current(self.archive, day)
        if not sources:
            return Compacted(day, None, note="no hourly objects that day")
        if existing is not None and existing.sources_sha256 == digest:
            self._supersede(day, existing.version)  # what an earlier run could not remove
            note = f"already compacted (version {existing.version}) from these hourly objects"
            return Compacted(day, None, devices=len(sources), rows=existing.rows, note=note)
        version = max(versions(self.archive, day), default=0) + 1
        work = Path(tempfile.mkdtemp(prefix=f"compact-{day}-{os.getpid()}-", dir=self._tmp()))
        try:
            manifest = self._build(day, version, sources, digest, work, should_stop)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if should_stop():
            raise Interrupted(f"compaction of {day} stopped before publishing version {version}")
        manifest.seconds = round(time.monotonic() - started, 2)
        self.publish(manifest)
        self._supersede(day, version)
        done = Compacted(day, version, devices=len(sources), rows=manifest.rows, files=len(manifest.files),
                         bytes=sum(f["bytes"] for f in manifest.files),
                         duplicates=sum(sum(h.values()) for h in manifest.duplicates.values()),
                         seconds=time.monotonic() - started,
                         note="recompacted: the hourly objects changed" if existing else "")  # fmt: skip
        log.info("compacted a day", extra=done.fields())
        return done

    def _tmp(self) -> Path:
        tmp = self.settings.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def _clean_tmp(self) -> None:
        """Remove the work folders of compactions whose process is gone (killed mid-run)."""
        for folder in self._tmp().glob("compact-*"):
            match = _WORK_RE.match(folder.name)
            if match is not None and not _alive(int(match.group(1))):
                shutil.rmtree(folder, ignore_errors=True)
                log.info("removed a killed compaction's work folder", extra={"path": str(folder)})

    def _build(
        self,
        day: str,
        version: int,
        sources: dict[str, list[tuple[str, int]]],
        digest: str,
        work: Path,
        should_stop: Callable[[], bool],
    ) -> DayManifest:
        files = {kind: _KindFiles(kind, day, version, work) for kind in KINDS}
        duplicates: dict[str, dict[str, int]] = {}
        partial: dict[str, dict[str, int]] = {}
        for cid, hours in self._device_hours(sources, work):
            if should_stop():
                raise Interrupted(f"compaction of {day} stopped part-way (before {cid})")
            merged = DeviceLines()
            for hour, (records, bad) in hours:
                count, released = merged.add_hour(hour, records, bad)
                if count.duplicates:
                    duplicates.setdefault(cid, {})[str(hour)] = count.duplicates
                if bad:
                    partial.setdefault(cid, {})[str(hour)] = bad
                for kind, rows in released.items():
                    if kind in files:
                        files[kind].add(rows)
            for kind, rows in merged.finish().items():
                if kind in files:
                    files[kind].add(rows)
        entries: list[dict[str, Any]] = []
        for kind_files in files.values():
            kind_files.close()
            for key, path, rows_written in kind_files.done:
                entries.append(self.upload(key, path, kind_files.kind, rows_written))
        manifest = DayManifest(
            day=day, version=version, sources_sha256=digest,
            sources={cid: [[k, s] for k, s in objs] for cid, objs in sources.items()},
            files=entries, rows={k: f.digest.rows for k, f in files.items()},
            digests={k: f.digest.hexdigest() for k, f in files.items()},
            duplicates=duplicates, partial=partial, created_at=round(self.clock(), 3),
        )  # fmt: skip
        self.verify(manifest)
        return manifest

    def _device_hours(
        self, sources: dict[str, list[tuple[str, int]]], work: Path
    ) -> Iterator[tuple[str, list[tuple[int, tuple[list[dict[str, Any]], int]]]]]:
        """Each device's hours (records of all parts, unreadable lines), in cloud_id order. The next
        device's objects are fetched (compressed) while this one is parsed: memory holds one
        device-day of lines, whatever the fleet."""
        ids = sorted(sources)
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            coming = [pool.submit(self._fetch, key) for key, _ in sources[ids[0]]] if ids else []
            for n, cid in enumerate(ids):
                fetched = coming
                if n + 1 < len(ids):
                    coming = [pool.submit(self._fetch, key) for key, _ in sources[ids[n + 1]]]
                by_hour: dict[int, tuple[list[dict[str, Any]], int]] = {}
                for (key, _), future in zip(sources[cid], fetched, strict=True):
                    parsed = parse_key(key)
                    assert parsed is not None
                    hour = Hour.parse(parsed[0].hour).start
                    records, bad = by_hour.get(hour, ([], 0))
                    more, more_bad = _parse(key, future.result())
                    by_hour[hour] = (records + more, bad + more_bad)
                yield cid, sorted(by_hour.items())

    def _fetch(self, key: str) -> bytes:
        with self.archive.open_read(key) as f:
            return f.read()

    def upload(self, key: str, path: Path, kind: str, rows: int) -> dict[str, Any]:
        sha, md5 = file_digests(path)  # a file can be 256 MB: streamed, never read whole
        size = path.stat().st_size
        upload = Upload(path, size, sha, md5, sha, size, rows, extra=(("rows", str(rows)), ("kind", kind)))
        if self.archive.put_new(key, upload) is None:
            raise ArchiveError(f"{key} already exists; compacting again picks a new version.", kind="error")
        return {"key": key, "kind": kind, "rows": rows, "bytes": size, "sha256": sha}

    def verify(self, manifest: DayManifest) -> None:
        """Read every file back from the archive: rows and digest must equal what was made."""
        for kind in KINDS:
            again = RowDigest(kind)
            for entry in (f for f in manifest.files if f["kind"] == kind):
                with self.archive.open_read(entry["key"]) as f:
                    pf = pq.ParquetFile(f)
                    for i in range(pf.metadata.num_row_groups):
                        again.table(pf.read_row_group(i))
            if again.rows != manifest.rows[kind] or again.hexdigest() != manifest.digests[kind]:
                raise ArchiveError(
                    f"the compacted {kind} files of {manifest.day} read back as {again.rows} rows with "
                    f"another digest than the {manifest.rows[kind]} rows of the hourly objects' lines; "
                    "nothing was replaced.",
                    kind="integrity",
                )

    def publish(self, manifest: DayManifest) -> None:
        key = manifest_key(manifest.day, manifest.version)
        body = manifest.to_json()
        with tempfile.NamedTemporaryFile(dir=self._tmp(), suffix=".json") as tmp:
            Path(tmp.name).write_bytes(body)
            sha = hashlib.sha256(body).hexdigest()
            upload = Upload(Path(tmp.name), len(body), sha, hashlib.md5(body, usedforsecurity=False).digest(),
                            sha, len(body), 1)  # fmt: skip
            if self.archive.put_new(key, upload) is None:
                raise ArchiveError(
                    f"{key} already exists; compacting again picks a new version.", kind="error"
                )

    def _supersede(self, day: str, version: int) -> None:
        """Remove older versions' files and manifests, now that this one is confirmed."""
        for kind in KINDS:
            for obj in self.archive.list(f"{file_key(kind, day, 0, 0).rsplit('/', 1)[0]}/"):
                if int(obj.key.rsplit("/", 1)[1][1:5]) < version:
                    self.archive.delete(obj.key)
        for obj in self.archive.list(f"{manifest_key(day, 0).rsplit('/', 1)[0]}/"):
            if int(obj.key.rsplit("/", 1)[1][1:5]) < version:
                self.archive.delete(obj.key)


_WORK_RE = re.compile(r"^compact-\d{4}-\d{2}-\d{2}-(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse(key: str, gz: bytes) -> tuple[list[dict[str, Any]], int]:
    """The lines of one hourly object, and how many could not be read (a crash's cut last line)."""
    try:
        data = b"".join(gunzip_chunks([gz]))
    except Exception as exc:  # zlib.error: not gzip
        raise ArchiveError(f"{key} is not a readable gzip object: {exc}", kind="integrity") from exc
    result = lines.parse(data)
    return result.records, result.partial


def sources_digest(sources: dict[str, list[tuple[str, int]]]) -> str:
    h = hashlib.sha256()
    for cid in sorted(sources):
        for key, size in sources[cid]:
            h.update(f"{key}\t{size}\n".encode())
    return h.hexdigest()
