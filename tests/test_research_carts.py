"""Carts researchers load: parquet read back with pyarrow and DuckDB equals the csv cart of the same
request row for row, and every cart's COMPLETENESS.csv equals a count made from its own files.

Uses the carts stack (real server, two cartd, moto's S3, data archived by rotate, with a second
overlapping part and an hour not yet rotated)."""

from __future__ import annotations

import csv
import io
import subprocess
import tarfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
import requests

from tests.test_carts import BASE, DEVICES, Stack
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
    assert len(rows) == len(DEVICES) * 4, "a row per device and hour in the range, data or not"
    for row in rows:
        key = (row["cloud_id"], row["hour_utc"])
        assert int(row["readings"]) == readings.get(key, 0), key
        assert int(row["duplicates_dropped"]) == repeats.get(key, 0), key
        assert float(row["longest_gap_s"]) == gaps.get(key, 0), key
    assert sum(int(r["duplicates_dropped"]) for r in rows) == 10
