"""Benchmark: how fast does rotate ship closed hours to S3, against boto3's plain upload_file?

It starts moto's S3 server (`moto_server`, loopback), writes N realistic hourly files (about
600 reading lines each, the pinger's exact line format, values from the simulator's household
model) into a closed hour, and copies them aside. In the same run:

- reference: boto3's `upload_file(path, bucket, key)` with the default transfer settings, of
  the same gzipped bytes rotate stores (gzipped before the clock starts), CONCURRENCY uploads at
  a time (one client shared by a thread pool, as boto3 recommends), into a bucket of its own: the
  same work as rotate's, minus gzip, claims, checks and bookkeeping;
- rotate: one `Rotator.pass_once()` over the same files, with its Redis (a private
  redis-server: the archive index and the pass's summary, as in production): claim, gzip,
  checksummed conditional PUT confirmed by S3's digest in its reply, delete; ROTATE_CONCURRENCY
  at a time. It runs once more with ROTATE_READBACK=1 (a HEAD after every PUT) to show what a
  read-back costs.

    .venv/bin/python bench/rotate.py                 # 2,000 files
    .venv/bin/python bench/rotate.py --files 500 --concurrency 16

The last line is key=value: files, files_per_s, mb_per_s (source MB/s), ratio_vs_upload_file
(rotate's files/s over the reference's; ≥ 1.0 is the target).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore.config
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.archive.factory import open_archive  # noqa: E402
from app.eagle.readings import Y2K_EPOCH, DemandReading  # noqa: E402
from app.hourly import reading_path  # noqa: E402
from app.hours import hour_key  # noqa: E402
from app.rotate.claim import COMPRESS_LEVEL  # noqa: E402
from app.rotate.runner import PassReport, Rotator  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.sim.fleet import build_fleet  # noqa: E402
from app.sim.model import demand_w  # noqa: E402
from app.store import Store  # noqa: E402
from bench.pinger import free_port, port_open, wait_for  # noqa: E402

KEY_ID, SECRET = "bench", "bench-secret"


def write_files(settings: Settings, count: int, at: float) -> int:
    """`count` device-hours of 600 readings each (one every 6 s); returns total bytes."""
    start = int(at // 3600) * 3600
    hour = hour_key(start)
    total = 0
    for device in build_fleet(count, seed=11):
        lines = []
        for i in range(600):
            polled = start + i * 6 + device.phase_fraction * 6
            watts = demand_w(device, 11, i, polled)
            reading = DemandReading(
                device.device_mac_id, device.meter_mac_id, int(polled) - 2 - Y2K_EPOCH,
                round(watts * device.divisor / 1000 / (device.multiplier or 1)),
                device.multiplier, device.divisor, 3, 6, "Y",
            )  # fmt: skip
            lines.append(orjson.dumps(reading.record(device.cloud_id, round(polled, 3))) + b"\n")
        path = reading_path(settings.logs_dir, settings.file_prefix, device.cloud_id, hour)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(lines)
        path.write_bytes(data)
        total += len(data)
    return total


def gzipped(files: list[Path], into: Path) -> list[Path]:
    """The files gzipped as rotate gzips them, before any clock starts."""
    out = []
    for path in files:
        dest = into / path.parent.name / f"{path.name}.gz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(gzip.compress(path.read_bytes(), compresslevel=COMPRESS_LEVEL, mtime=0))
        out.append(dest)
    return out


def upload_file_reference(
    endpoint: str, bucket: str, files: list[Path], concurrency: int
) -> tuple[float, int]:
    """(seconds, failed uploads): `upload_file` of every file, `concurrency` at a time."""
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=botocore.config.Config(max_pool_connections=max(10, concurrency)),
    )  # fmt: skip
    client.create_bucket(Bucket=bucket)

    def one(path: Path) -> bool:
        try:
            client.upload_file(str(path), bucket, f"reference/{path.parent.name}/{path.name}")
        except Exception:
            return False
        return True

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        failed = sum(not ok for ok in pool.map(one, files))
    return time.perf_counter() - began, failed


def run_rotate(settings: Settings) -> tuple[float, int]:
    """One pass over every file, with its Redis; (seconds, bytes stored)."""

    async def one_pass() -> tuple[float, PassReport]:
        store = Store.from_url(settings.redis_url)
        try:
            rotator = Rotator(settings, open_archive(settings), store)
            began = time.perf_counter()
            report = await rotator.pass_once()
            return time.perf_counter() - began, report
        finally:
            await store.close()

    seconds, report = asyncio.run(one_pass())
    if not report.ok or report.busy or report.left or report.already:
        raise SystemExit(f"rotate did not ship everything: {report.fields()}")
    return seconds, report.stored_bytes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=Settings().rotate_concurrency)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rf-bench-rotate-"))
    port, redis_port = free_port(), free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    moto = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)], **quiet
    )  # type: ignore[call-overload]
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""], **quiet
    )  # type: ignore[call-overload]
    try:
        wait_for(lambda: port_open(port), "moto_server")
        wait_for(lambda: port_open(redis_port), "redis-server")
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket="rotate-bench")  # fmt: skip
        settings = Settings(
            data_dir=work / "data", archive_url="s3://rotate-bench/archive", s3_endpoint_url=endpoint,
            aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, aws_region="us-east-1",
            rotate_concurrency=args.concurrency, redis_url=f"redis://127.0.0.1:{redis_port}/0",
        )  # fmt: skip
        total = write_files(settings, args.files, time.time() - 3 * 3600)
        copies = work / "copies"
        shutil.copytree(settings.logs_dir, copies)
        reference_files = sorted(copies.glob("*/*.jl"))
        mb = total / 1e6
        print(
            f"{args.files} files, {mb:.1f} MB ({total / args.files / 1e3:.0f} kB and 600 lines each)",
            flush=True,
        )

        ref_s, ref_failed = upload_file_reference(
            endpoint, "reference-bench", gzipped(reference_files, work / "gzipped"), args.concurrency
        )
        print(
            f"reference upload_file of the same gzipped files (concurrency {args.concurrency}): "
            f"{ref_s:.2f} s, {args.files / ref_s:.1f} files/s, {mb / ref_s:.1f} MB/s of source; "
            f"failed uploads: {ref_failed}",
            flush=True,
        )

        shutil.rmtree(settings.logs_dir)
        shutil.copytree(copies, settings.logs_dir)
        readback_s, _ = run_rotate(
            settings.replace(archive_url="s3://rotate-bench/readback", rotate_readback=True)
        )
        print(
            f"rotate with ROTATE_READBACK=1 (a HEAD after each PUT): {readback_s:.2f} s, "
            f"{args.files / readback_s:.1f} files/s, ratio {ref_s / readback_s:.2f}",
            flush=True,
        )
        shutil.rmtree(settings.logs_dir)
        shutil.copytree(copies, settings.logs_dir)
        ours_s, stored_bytes = run_rotate(settings)
        ratio = ref_s / ours_s
        print(
            f"rotate (default; concurrency {args.concurrency}): {ours_s:.2f} s, "
            f"{args.files / ours_s:.1f} files/s, "
            f"{mb / ours_s:.1f} MB/s of source, {stored_bytes / 1e6:.1f} MB stored "
            f"(gzip {total / stored_bytes:.1f}x), each confirmed by S3's digest in its reply",
            flush=True,
        )
        print(
            f"files={args.files} files_per_s={args.files / ours_s:.1f} mb_per_s={mb / ours_s:.2f} "
            f"ratio_vs_upload_file={ratio:.2f} reference_failed={ref_failed}"
        )
    finally:
        for proc in (moto, redis):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
