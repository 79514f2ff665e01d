"""Benchmark: erasing one household from a 30-day compacted archive of 1,000 households.

1. Writes DAYS compacted days of DEVICES households straight as the compaction lays them out
   (demand rows sorted by cloud_id then time, row groups of ROW_GROUP_ROWS, zstd, a manifest per
   day listing every household's sources), one reading per household every STEP_S seconds
   (default 60: a tenth of the real rate, so the bench runs in minutes; the figures scale with
   the rows), plus the household's own hourly objects (24 a day) in a file:// archive.
2. Erases the household from the archive as `participants withdraw --erase` does (its hourly
   objects, then every day rewritten without it, verified, the old versions removed): time,
   objects rewritten, bytes read and written.
3. The reference doing the same work the plain way: every day's every file read whole, filtered
   and written again (no row-group statistics, no copying of files that do not hold it, no
   read-back): time and bytes. The ratio is the reference's time over the erasure's.

Redis's part (one pass over every key) is not in these figures.

    .venv/bin/python bench/erase.py                     # 1,000 households, 30 days
    .venv/bin/python bench/erase.py --devices 100 --days 5

The last line is key=value.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.archive.factory import open_archive  # noqa: E402
from app.archive.layout import DeviceHour  # noqa: E402
from app.erasure.hourly import erase_hourly  # noqa: E402
from app.erasure.parquet import DayEraser  # noqa: E402
from app.research.compact import ROW_GROUP_ROWS, Compactor, sources_digest  # noqa: E402
from app.research.days import DayManifest, file_key, manifest_key  # noqa: E402
from app.research.parquet import parquet_writer  # noqa: E402
from app.research.schema import SCHEMAS  # noqa: E402
from app.settings import Settings  # noqa: E402


def day_table(ids: list[str], day_start: int, step_s: int) -> pa.Table:
    """Every household's demand rows of one day, sorted by cloud_id then time."""
    per = 86400 // step_s
    n = len(ids) * per
    times = np.tile(np.arange(per, dtype=np.int64) * step_s * 1000 + day_start * 1000, len(ids))
    rng = np.random.default_rng(day_start)
    columns = {
        "cloud_id": pa.array(np.repeat(np.array(ids, dtype=object), per), pa.string()),
        "time": pa.array(times, SCHEMAS["demand"].field("time").type),
        "demand_kw": pa.array(np.round(rng.gamma(2.0, 0.4, n), 3)),
        "DeviceMacId": pa.array(np.repeat(np.arange(len(ids), dtype=np.uint64) + 0xD8D5B9000000, per)),
        "MeterMacId": pa.array(np.repeat(np.arange(len(ids), dtype=np.uint64) + 0x0013500300000000, per)),
        "TimeStamp": pa.array(times // 1000 - 946684800),
        "Demand": pa.array(rng.integers(0, 5000, n)),
        "Multiplier": pa.array(np.ones(n, dtype=np.int64)),
        "Divisor": pa.array(np.full(n, 1000, dtype=np.int64)),
        "DigitsRight": pa.array(np.full(n, 3, dtype=np.int32)),
        "DigitsLeft": pa.array(np.full(n, 6, dtype=np.int32)),
        "SuppressLeadingZero": pa.array(["Y"] * n),
        "polled_at": pa.array(times + 2000, SCHEMAS["demand"].field("polled_at").type),
        "source": pa.array(["eagle200-local"] * n),
    }
    return pa.table(columns, schema=SCHEMAS["demand"])


def write_archive(settings: Settings, ids: list[str], target: str, days: list[int], step_s: int) -> int:
    """The compacted days, and the household's hourly objects; returns the Parquet bytes."""
    archive_root = Path(settings.archive_url[len("file://") :])
    total = 0
    for day_start in days:
        day = time.strftime("%Y-%m-%d", time.gmtime(day_start))
        table = day_table(ids, day_start, step_s)
        path = archive_root / file_key("demand", day, 1, 0)
        writer = parquet_writer(path, table.schema, ("cloud_id", "time"))
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        writer.close()
        size = path.stat().st_size
        total += size
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        sources = {
            cid: [[f"rainforest-logs/{cid}/{day.replace('-', '/')}/x-{cid}-{day}-00.jl.gz", 1]] for cid in ids
        }
        for h in range(24):
            key = DeviceHour(f"{day}-{h:02d}", target, "iseif-rainforest").key()
            dest = archive_root / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(gzip.compress(b'{"cloud_id": "%s"}\n' % target.encode()))
        manifest = DayManifest(
            day=day,
            version=1,
            sources_sha256=sources_digest({c: [(k, s) for k, s in v] for c, v in sources.items()}),
            sources=sources,
            files=[
                {
                    "key": file_key("demand", day, 1, 0),
                    "kind": "demand",
                    "rows": table.num_rows,
                    "bytes": size,
                    "sha256": sha,
                }
            ],
            rows={"demand": table.num_rows, "summation": 0, "price": 0},
            digests={},
            created_at=time.time(),
        )
        mpath = archive_root / manifest_key(day, 1)
        mpath.parent.mkdir(parents=True, exist_ok=True)
        mpath.write_bytes(manifest.to_json())
    return total


def reference(settings: Settings, target: str, work: Path) -> tuple[float, int, int]:
    """Every file read whole, filtered and written again: seconds, bytes read, bytes written."""
    archive_root = Path(settings.archive_url[len("file://") :])
    started, read, written = time.perf_counter(), 0, 0
    for path in sorted(archive_root.glob("rainforest-parquet/kind=*/date=*/*.parquet")):
        read += path.stat().st_size
        table = pq.read_table(path)
        table = table.filter(pc.not_equal(table.column("cloud_id"), pa.scalar(target)))
        out = work / "ref.parquet"
        writer = parquet_writer(out, table.schema, ("cloud_id", "time"))
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        writer.close()
        written += out.stat().st_size
    return time.perf_counter() - started, read, written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--step-s", type=int, default=60, help="seconds between a household's readings")
    args = parser.parse_args()
    ids = [f"{0x0A0000 + n:06x}" for n in range(args.devices)]
    target = ids[len(ids) // 2]
    first = int(time.time() // 86400 - args.days - 1) * 86400
    days = [first + d * 86400 for d in range(args.days)]
    with tempfile.TemporaryDirectory(prefix="bench-erase-") as tmp:
        base = Path(tmp)
        settings = Settings(data_dir=base / "data", archive_url=f"file://{base / 'archive'}", secret_key="x")
        made = time.perf_counter()
        parquet_bytes = write_archive(settings, ids, target, days, args.step_s)
        rows = args.devices * args.days * (86400 // args.step_s)
        print(
            f"archive: {args.days} days × {args.devices} households, {rows:,} demand rows, "
            f"{parquet_bytes / 1e6:.0f} MB of Parquet, written in {time.perf_counter() - made:.0f} s",
            flush=True,
        )
        (base / "ref").mkdir()
        ref_s, ref_read, ref_written = reference(settings, target, base / "ref")
        print(
            f"reference (every file read whole, filtered, written again): {ref_s:.1f} s, "
            f"read {ref_read / 1e6:.0f} MB, wrote {ref_written / 1e6:.0f} MB",
            flush=True,
        )
        archive = open_archive(settings)
        started = time.perf_counter()
        hourly = erase_hourly(archive, target)
        eraser = DayEraser(Compactor(settings, archive), settings.data_dir / "tmp")
        days_done = eraser.erase(target)
        seconds = time.perf_counter() - started
        removed = sum(days_done["rows"].values())
        print(
            f"erasure: {seconds:.1f} s; {hourly['objects']} hourly objects erased; {days_done['days']} days "
            f"rewritten ({len(days_done['versions_rewritten'])} versions, {removed:,} rows removed, "
            f"{days_done['old_objects_erased']} old objects erased); read {eraser.read_bytes / 1e6:.0f} MB, "
            f"wrote {eraser.written_bytes / 1e6:.0f} MB (and read it all back to verify)",
            flush=True,
        )
        print(orjson.dumps(days_done["rows"]).decode())
        shutil.rmtree(base / "ref", ignore_errors=True)
    print(
        f"devices={args.devices} days={args.days} step_s={args.step_s} rows={rows} erase_s={seconds:.2f} "
        f"reference_s={ref_s:.2f} ratio={ref_s / seconds:.2f} days_rewritten={days_done['days']} "
        f"hourly_objects={hourly['objects']} bytes_read={eraser.read_bytes} "
        f"bytes_written={eraser.written_bytes} reference_bytes_read={ref_read} "
        f"reference_bytes_written={ref_written}"
    )


if __name__ == "__main__":
    main()
