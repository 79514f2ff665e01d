"""Carts never take the space the readings need, and one token cannot make unbounded work:
a real pinger, `rainforest server` and `rainforest cartd` share a DATA_DIR and a real Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from app.hourly import reading_path
from app.hours import hour_key
from app.settings import Settings
from tests.api_helpers import make_token, start_api
from tests.conftest import Sim, wait_until
from tests.test_pinger_process import fleet_env, start_pinger


def _lines(settings: Settings) -> int:
    return sum(p.read_bytes().count(b"\n") for p in settings.logs_dir.glob("????-??-??-??/*.jl"))


def test_a_huge_cart_fails_in_one_sentence_while_polling_goes_on(
    start_sim: Callable[..., Sim], redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    sim = start_sim(10)
    env = fleet_env(sim, redis_url, secret_key, tmp_path)
    settings = Settings.from_env(env, dotenv_path=None)
    # a past hour of 2 MB for one device, in the hourly files a cart reads
    cid = str(sim.users()[0]["cloud_id"])
    past = int(time.time() // 3600) * 3600 - 7200
    path = reading_path(settings.logs_dir, settings.file_prefix, cid, hour_key(past))
    path.parent.mkdir(parents=True, exist_ok=True)
    line = b'{"cloud_id":"%s","polled_at":%d,"device_time":%d,"kind":"demand","demand_kw":1.0,"pad":"%s"}\n'
    path.write_bytes(b"".join(line % (cid.encode(), past + i, past + i, b"x" * 600) for i in range(3000)))
    # the disk has room for the cart, but only by eating into what the pinger and rotate need:
    # the reserve leaves carts a megabyte, and there is no budget beyond the disk (0)
    reserve = shutil.disk_usage(settings.data_dir).free - 1024 * 1024
    work_env = {**env, "CARTS_MAX_BYTES": "0", "CARTS_DISK_RESERVE_BYTES": str(reserve)}
    pinger = start_pinger(env, tmp_path)
    api = start_api(redis_url, secret_key, **{**env, "DATA_DIR": str(settings.data_dir)})
    with (tmp_path / "cartd.stderr").open("wb") as err:
        cartd = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "cartd"], env={**os.environ, **work_env},
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        wait_until(lambda: _lines(settings) > 3000, timeout_s=30, what="the pinger's first readings")
        reader = make_token(redis_url, "researcher", read_only=True)
        auth = {"Authorization": f"Bearer {reader}"}
        body = {"devices": [cid], "start": past, "end": past + 3600}
        made = requests.post(f"{api.url}/api/carts/", json=body, headers=auth, timeout=10)
        assert made.status_code == 201, made.text
        url = f"{api.url}/api/carts/{made.json()['id']}"

        def finished() -> bool:
            return requests.head(url, headers=auth, timeout=5).headers.get("X-Cart-Status") in (
                "ready",
                "error",
            )

        wait_until(finished, timeout_s=60, what="the cart to be refused")
        head = requests.head(url, headers=auth, timeout=5)
        assert head.headers["X-Cart-Reason"] == "NO_SPACE"
        message = head.headers["X-Cart-Message"]
        assert message.count(".") <= 3 and "need" in message and "not yet shipped" in message
        assert not list((settings.carts_dir).glob("*/staging/*")), "nothing may be staged for a refused cart"
        before = _lines(settings)
        wait_until(lambda: _lines(settings) > before + 10, timeout_s=30, what="polling to go on")
    finally:
        cartd.terminate()
        pinger.terminate()
        cartd.wait(20)
        pinger.wait(20)
        api.stop()


def test_one_token_cannot_ask_for_unbounded_work(redis_url: str, secret_key: str, tmp_path: Path) -> None:
    api = start_api(redis_url, secret_key, CART_MAX_DEVICE_DAYS="60", CARTS_BUILDING_PER_TOKEN="2")
    try:
        admin = make_token(redis_url, "admin")
        for cid in ("0d0001", "0d0002", "0d0003"):
            requests.post(
                f"{api.url}/api/users/{cid}", json={"user_email": "a@example.com", "user_pw": "pw"},
                headers={"Authorization": f"Bearer {admin}"}, timeout=10,
            )  # fmt: skip
        reader = make_token(redis_url, "researcher", read_only=True)
        other = make_token(redis_url, "another", read_only=True)

        def ask(devices: object, days: int, token: str = reader) -> requests.Response:
            body = {"devices": devices, "start": "2026-01-01T00:00:00Z", "end": 1767225600 + days * 86400}
            return requests.post(
                f"{api.url}/api/carts/", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
            )

        too_long = ask(["0d0001", "0d0002"], 31)  # 62 device-days
        assert too_long.status_code == 400 and too_long.json()["error"] == "too_much"
        assert "62 device-days" in too_long.json()["message"]
        assert ask("all", 21).status_code == 400  # 3 devices × 21 days
        # no cartd runs: carts stay waiting, and a token may have two at once
        assert [ask(["0d0001"], 10).status_code for _ in range(2)] == [201, 201]
        third = ask(["0d0001"], 10)
        assert third.status_code == 429 and third.json()["message"].endswith(".")
        assert ask(["0d0001"], 10, token=other).status_code == 201  # another token is not held up
    finally:
        api.stop()
