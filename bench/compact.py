"""Benchmark: compacting one day of a fleet to Parquet, and querying the archive in place.

1. Writes one UTC day of 6-second demand readings for DEVICES devices (default 1,000: 14.4 M
   readings, the pinger's line format, values from the simulator's household model) and ships it
   to a file:// archive with rotate, as the running system would.
2. Runs `rainforest compact --day` on it as a process: seconds, MB of lines per second, peak RSS,
   rows, and the Parquet's size against the hourly .jl and .jl.gz. Beside it, on the same hourly
   objects: DuckDB's own `read_json` of them `COPY`ed to one zstd Parquet file (what a user would
   run instead: its types guessed, no repeats dropped, no order, no check), and `gzip -dc` of them
   to /dev/null (the floor: every byte must be inflated).
3. A week for one household: DuckDB over the compacted archive (`kind=demand/date=*/`) against
   reading that household's 168 hourly objects through the archive (list, fetch, gunzip, parse,
   aggregate): the same answer (readings and mean demand per day), each the best of three. The
   household's other six days are its own readings, written, shipped and compacted; the rest of
   the fleet on those days is the first day's rows moved on by whole days (the same size and
   layout as a real fleet day, without writing and compacting six more); on the file:// archive, and on an
   S3 server (moto's, over HTTP; DuckDB through pyarrow's S3 filesystem, which reads only the
   footers and row groups it needs).

Targets: compaction at least 0.5 of DuckDB's MB of lines per second, and a day of 1,000 households
in under 20 s (issue 25); the one-device week query at least 20× faster than reading the hourly
objects (issue 14).

    .venv/bin/python bench/compact.py                    # 1,000 devices
    .venv/bin/python bench/compact.py --devices 100      # quicker

The last line is key=value.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.archive.backend import Archive  # noqa: E402
from app.archive.factory import open_archive  # noqa: E402
from app.lines import parse as parse_lines  # noqa: E402
from app.research.compact import ROW_GROUP_ROWS, Compactor  # noqa: E402
from app.research.parquet import COMPRESSION, ZSTD_LEVEL  # noqa: E402
from app.rotate.runner import Rotator  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.cart import write_hours  # noqa: E402
from bench.pinger import free_port, port_open, wait_for  # noqa: E402


def write_day(
    settings: Settings, devices: int, day_start: int, only: str | None = None
) -> tuple[int, list[str]]:
    """600 readings per device-hour for a day (bench/cart.py's writer); the .jl bytes and cloud_ids."""
    ids = [f"{0x0C0000 + n:06x}" for n in range(devices)]
    return write_hours(settings, [only] if only else ids, day_start, 24), ids


def ship(settings: Settings) -> tuple[int, int]:
    report = asyncio.run(
        Rotator(settings.replace(rotate_concurrency=4), open_archive(settings), None).pass_once()
    )
    return report.stored, report.stored_bytes


def hourly_week(archive: Archive, cloud_id: str, days: list[str], tmp: Path) -> dict[str, tuple[int, float]]:
    """Readings and mean demand per day from the household's hourly objects, fetched through the
    archive as any reader of them must: list the day, fetch each part, gunzip, parse, drop repeats."""
    out = {}
    for day in days:
        y, m, d = day.split("-")
        n, total, seen = 0, 0.0, set()
        for obj in archive.list(f"rainforest-logs/{cloud_id}/{y}/{m}/{d}/"):
            archive.fetch(obj.key, tmp)
            for line in parse_lines(gzip.decompress(tmp.read_bytes())).records:
                if line.get("kind", "demand") != "demand" or line["device_time"] in seen:
                    continue
                seen.add(line["device_time"])
                n += 1
                total += float(line["demand_kw"])  # type: ignore[arg-type]
        out[day] = (n, round(total / n, 4) if n else 0.0)
    return out


WEEK_SQL = (
    "SELECT CAST(date AS VARCHAR), count(*), round(avg(demand_kw), 4) FROM {source} "
    "WHERE cloud_id = '{cid}' AND CAST(date AS VARCHAR) BETWEEN '{first}' AND '{last}' GROUP BY 1 ORDER BY 1"
)


def duckdb_week(source: str, cloud_id: str, days: list[str], con: Any = None) -> dict[str, tuple[int, float]]:
    sql = WEEK_SQL.format(source=source, cid=cloud_id, first=days[0], last=days[-1])
    rows = (con or duckdb).sql(sql).fetchall()
    return {day: (int(n), float(mean)) for day, n, mean in rows}


def stand_in_day(fleet_day: list[Path], household: str, n: int, folder: Path) -> None:
    """Day `n` of the week: the household's own compacted rows (in `folder`) and every other
    household's rows of the first day moved on by `n` days, in one file laid out as compaction lays
    out a fleet's day (sorted by cloud_id then time, its row groups, zstd, statistics)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    own = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
    shift = pa.scalar(n * 86400 * 1000, pa.int64())
    others = []
    for path in fleet_day:
        table = pq.read_table(path)
        table = table.filter(pc.not_equal(table.column("cloud_id"), household))
        for name in ("time", "polled_at"):
            moved = pc.add(table.column(name).cast(pa.int64()), shift).cast(table.schema.field(name).type)
            table = table.set_column(table.schema.get_field_index(name), name, moved)
        others.append(table)
    day = pa.concat_tables([*others, *own]).sort_by([("cloud_id", "ascending"), ("time", "ascending")])
    for path in folder.glob("*.parquet"):
        path.unlink()
    pq.write_table(
        day, folder / "part-000.parquet", row_group_size=ROW_GROUP_ROWS, compression=COMPRESSION,
        compression_level=ZSTD_LEVEL, write_statistics=True,
    )  # fmt: skip


def on_s3(work: Path, household: str, days: list[str]) -> tuple[float, float, bool]:
    """The same week on an S3 server (moto's, over HTTP): DuckDB over the Parquet through pyarrow's
    S3 filesystem (ranged reads of the row groups it needs) against fetching the hourly objects."""
    import boto3
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    port = free_port()
    server = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
    moto = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), "moto_server")
        endpoint, key = (
            f"http://127.0.0.1:{port}",
            {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"},
        )
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **key)
        s3.create_bucket(Bucket="bench")
        local = work / "archive"
        for path in [*local.rglob("*.parquet"), *(local / "rainforest-logs" / household).rglob("*.jl.gz")]:
            s3.upload_file(str(path), "bench", f"study/{path.relative_to(local).as_posix()}")
        settings = Settings(
            archive_url="s3://bench/study", s3_endpoint_url=endpoint, aws_access_key_id="bench",
            aws_secret_access_key="bench", aws_region="us-east-1", data_dir=work / "data",
        )  # fmt: skip
        archive = open_archive(settings)
        fs = pafs.S3FileSystem(access_key="bench", secret_key="bench", region="us-east-1",
                               endpoint_override=endpoint, scheme="http")  # fmt: skip
        con = duckdb.connect()

        def query() -> dict[str, tuple[int, float]]:
            parquet = ds.ParquetFileFormat(  # a row group's columns in one ranged read, not one each
                default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=True)
            )
            dataset = ds.dataset(
                "bench/study/rainforest-parquet/kind=demand/",
                filesystem=fs,
                partitioning="hive",
                format=parquet,
            )
            con.register("demand", dataset)
            return duckdb_week("demand", household, days, con)

        hourly_s, from_hourly = best_of(3, lambda: hourly_week(archive, household, days, work / "obj.gz"))
        duck_s, from_duck = best_of(3, query)
        return duck_s, hourly_s, from_duck == from_hourly
    finally:
        moto.terminate()
        moto.wait(10)


def references(work: Path) -> tuple[float, float]:
    """Seconds for DuckDB's read_json → Parquet COPY of the day's hourly objects, and for gzip -dc."""
    objects = sorted((work / "archive" / "rainforest-logs").rglob("*.jl.gz"))
    out = work / "duckdb.parquet"
    began = time.perf_counter()
    duckdb.sql(
        f"COPY (SELECT * FROM read_json('{work}/archive/rainforest-logs/*/*/*/*/*.jl.gz', "
        f"format = 'newline_delimited')) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    )
    duck_s = time.perf_counter() - began
    out.unlink()
    names = b"\0".join(str(p).encode() for p in objects)
    began = time.perf_counter()
    subprocess.run(["xargs", "-0", "gzip", "-dc"], input=names, stdout=subprocess.DEVNULL, check=True)
    return duck_s, time.perf_counter() - began


def best_of(n: int, fn: object) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(n):
        began = time.perf_counter()
        result = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - began)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rf-bench-compact-"))
    port = free_port()  # compaction reads the erasure marks from Redis: a private, empty one
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                             stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: port_open(port), "redis-server")
        env = {**os.environ, "DATA_DIR": str(work / "data"), "ARCHIVE_URL": f"file://{work / 'archive'}",
               "ROTATE_GRACE_S": "0", "REDIS_URL": f"redis://127.0.0.1:{port}/0"}  # fmt: skip
        settings = Settings.from_env(env, dotenv_path=None)
        first = (int(time.time()) // 86400 - 9) * 86400  # the week: whole past days, UTC
        days = [time.strftime("%Y-%m-%d", time.gmtime(first + n * 86400)) for n in range(7)]
        began = time.perf_counter()
        jl_bytes, ids = write_day(settings, args.devices, first)
        stored, gz_bytes = ship(settings)
        took = time.perf_counter() - began
        print(f"one day of {args.devices} devices: {args.devices * 24 * 600:,} readings, "
              f"{jl_bytes / 1e9:.2f} GB of .jl, {stored:,} hourly objects ({gz_bytes / 1e6:.0f} MB gzipped), "
              f"written and shipped in {took:.0f} s", flush=True)  # fmt: skip

        began = time.perf_counter()
        command = [sys.executable, "-m", "app.cli", "compact", "--day", days[0]]
        done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"compact failed: {done.stderr}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        parquet = list((work / "archive" / "rainforest-parquet").rglob("*.parquet"))
        parquet_bytes = sum(p.stat().st_size for p in parquet)
        rows = args.devices * 24 * 600
        print(f"compact: {seconds:.1f} s ({rows / seconds:,.0f} readings/s), peak RSS {peak_mb:.0f} MB, "
              f"{len(parquet)} Parquet file(s) of {parquet_bytes / 1e6:.0f} MB: "
              f"{jl_bytes / parquet_bytes:.0f}× smaller than the .jl, "
              f"{gz_bytes / parquet_bytes:.1f}× smaller than the .jl.gz", flush=True)  # fmt: skip
        print(f"  {done.stdout.strip()}", flush=True)
        duck_s, gunzip_s = references(work)
        rate, duck_rate, floor = jl_bytes / 1e6 / seconds, jl_bytes / 1e6 / duck_s, jl_bytes / 1e6 / gunzip_s
        print(f"MB of lines/s: compact {rate:.0f}, DuckDB read_json → COPY {duck_rate:.0f} ({duck_s:.1f} s), "
              f"gzip -dc {floor:.0f} ({gunzip_s:.1f} s): {rate / duck_rate:.2f} of DuckDB, "
              f"{rate / floor:.2f} of the floor", flush=True)  # fmt: skip

        household = ids[len(ids) // 2]
        for n in range(1, 7):  # six more days of the household's own readings
            write_day(settings, args.devices, first + n * 86400, only=household)
        ship(settings)
        archive = open_archive(settings)
        fleet_day = [p for p in parquet if "kind=demand" in str(p)]
        for n, day in enumerate(days[1:], start=1):
            Compactor(settings, archive).compact(day)
            stand_in_day(
                fleet_day,
                household,
                n,
                work / "archive" / "rainforest-parquet" / "kind=demand" / f"date={day}",
            )
        glob = f"{work}/archive/rainforest-parquet/kind=demand/date=*/*.parquet"
        files = f"read_parquet('{glob}', hive_partitioning = true)"
        hourly_s, from_hourly = best_of(3, lambda: hourly_week(archive, household, days, work / "obj.gz"))
        duck_s, from_duck = best_of(3, lambda: duckdb_week(files, household, days))
        same = from_duck == from_hourly
        print(f"a week of one household, file:// archive: DuckDB {duck_s * 1000:.0f} ms, its 168 hourly "
              "objects "
              f"{hourly_s * 1000:.0f} ms: {hourly_s / duck_s:.1f}× faster (same readings and mean per day: "
              f"{'yes' if same else 'NO'})", flush=True)  # fmt: skip
        if not same:
            print(f"  DuckDB: {from_duck}\n  hourly: {from_hourly}", flush=True)
        s3_duck, s3_hourly, s3_same = on_s3(work, household, days)
        print(f"a week of one household, S3 (moto over HTTP): DuckDB {s3_duck * 1000:.0f} ms, its 168 hourly "
              f"objects {s3_hourly * 1000:.0f} ms: {s3_hourly / s3_duck:.1f}× faster "
              f"(same readings and mean per day: "
              f"{'yes' if s3_same else 'NO'})", flush=True)  # fmt: skip
        print(f"devices={args.devices} readings={rows} compact_s={seconds:.1f} "
              f"compact_peak_rss_mb={peak_mb:.0f} "
              f"parquet_mb={parquet_bytes / 1e6:.0f} size_ratio_vs_jl_gz={gz_bytes / parquet_bytes:.1f} "
              f"file_query_speedup={hourly_s / duck_s:.1f} s3_query_ms={s3_duck * 1000:.0f} "
              f"s3_hourly_ms={s3_hourly * 1000:.0f} s3_query_speedup={s3_hourly / s3_duck:.1f} "
              f"compact_mb_per_s={rate:.0f} duckdb_mb_per_s={duck_rate:.0f} gunzip_mb_per_s={floor:.0f} "
              f"ratio_vs_duckdb={rate / duck_rate:.2f}")  # fmt: skip
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
