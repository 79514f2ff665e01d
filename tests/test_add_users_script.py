"""scripts/add_user_info_via_server.py against a live server: good, duplicate and broken lines."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from app.pinger import Pinger
from app.settings import Settings
from tests.api_helpers import ApiServer, make_token, start_api
from tests.conftest import ROOT, RedisServer, Sim, start_sim_process

SCRIPT = ROOT / "scripts" / "add_user_info_via_server.py"


@pytest.fixture
def stack(redis_url: str, redis_server: RedisServer, secret_key: str) -> Iterator[tuple[ApiServer, Sim]]:
    sim = start_sim_process(4, "--seed", "5", "--reading-interval-s", "1")
    server = start_api(redis_url, secret_key, sim.url)
    yield server, sim
    server.stop()
    sim.proc.terminate()
    sim.proc.wait(10)


def run(users: Path, server: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(users), "--server", server, "--token", token],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_script_reports_by_line_goes_on_and_reruns_harmlessly(
    stack: tuple[ApiServer, Sim], redis_url: str, tmp_path: Path, make_settings: object
) -> None:
    server, sim = stack
    token = make_token(redis_url, "importer")
    users = sim.users()
    good = [orjson.dumps(u).decode() for u in users]
    lines = [good[0], good[1], good[0], "{broken json", orjson.dumps({**users[2], "cloud_id": "12"}).decode(),
             orjson.dumps({**users[2], "user_email": "nope"}).decode(), "", good[3]]  # fmt: skip
    path = tmp_path / "users.jl"
    path.write_text("\n".join(lines) + "\n")

    first = run(path, server.url, token)
    assert first.returncode == 1
    assert first.stdout.strip() == "created 3, updated 0, unchanged 1, failed 3"
    assert f"{path}:4: not valid JSON" in first.stderr
    assert f"{path}:5: cloud_id must be 6 hex digits" in first.stderr
    assert f"{path}:6: user_email must be an email address" in first.stderr
    second = run(path, server.url, token)
    assert second.stdout.strip() == "created 0, updated 0, unchanged 4, failed 3"

    # the devices it added are polled within 5 s by a running pinger
    settings: Settings = make_settings(redis_url, sim.url)  # type: ignore[operator]

    def polled() -> int:
        return len(list(settings.logs_dir.glob("????-??-??-??/*.jl")))

    async def pinger_for_up_to_5_s() -> None:
        pinger = Pinger.create(settings)
        task = asyncio.create_task(pinger.run())
        start = time.monotonic()
        while time.monotonic() - start < 5 and polled() < 3:
            await asyncio.sleep(0.1)
        pinger.request_stop()
        await task

    asyncio.run(pinger_for_up_to_5_s())
    assert polled() == 3


def test_a_refused_token_stops_at_once(stack: tuple[ApiServer, Sim], tmp_path: Path) -> None:
    server, sim = stack
    path = tmp_path / "users.jl"
    path.write_text("".join(orjson.dumps(u).decode() + "\n" for u in sim.users()))
    result = run(path, server.url, "not-a-token")
    assert result.returncode == 1
    assert (
        result.stderr.count("\n") == 1 and "stopped at line 1: the server refused the token" in result.stderr
    )
