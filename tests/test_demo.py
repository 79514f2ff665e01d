"""`make demo`'s script, run for real on free ports: up, readings, clean stop, nothing left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import psutil

from tests.conftest import ROOT, free_port


def test_demo_brings_the_stack_up_shows_readings_and_stops_cleanly(tmp_path: Path, secret_key: str) -> None:
    redis_port, sim_port, server_port = free_port(), free_port(), free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path), "SECRET_KEY": secret_key, "POLL_INTERVAL_S": "1",
           "LOCAL_REQUEST_GAP_S": "0.2"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--smoke", "--devices", "5",
         "--redis-port", str(redis_port), "--sim-port", str(sim_port), "--server-port", str(server_port)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "created 5, updated 0, unchanged 0, failed 0" in result.stdout
    assert "push key for" not in result.stdout  # the simulator's push devices come with their keys
    assert "Rainforest Logger is running in simulated mode" in result.stdout
    assert result.stdout.rstrip().endswith("stopped.")
    files = list(tmp_path.glob("logs/????-??-??-??/iseif-rainforest-*.jl"))
    assert files
    records = [orjson.loads(line) for path in files for line in path.read_bytes().splitlines()]
    assert all({"cloud_id", "polled_at", "device_time", "kind", "source"} <= r.keys() for r in records)
    kinds = {(r["kind"], r["source"]) for r in records}
    for protocol in ("eagle100-cloud", "eagle200-local", "eagle100-local", "push"):
        assert ("demand", protocol) in kinds, f"no reading from an {protocol} gateway"
        assert f"demand via {protocol}" in result.stdout
    assert "summation" in {kind for kind, _ in kinds} and "summation " in result.stdout
    supervisord_log = (tmp_path / "logs" / "supervisord" / "supervisord.log").read_text()
    assert "curl -s -H 'Authorization: Bearer rft_" in result.stdout
    assert f"http://127.0.0.1:{server_port}/fleet" in result.stdout
    shipped = list(tmp_path.glob("archive/rainforest-logs/*/????/??/??/iseif-rainforest-*.jl.gz"))
    assert shipped, "rotate shipped the backfilled closed hours"
    assert "shipped so far:" in result.stdout
    assert "sha256sum -c SHA256SUMS" in result.stdout, "the demo cart was built"
    assert list(tmp_path.glob("carts/*/cart.tar"))
    for program in ("pinger", "server", "sim", "redis", "rotate", "cartd"):
        assert f"stopped: {program} (exit status 0)" in supervisord_log
    marks = (f"--port {sim_port}", f"--port {redis_port}", f"--port {server_port}")
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(m in " ".join(p.info["cmdline"] or []) for m in marks)
    ]
    assert leftovers == [], "a process outlived the demo"
    run_readme_duckdb_example(tmp_path)


def run_readme_duckdb_example(data_dir: Path) -> None:
    """The README's query of the compacted archive, run as written against what the demo made
    (its `data/` is this test's DATA_DIR): yesterday's last hours, compacted by the rotate loop."""
    import time

    readme = (ROOT / "README.md").read_text()
    snippet = readme.split(".venv/bin/python - <<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    today = int(time.time() // 86400) * 86400
    if time.time() < today + 330:
        return  # yesterday is compacted only once ROTATE_GRACE_S has passed after midnight
    workdir = data_dir.parent / f"{data_dir.name}-readme"
    workdir.mkdir()
    (workdir / "data").symlink_to(data_dir)
    ran = subprocess.run(
        [sys.executable, "-c", snippet], cwd=workdir, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    day = time.strftime("%Y-%m-%d", time.gmtime(today - 86400))
    assert day in ran.stdout, ran.stdout
