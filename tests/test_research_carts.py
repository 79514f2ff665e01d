"""Carts researchers load: parquet read back with pyarrow and DuckDB equals the csv cart of the same
request row for row, and every cart's COMPLETENESS.csv equals a count made from its own files.

Uses the carts stack (real server, two cartd, moto's S3, data archived by rotate, with a second
overlapping part and an hour not yet rotated)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import tarfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
import requests

from app import keys
from app.archive.factory import open_archive
from app.rotate.runner import Rotator
from app.settings import Settings
from tests.api_helpers import make_token, start_api
from tests.redis_cluster import sync_client
from tests.test_carts import BASE, DEVICES, Stack, write
from tests.test_carts import stack as stack  # the carts stack, a module-scoped fixture


def fetch(carts: Stack, body: dict[str, object], into: Path) -> Path:
    made = carts.post(body)
    assert made.status_code == 201, made.text
    cart_id = made.json()["id"]
    assert carts.wait(cart_id).headers["X-Cart-Status"] == "ready"
    got = requests.get(f"{carts.api.url}/api/carts/{cart_id}", headers=carts.h(), timeout=30)
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        tar.extractall(into, filter="data")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=into, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    return into


def test_a_parquet_cart_equals_the_csv_cart_row_for_row(stack: Stack, tmp_path: Path) -> None:
    body = {"devices": list(DEVICES), "start": BASE - 60, "end": BASE + 4 * 3600}
    as_csv = fetch(stack, {**body, "format": "csv"}, tmp_path / "csv")
    as_parquet = fetch(stack, {**body, "format": "parquet"}, tmp_path / "parquet")
    manifest = orjson.loads((as_parquet / "MANIFEST.json").read_bytes())
    for cid in DEVICES:
        with (as_csv / f"{cid}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        table = pq.read_table(as_parquet / cid / "demand.parquet")
        assert str(table.schema.field("time").type) == "timestamp[ms, tz=UTC]"
        assert (
            pq.ParquetFile(as_parquet / cid / "demand.parquet").metadata.row_group(0).column(0).compression
            == "ZSTD"
        )
        got = table.to_pylist()
        assert len(got) == len(rows) > 0 and manifest["devices"][cid]["demand_rows"] == len(rows)
        for want, have in zip(rows, got, strict=True):
            assert have["time"] == datetime.fromisoformat(want["time_utc"].replace("Z", "+00:00"))
            assert have["demand_kw"] == float(want["demand_kw"]) and have["cloud_id"] == cid
            assert int(have["time"].timestamp()) == int(want["device_time"])
            assert (have["TimeStamp"], have["Demand"], have["Divisor"]) == (
                int(want["TimeStamp"]),
                int(want["Demand"]),
                int(want["Divisor"]),
            )
        # DuckDB, as a researcher would, straight from the files
        path = as_parquet / cid / "demand.parquet"
        duck = duckdb.sql(f"SELECT epoch(time)::BIGINT, demand_kw FROM '{path}' ORDER BY time").fetchall()
        assert duck == [(int(r["device_time"]), float(r["demand_kw"])) for r in rows]
    assert not (as_parquet / DEVICES[0] / "price.parquet").exists(), "no price lines: no price file"
    [(total,)] = duckdb.sql(f"SELECT count(*) FROM '{as_parquet}/*/demand.parquet'").fetchall()
    assert total == manifest["counts"]["rows"]
    assert (
        manifest["counts"]["duplicates_dropped"]
        == 10
        == manifest["devices"][DEVICES[0]]["duplicates_dropped"]
    )
    readme = (as_parquet / "README.txt").read_text()
    assert "sha256sum -c SHA256SUMS" in readme and "demand_kw" in readme and "UTC" in readme


def test_completeness_csv_equals_a_count_from_the_files(stack: Stack, tmp_path: Path) -> None:
    cart = fetch(stack, {"devices": list(DEVICES), "start": BASE, "end": BASE + 4 * 3600}, tmp_path / "jl")
    # count from the jl files themselves: distinct readings per device-hour, repeats across parts
    # count from the jl files themselves: distinct readings per device-hour, repeats across parts,
    # and the longest wait for a reading that ended in the hour
    seen: dict[str, set[int]] = defaultdict(set)
    readings: dict[tuple[str, str], int] = defaultdict(int)
    repeats: dict[tuple[str, str], int] = defaultdict(int)
    gaps: dict[tuple[str, str], int] = defaultdict(int)
    last: dict[str, int] = {}
    by_hour: dict[tuple[str, str], list[int]] = defaultdict(list)
    for path in sorted(cart.rglob("*.jl")):
        cid, hour = path.name.split("-")[2], "-".join(path.name.split(".")[0].split("-")[3:])
        stamp = datetime.strptime(hour, "%Y-%m-%d-%H").replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:00:00Z")
        for raw in path.read_bytes().splitlines():
            t = orjson.loads(raw)["device_time"]
            if t in seen[cid]:
                repeats[(cid, stamp)] += 1
            else:
                seen[cid].add(t)
                readings[(cid, stamp)] += 1
                by_hour[(cid, stamp)].append(t)
    for (cid, stamp), times in sorted(by_hour.items()):
        for t in sorted(times):
            if cid in last:
                gaps[(cid, stamp)] = max(gaps[(cid, stamp)], t - last[cid])
            last[cid] = t
    with (cart / "COMPLETENESS.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    known = {k for k, n in readings.items() if n} | {k for k, n in repeats.items() if n}
    assert {(r["cloud_id"], r["hour_utc"]) for r in rows} == known, (
        "a row per device and hour of which something is known (no polls counted here: the lines)"
    )
    for row in rows:
        key = (row["cloud_id"], row["hour_utc"])
        assert int(row["readings"]) == readings.get(key, 0), key
        assert int(row["duplicates_dropped"]) == repeats.get(key, 0), key
        assert float(row["longest_gap_s"]) == gaps.get(key, 0), key
    assert sum(int(r["duplicates_dropped"]) for r in rows) == 10
    manifest = orjson.loads((cart / "MANIFEST.json").read_bytes())
    for cid in DEVICES:  # a jl cart's manifest counts each device's distinct readings in range too
        expected = len({t for t in seen[cid] if BASE <= t < BASE + 4 * 3600})
        assert manifest["devices"][cid]["demand_rows"] == expected > 0, cid


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_parquet_cart_of_2400_files_stays_within_a_fixed_memory_bound(
    redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    """100 devices × 24 archived hours: cartd's peak RSS for the whole lot is that of a tenth of it."""

    base = int(time.time() // 3600) * 3600 - 30 * 3600
    env = {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(tmp_path / "data"), "SECRET_KEY": secret_key,
           "ARCHIVE_URL": f"file://{tmp_path / 'archive'}"}  # fmt: skip
    settings = Settings.from_env(env, dotenv_path=None)
    devices = [f"0e{n:04x}" for n in range(100)]
    with sync_client(redis_url) as r:
        for cid in devices:
            r.hset(keys.device(cid), mapping={"cloud_id": cid, "active": "1"})
            r.sadd(keys.devices_all(keys.group(cid)), cid)
    for cid in devices:
        for h in range(24):
            write(settings, cid, base + h * 3600, range(0, 100))
    assert asyncio.run(Rotator(settings, open_archive(settings), None).pass_once()).stored == 2400
    api = start_api(redis_url, secret_key, **{k: v for k, v in env.items() if k not in os.environ})
    carts = Stack(settings, env, api, admin=make_token(redis_url, "admin"))
    try:
        peaks = []
        for chosen in (devices[:10], devices):  # 240 files, then 2,400, each by a fresh cartd
            worker = carts.start_worker()
            made = carts.post(
                {"devices": chosen, "start": base, "end": base + 24 * 3600, "format": "parquet"}
            )
            cart_id = made.json()["id"]
            assert carts.wait(cart_id, timeout_s=120).headers["X-Cart-Status"] == "ready"
            manifest = carts.builds(cart_id, count=1)
            assert manifest and manifest[0]["outcome"] == "ready"
            peaks.append(peak_rss_mb(worker.pid))
            worker.terminate()
            worker.wait(20)
        head = requests.head(f"{api.url}/api/carts/{cart_id}", headers=carts.h(), timeout=5)
        assert head.headers["X-Cart-Progress"].startswith("files=2400/2400")
        assert peaks[1] < peaks[0] + 40, f"peak RSS grew with the cart: {peaks[0]:.0f} MB → {peaks[1]:.0f} MB"
        assert peaks[1] < 400, f"cartd's peak RSS {peaks[1]:.0f} MB is over the bound"
    finally:
        carts.workers = [w for w in carts.workers if w.poll() is None]
        carts.stop()
