"""`rainforest compact --day YYYY-MM-DD`: a closed, shipped UTC day as Parquet beside its hourly objects.

For every device with hourly objects that day (in cloud_id order): every part merged, repeats
dropped and rows in time order by the rule of `app.research.merge`, read by Arrow's JSON reader
into columns (`app.research.frames`; a device with lines not as this version writes them is read
line by line), into one file set per kind, each file rolled
at about FILE_BYTES (64–256 MB for a fleet; a small day is one small file), sorted by cloud_id
then time so a query for one household reads few row groups. The hourly `.jl.gz` objects stay the
source of truth and are never touched.

Never overwriting, idempotent, verified:
- a day's files and manifest carry a version; a new version takes the next unused number;
- the manifest records the source objects (key and size): compacting again with the same sources
  does nothing; a late part (a further part of an hour of that day) makes a new version;
- every file is read back from the archive: the digest of every column and the row count must
  equal those of the rows made, and the rows of a sample of devices (the first, and one in
  SAMPLE_EVERY) must equal those their lines make when read line by line (`frames.by_lines`, a
  second reading of the line-kind contract), before the manifest is written; only then are the
  older versions' files removed (they are derived data).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.archive.backend import Archive, Upload, file_digests, gunzip_object
from app.archive.layout import ROOT as HOURLY_ROOT
from app.archive.layout import parse_key
from app.erasure.marks import NONE, Marks
from app.errors import ArchiveError, Interrupted, ValidationError
from app.hours import Day, Hour
from app.research import frames
from app.research.days import DayManifest, current, file_key, manifest_key, versions
from app.research.parquet import KindWriter
from app.research.schema import KINDS, SCHEMAS
from app.settings import Settings

log = logging.getLogger(__name__)
FILE_BYTES = 128 * 2**20
# Row groups of about 36 household-days: few enough that readers parse little metadata (a query
# for one household over a week of 1,000 households: 12 ms in DuckDB, against 110 ms with groups of
# one household-day), small enough that one is buffered in memory while written (~60 MB).
ROW_GROUP_ROWS = 512 * 1024
FETCH_THREADS = 8  # devices fetched at once; read (outside the GIL) on at most one thread per CPU
SAMPLE_EVERY = 256  # one device in this many is also read line by line, to check the columnar reader


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
    how the rows are cut into batches, row groups or files: of the rows as made, and of the files
    read back."""

    def __init__(self, kind: str) -> None:
        self.schema = SCHEMAS[kind]
        self.rows = 0
        self._h = {(f.name, part): hashlib.sha256() for f in self.schema for part in ("null", "size", "data")}

    def table(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        for f in self.schema:
            for chunk in table.column(f.name).chunks:
                self._array(f, chunk)

    def _array(self, f: pa.Field[Any], array: pa.Array[Any]) -> None:
        """Which values are null, their lengths (text) and their bytes (fixed width: the machine
        form), each its own stream, so that the digest does not depend on how rows are chunked.
        An array without nulls (most are) is digested from its buffers as they are."""
        whole = array.null_count == 0
        if whole:
            self._h[f.name, "null"].update(bytes(len(array)))
        else:
            nulls = cast("pa.Array[Any]", pc.is_null(array)).cast(pa.uint8())
            self._h[f.name, "null"].update(_data(nulls, 1))
        h = self._h[f.name, "data"]
        if pa.types.is_string(f.type):
            offsets = array.buffers()[1]
            if whole and offsets is not None and len(array):
                bounds = np.frombuffer(memoryview(offsets), np.int32, len(array) + 1, array.offset * 4)
                self._h[f.name, "size"].update(np.diff(bounds).astype(np.int64).data)
            else:
                lengths = cast("pa.Array[Any]", pc.fill_null(pc.binary_length(array), 0)).cast(pa.int64())  # type: ignore[call-overload]
                self._h[f.name, "size"].update(_data(lengths, 8))
            data = array.buffers()[2]
            if offsets is not None and data is not None and len(array):
                ends = memoryview(offsets).cast("i")
                h.update(memoryview(data)[ends[array.offset] : ends[array.offset + len(array)]])
        else:
            width = f.type.bit_width // 8
            filled = array if whole else cast("pa.Array[Any]", pc.fill_null(array, pa.scalar(0, f.type)))
            h.update(_data(filled, width))

    def hexdigest(self) -> str:
        return hashlib.sha256("".join(h.hexdigest() for h in self._h.values()).encode()).hexdigest()


class Restated:
    """A kind's columns from lines by the line-kind contract (DESIGN "Line kinds", schema.py)
    restated here on purpose, not `schema.Columns`: a sampled device's rows made so check both
    the columnar reader's conversion and `Columns`'s (a column filled from the wrong field, a
    time a millisecond off, a value dropped). A missing or mistyped value is null."""

    def __init__(self, kind: str) -> None:
        self.schema = SCHEMAS[kind]
        self._expect = [(_LINE_FIELD.get(f.name, f.name), _expected(f.type)) for f in self.schema]
        self._data: list[list[Any]] = [[] for _ in self.schema]

    def add(self, record: dict[str, Any]) -> None:
        for column, (name, expect) in zip(self._data, self._expect, strict=True):
            column.append(expect(record.get(name)))

    def table(self) -> pa.Table:
        arrays = [pa.array(column, type=f.type) for column, f in zip(self._data, self.schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=self.schema)


_LINE_FIELD = {"time": "device_time"}  # a column → the line's field it comes from, where they differ


def _expected(kind: pa.DataType) -> Callable[[Any], Any]:
    """What a column of this type must hold for a line's value."""
    if pa.types.is_timestamp(kind):
        return lambda v: round(v * 1000) if type(v) in (int, float) else None
    if pa.types.is_floating(kind):
        return lambda v: float(v) if type(v) in (int, float) else None
    if pa.types.is_integer(kind):
        return lambda v: v if type(v) is int else None
    return lambda v: None if v is None else str(v)


def _data(array: pa.Array[Any], width: int) -> memoryview:
    """The slice of a fixed-width array's value buffer that holds its values."""
    data = array.buffers()[1]
    assert data is not None
    return memoryview(data)[array.offset * width : (array.offset + len(array)) * width]


class _KindFiles:
    """One kind's rows of the day into files of about FILE_BYTES, digested as they are written."""

    def __init__(self, kind: str, day: str, version: int, work: Path) -> None:
        self.kind, self.day, self.version, self.work = kind, day, version, work
        self.digest = RowDigest(kind)
        self.done: list[tuple[str, Path, int]] = []  # (key, path, rows)
        self._writer: KindWriter | None = None

    def add(self, merged: frames.Merged) -> None:
        """A device's rows of this kind, digested whole and written release by release (a file
        rolls only between two releases, as it always has)."""
        self.digest.table(merged.tables[self.kind])
        for rows in merged.units(self.kind):
            self._write(rows)

    def _write(self, rows: pa.Table) -> None:
        if self._writer is None:
            n = len(self.done)
            path = self.work / f"{self.kind}-{n:03d}.parquet"
            self._writer = KindWriter(
                path,
                self.kind,
                ("cloud_id", "time"),
                row_group_rows=ROW_GROUP_ROWS,
            )
        self._writer.add_table(rows)
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
        # Devices are read on as many threads as there are CPUs to run them: more only take turns
        # (8 threads on 2 CPUs took a tenth longer over a day than 2, and more CPU), while more
        # fetches than CPUs keep a slow archive busy.
        self._cpu = threading.BoundedSemaphore(len(os.sched_getaffinity(0)))

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
        samples: list[Sample] = []
        for cid, merged, reference in self._devices(day, sources):
            if should_stop():
                raise Interrupted(f"compaction of {day} stopped part-way (before {cid})")
            if merged.duplicates:
                duplicates[cid] = {str(hour): n for hour, n in merged.duplicates.items()}
            if merged.partial:
                partial[cid] = {str(hour): n for hour, n in merged.partial.items()}
            if reference is not None:
                samples.append(Sample(cid, reference, {kind: files[kind].digest.rows for kind in KINDS}))
            for kind_files in files.values():
                kind_files.add(merged)
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
        self.verify(manifest, samples)
        return manifest

    def _devices(
        self, day: str, sources: dict[str, list[tuple[str, int]]]
    ) -> Iterator[tuple[str, frames.Merged, frames.Merged | None]]:
        """Each device's merged rows, in cloud_id order, with its rows read line by line when it is
        one of the sample. Devices are fetched and read FETCH_THREADS at a time, at most twice
        that many ahead of the one being written: memory holds a few device-days, whatever the fleet."""
        ids = sorted(sources)
        sampled = {ids[0], *(c for c in ids if zlib.crc32(f"{day}/{c}".encode()) % SAMPLE_EVERY == 0)}
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            coming: deque[Future[tuple[frames.Merged, frames.Merged | None]]] = deque()
            for n, cid in enumerate(ids):
                while len(coming) < 2 * FETCH_THREADS and n + len(coming) < len(ids):
                    ahead = ids[n + len(coming)]
                    coming.append(pool.submit(self._read_device, ahead, sources[ahead], ahead in sampled))
                merged, reference = coming.popleft().result()
                yield cid, merged, reference

    def _read_device(
        self, cid: str, objects: list[tuple[str, int]], sampled: bool
    ) -> tuple[frames.Merged, frames.Merged | None]:
        fetched = [(key, self._fetch(key)) for key, _ in objects]
        with self._cpu:  # fetches wait on the archive; the reading itself on a CPU
            data = [(_hour_of(key), gunzip_object(key, gz)) for key, gz in fetched]
            del fetched
            reference = frames.by_lines(data, Restated) if sampled else None
            try:
                return frames.merge(frames.parse(data)), reference
            except frames.Unusual as why:
                log.info("read a device's day line by line", extra={"cloud_id": cid, "reason": str(why)})
                return frames.by_lines(data), reference

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

    def verify(self, manifest: DayManifest, samples: Sequence[Sample] = ()) -> None:
        """Read every file back from the archive: rows and digest must equal what was made, and
        each sampled device's rows those its lines make when read line by line."""
        for kind in KINDS:
            again = RowDigest(kind)
            found: dict[str, list[pa.Table]] = {s.cloud_id: [] for s in samples}
            for entry in (f for f in manifest.files if f["kind"] == kind):
                with self.archive.open_read(entry["key"]) as f:
                    pf = pq.ParquetFile(f)
                    for i in range(pf.metadata.num_row_groups):
                        group, first = pf.read_row_group(i), again.rows
                        again.table(group)
                        for s in samples:
                            mine = s.rows_in(kind, group, first)
                            if mine is not None:
                                found[s.cloud_id].append(mine)
            if again.rows != manifest.rows[kind] or again.hexdigest() != manifest.digests[kind]:
                raise ArchiveError(
                    f"the compacted {kind} files of {manifest.day} read back as {again.rows} rows with "
                    f"another digest than the {manifest.rows[kind]} rows of the hourly objects' lines; "
                    "nothing was replaced.",
                    kind="integrity",
                )
            for s in samples:
                got, want = _joined(found[s.cloud_id], kind), s.reference.tables[kind]
                if not got.equals(want):
                    raise ArchiveError(
                        f"the compacted {kind} files of {manifest.day} read back as {got.num_rows} rows of "
                        f"{s.cloud_id} unlike the {want.num_rows} rows its hourly objects' lines make when "
                        "read line by line; nothing was replaced.",
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


@dataclass
class Sample:
    """A device whose rows are checked against its lines read line by line: where its rows start
    in each kind's files, and what they must be."""

    cloud_id: str
    reference: frames.Merged
    first: dict[str, int]  # kind → the device's first row among the kind's rows of the day

    def rows_in(self, kind: str, group: pa.Table, first: int) -> pa.Table | None:
        """The device's rows in a row group that starts at row `first` of the kind's rows (a copy:
        a slice would keep the whole group in memory), or None when it holds none."""
        start = self.first[kind]
        end = start + self.reference.tables[kind].num_rows
        lo, hi = max(start, first), min(end, first + group.num_rows)
        return group.take(np.arange(lo - first, hi - first)) if hi > lo else None


def _joined(tables: list[pa.Table], kind: str) -> pa.Table:
    return pa.concat_tables(tables) if tables else SCHEMAS[kind].empty_table()


def _hour_of(key: str) -> int:
    parsed = parse_key(key)
    assert parsed is not None  # `sources` lists only keys that parse
    return Hour.parse(parsed[0].hour).start


def sources_digest(sources: dict[str, list[tuple[str, int]]]) -> str:
    h = hashlib.sha256()
    for cid in sorted(sources):
        for key, size in sources[cid]:
            h.update(f"{key}\t{size}\n".encode())
    return h.hexdigest()
