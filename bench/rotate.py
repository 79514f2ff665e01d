"""Benchmark: how fast does rotate ship closed hours to S3, against boto3's plain upload_file?

It starts moto's S3 server (`moto_server`, loopback), writes N realistic hourly files (about
600 reading lines each, the pinger's exact line format, values from the simulator's household
model) into a closed hour, and copies them aside. In the same run:

- reference: a loop of boto3 `upload_file(path, bucket, key)` with the default transfer
  settings, one file after another, into a bucket of its own (no gzip, no checks);
- rotate: one `Rotator.pass_once()` over the same files: claim, gzip, checksummed conditional
  PUT confirmed by S3's digest in its reply, delete; ROTATE_CONCURRENCY at a time. It runs
  once more with ROTATE_READBACK=1 (a HEAD after every PUT) to show what a read-back costs.

    .venv/bin/python bench/rotate.py                 # 2,000 files
    .venv/bin/python bench/rotate.py --files 500 --concurrency 16

The last line is key=value: files, files_per_s, mb_per_s (source MB/s), ratio_vs_upload_file
(rotate's files/s over the reference's; ≥ 1.0 is the target).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.archive.factory import open_archive  # noqa: E402
from app.eagle.readings import Y2K_EPOCH, DemandReading  # noqa: E402
from app.hourly import hour_key, reading_path  # noqa: E402
from app.rotate.runner import Rotator  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.sim.fleet import build_fleet  # noqa: E402
from app.sim.model import demand_w  # noqa: E402
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


def upload_file_reference(endpoint: str, bucket: str, files: list[Path]) -> float:
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )  # fmt: skip
    client.create_bucket(Bucket=bucket)
    began = time.perf_counter()
    for path in files:
        client.upload_file(str(path), bucket, f"reference/{path.parent.name}/{path.name}")
    return time.perf_counter() - began


def run_rotate(settings: Settings) -> tuple[float, int]:
    """One pass over every file; (seconds, bytes stored)."""
    rotator = Rotator(settings, open_archive(settings), None)
    began = time.perf_counter()
    report = asyncio.run(rotator.pass_once())
    seconds = time.perf_counter() - began
    if not report.ok or report.busy or report.left or report.already:
        raise SystemExit(f"rotate did not ship everything: {report.fields()}")
    return seconds, report.stored_bytes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rf-bench-rotate-"))
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(port), "moto_server")
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket="rotate-bench")  # fmt: skip
        settings = Settings(
            data_dir=work / "data", archive_url="s3://rotate-bench/archive", s3_endpoint_url=endpoint,
            aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, aws_region="us-east-1",
            rotate_concurrency=args.concurrency,
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

        ref_s = upload_file_reference(endpoint, "reference-bench", reference_files)
        print(
            f"reference upload_file: {ref_s:.2f} s, {args.files / ref_s:.1f} files/s, {mb / ref_s:.1f} MB/s",
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
            f"ratio_vs_upload_file={ratio:.2f}"
        )
    finally:
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
