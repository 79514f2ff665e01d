"""Crawls against the simulator: what each gateway says of itself, kept with its history."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.conftest import Sim
from tests.redis_cluster import sync_client
from tests.test_users_cli import rainforest


def test_crawl_keeps_each_answer_and_marks_what_changed(
    start_sim: Callable[..., Sim], redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    sim = start_sim(6, "--protocols", "eagle100-cloud=1,eagle200-local=1,eagle100-local=1,push=1")
    users = tmp_path / "users.jl"
    users.write_bytes(sim.get("/control/users.jl"))
    env = {"REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path),
           "EAGLE_CLOUD_URL": sim.url, "LOCAL_REQUEST_GAP_S": "0.05"}  # fmt: skip
    assert rainforest("users", "import", str(users), env=env).returncode == 0
    sim.set_faults({"devices": {str(sim.users()[1]["cloud_id"]): {"error": "http_500"}}})
    first = rainforest("crawl", env=env)
    assert "crawled 4 ok, 1 failed, 0 changed" in first.stdout, (
        first.stdout + first.stderr
    )  # push devices: never

    r = sync_client(redis_url, decode_responses=True)
    by_protocol = {str(u["cloud_id"]): str(u["protocol"]) for u in sim.users()}
    for cid, protocol in by_protocol.items():
        crawls = [orjson.loads(c) for c in r.lrange(f"rf:crawls:{cid}", 0, -1)]
        if protocol == "push":
            assert crawls == []
            continue
        (entry,) = crawls
        if cid == str(sim.users()[1]["cloud_id"]):
            assert entry["error"].startswith("unavailable:") and r.hget(f"rf:device:{cid}", "crawl") is None
            continue
        fields = entry["fields"]
        assert fields["firmware"] and fields["model"] in ("Z109-EAGLE", "electric_meter")
        if protocol == "eagle200-local":
            assert fields["meter"].startswith("0x") and fields["link"] and fields["network"] == "Connected"

    # three days on, the simulated gateways run a newer firmware: the crawl says what changed
    later = start_sim(6, "--protocols", "eagle100-cloud=1,eagle200-local=1,eagle100-local=1,push=1",
                      "--time-offset-s", str(3 * 86400))  # fmt: skip
    again = rainforest("crawl", env={**env, "EAGLE_CLOUD_URL": later.url})
    assert again.returncode == 0
    cloud = next(cid for cid, p in by_protocol.items() if p == "eagle100-cloud")
    newest = orjson.loads(r.lindex(f"rf:crawls:{cloud}", 0))
    assert newest["changed"] == ["firmware"] and r.llen(f"rf:crawls:{cloud}") == 2
    assert newest["at"] <= time.time() + 1
