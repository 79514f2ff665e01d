"""The pinger as a process: kill -9 and restart, SIGTERM, and its JSON log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.conftest import Sim, wait_until
from tests.test_pinger import served, written
from tests.test_users_cli import rainforest


def start_pinger(env: dict[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "pinger"], cwd=workdir, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def fleet_env(sim: Sim, redis_url: str, secret_key: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a pinger polling `sim` every 0.5 s, its users imported, DATA_DIR made."""
    data = tmp_path / "data"
    data.mkdir()
    env = {"REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(data),
           "EAGLE_CLOUD_URL": sim.url, "POLL_INTERVAL_S": "0.5", "POLL_TIMEOUT_S": "0.4"}  # fmt: skip
    users = tmp_path / "users.jl"
    users.write_bytes(sim.get("/control/users.jl"))
    assert rainforest("users", "import", str(users), env=env).returncode == 0
    return env


def test_kill_9_then_restart_leaves_no_corrupt_or_duplicate_line(
    start_sim: Callable[..., Sim], make_settings: Callable[..., object], redis_url: str, secret_key: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    sim = start_sim(100)
    env = fleet_env(sim, redis_url, secret_key, tmp_path)
    data = Path(env["DATA_DIR"])
    settings = make_settings(redis_url, sim.url, data_dir=data)

    first = start_pinger(env, tmp_path)
    wait_until(lambda: len(written(settings)) >= 150, timeout_s=20, what="readings from the first pinger")  # type: ignore[arg-type]
    time.sleep(0.3)
    first.kill()  # SIGKILL: no flush, no goodbye
    first.wait(10)
    before = len(written(settings))  # type: ignore[arg-type]

    second = start_pinger(env, tmp_path)
    wait_until(
        lambda: len(written(settings)) >= before + 150, timeout_s=20, what="readings after the restart"
    )  # type: ignore[arg-type]
    second.send_signal(signal.SIGTERM)
    assert second.wait(15) == 0, "SIGTERM must end the pinger cleanly with exit status 0"

    files = written(settings)  # type: ignore[arg-type]  # fails on any partial or corrupt line
    assert all(len(lines) == 1 for lines in files.values()), "a reading was written twice across the restart"
    assert files.keys() <= served(sim).keys(), "a line holds a reading the device never gave"

    log_lines = [
        orjson.loads(line) for line in (data / "logs" / "pinger" / "pinger.log").read_bytes().splitlines()
    ]
    assert any(rec["message"] == "poll cycle" and "lateness_p99_s" in rec for rec in log_lines)
    stopped = [rec for rec in log_lines if rec["message"] == "pinger stopped"]
    assert len(stopped) == 1 and stopped[0]["level"] == "INFO" and stopped[0]["process"] == "pinger"
    assert all(secret_key not in str(rec) for rec in log_lines)
