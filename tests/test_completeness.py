"""Completeness counted as the data arrives equals a count made from the files."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Callable

import requests

from app.lines import read as read_lines
from app.pinger import Pinger
from app.settings import Settings
from app.store import Store
from tests.api_helpers import conforms, make_token, start_api
from tests.conftest import Sim
from tests.test_pinger import register, run_for
from tests.test_users_cli import rainforest


async def test_counts_equal_the_files_and_are_served_by_the_api_and_the_cli(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str, secret_key: str
) -> None:
    sim = start_sim(
        30,
        "--protocols",
        "eagle100-cloud=2,eagle200-local=1",
        "--fault",
        "timeout@10%",
        "--timeout-hold-s",
        "1",
    )
    settings = make_settings(redis_url, sim.url, local_request_gap_s=0.05)
    ids = await register(sim, settings)
    await run_for(Pinger.create(settings), 3.0)

    # from the files: distinct demand readings per device-hour, and the longest gap between two
    by_device: dict[str, list[tuple[int, int]]] = defaultdict(list)  # (device_time, hour of the file)
    for path in settings.logs_dir.glob("????-??-??-??/*.jl"):
        for r in read_lines(path).records:
            if r["kind"] == "demand":
                by_device[str(r["cloud_id"])].append(
                    (int(r["device_time"]), int(float(r["polled_at"]) // 3600))
                )  # type: ignore[arg-type]
    expected: dict[tuple[str, int], tuple[int, float]] = {}
    for cid, found in by_device.items():
        found.sort()
        for n, (t, hour) in enumerate(found):
            count, gap = expected.get((cid, hour), (0, 0.0))
            gap = max(gap, float(t - found[n - 1][0])) if n else gap
            expected[(cid, hour)] = (count + 1, gap)

    store = Store.from_url(redis_url)
    hours = sorted({hour for _, hour in expected})
    rows = {(r["cloud_id"], r["hour"]): r for r in await store.completeness.completeness(ids, hours)}
    await store.close()
    assert {k: (r["readings"], r["longest_gap_s"]) for k, r in rows.items() if r["readings"]} == expected
    assert all(0 <= r["ok"] <= r["scheduled"] for r in rows.values()) and any(r["ok"] for r in rows.values())
    failing = [r for r in rows.values() if r["ok"] < r["scheduled"]]
    assert failing, "the timeouts did not show as polls short of the schedule"
    store = Store.from_url(redis_url)
    history = await store.devices.recent_failures(failing[0]["cloud_id"])
    await store.close()
    assert history and history[0]["reason"].startswith("timeout:"), (
        "the failure is not in the device's history"
    )

    await asyncio.to_thread(api_and_cli_agree, failing[0]["cloud_id"], redis_url, secret_key, settings)


def api_and_cli_agree(cid: str, redis_url: str, secret_key: str, settings: Settings) -> None:
    api = start_api(redis_url, secret_key)
    try:
        token = {"Authorization": f"Bearer {make_token(redis_url, 'reader', read_only=True)}"}
        resp = requests.get(f"{api.url}/api/users/{cid}/completeness", headers=token, timeout=5)
        conforms(resp, "/api/users/{cloud_id}/completeness", "GET")
        hours_seen = [h for h in resp.json()["hours"] if h["scheduled"]]
        assert hours_seen and hours_seen[-1]["percent"] < 100
        assert len(resp.json()["hours"]) in (
            24,
            25,
        )  # every hour the last 24 h touch; zeros where nothing happened
        bad = requests.get(f"{api.url}/api/users/{cid}/completeness?start=1&end=2", headers=token, timeout=5)
        assert bad.status_code == 400 and "Unix seconds" in bad.json()["message"]
    finally:
        api.stop()

    env = {"REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(settings.data_dir)}
    report = rainforest("completeness", "--since", "2h", "--below", "100", env=env)
    assert report.returncode == 0 and cid in report.stdout and "device-hours in the last 2h" in report.stdout
    first = next(itertools.islice(report.stdout.splitlines(), 1))
    assert "%" in first and "longest gap" in first
