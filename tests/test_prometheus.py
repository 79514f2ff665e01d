"""The shipped Prometheus rules: promtool checks and tests them, and a real Prometheus (Debian's
package) scraping a real server hands one of them to a real Alertmanager, which delivers it to a
webhook receiver."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.alerts.evaluate import Evaluator
from app.credentials import Vault
from app.devices import DeviceInput
from app.settings import Settings
from app.store import PollUpdate, Store
from tests.api_helpers import make_token, start_api
from tests.catchers import webhook_catcher
from tests.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs Debian's prometheus packages.")
    return found


def test_the_shipped_rules_pass_promtool() -> None:
    promtool = _tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", str(RULES.parent / "rules_test.yml")], capture_output=True, text=True
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


async def _relay_incident(settings: Settings) -> None:
    """Ten relay households unreachable since the same minute: Rainforest Logger opens an incident."""
    store, vault = Store.from_url(settings.redis_url), Vault(settings.secret_key)
    since = time.time() - 900
    try:
        for n in range(10):
            cid = f"0e{n:04x}"
            await store.devices.save_device(
                DeviceInput.from_mapping(
                    {"cloud_id": cid, "user_email": f"{cid}@example.org", "user_pw": "x"}
                ),
                vault,
            )
            fields = {"health": "unreachable", "health_since": repr(since + n), "condition": "unreachable",
                      "condition_since": repr(since + n)}  # fmt: skip
            await store.devices.record_polls([PollUpdate(cid, consecutive_failures=99, fields=fields)])
        summary = await Evaluator(store, settings, []).round()
        assert summary.incidents_opened == 1
    finally:
        await store.close()


async def test_prometheus_and_alertmanager_deliver_a_shipped_rule(
    make_settings: Callable[..., Settings], redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    prometheus, alertmanager = _tool("prometheus"), _tool("prometheus-alertmanager")
    settings = make_settings(redis_url, silent_after_s=600.0, unpolled_after_s=86400.0)
    await _relay_incident(settings)
    server = start_api(redis_url, secret_key, UNPOLLED_AFTER_S="86400", ALERT_EVAL_S="0")
    token = tmp_path / "token"
    token.write_text(await asyncio.to_thread(make_token, redis_url, "prometheus", True))
    am_port, prom_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with webhook_catcher() as hook:
        (tmp_path / "am.yml").write_text(
            "route: {receiver: hook, group_by: [alertname], group_wait: 1s, group_interval: 1s}\n"
            f"receivers: [{{name: hook, webhook_configs: [{{url: 'http://127.0.0.1:{hook.port}/am'}}]}}]\n"
        )
        (tmp_path / "prom.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            f"alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n"
            "scrape_configs:\n"
            "  - job_name: rainforest-server\n"
            f"    authorization: {{type: Bearer, credentials_file: '{token}'}}\n"
            f"    static_configs: [{{targets: ['{server.url.removeprefix('http://')}']}}]\n"
        )
        t = tmp_path
        am = [alertmanager, f"--config.file={t}/am.yml", f"--storage.path={t}/am",
              f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="]  # fmt: skip
        prom = [prometheus, f"--config.file={t}/prom.yml", f"--storage.tsdb.path={t}/tsdb",
                f"--web.listen-address=127.0.0.1:{prom_port}"]  # fmt: skip
        try:
            with (t / "am.log").open("wb") as am_log, (t / "prom.log").open("wb") as prom_log:
                procs.append(subprocess.Popen(am, stdout=am_log, stderr=am_log))
                procs.append(subprocess.Popen(prom, stdout=prom_log, stderr=prom_log))

            def delivered() -> bool:
                for p in procs:
                    said = (tmp_path / "prom.log").read_text() + (tmp_path / "am.log").read_text()
                    assert p.poll() is None, said
                alerts = [a["labels"] for post in hook.posts for a in post.get("alerts", [])]
                return {"alertname": "RainforestIncidentOpen", "path": "relay"}.items() <= next(
                    (
                        labels.items()
                        for labels in alerts
                        if labels.get("alertname") == "RainforestIncidentOpen"
                    ),
                    {}.items(),
                )

            await asyncio.to_thread(
                wait_until, delivered, 90, "Alertmanager's delivery of RainforestIncidentOpen"
            )
        finally:
            for p in procs:
                p.terminate()
                p.wait(15)
            server.stop()
    alert = next(
        a
        for post in hook.posts
        for a in post["alerts"]
        if a["labels"]["alertname"] == "RainforestIncidentOpen"
    )
    assert alert["status"] == "firing" and "relay failed together" in alert["annotations"]["action"]
