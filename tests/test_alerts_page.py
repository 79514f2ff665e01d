"""The /alerts page in a real browser: what a coordinator sees, and an admin acknowledging an
alert and snoozing a household through the page's forms (XSRF and all)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from app.alerts.evaluate import Evaluator
from app.credentials import Vault
from app.devices import DeviceInput
from app.settings import Settings
from app.store import PollUpdate, Store
from tests.api_helpers import ApiServer, start_api
from tests.test_pages import browser, log_in, make_token  # noqa: F401 (the browser fixture)


def _prepare(redis_url: str, secret_key: str) -> None:
    async def go() -> None:
        store, vault = Store.from_url(redis_url), Vault(secret_key)
        since = time.time() - 2000
        try:
            for cid, state in (("00f001", "frozen"), ("00f002", "auth")):
                user = {"cloud_id": cid, "user_email": f"{cid}@example.org", "user_pw": "not-shown-7"}
                await store.devices.save_device(DeviceInput.from_mapping(user), vault)
                fields = {"health": state, "health_since": repr(since), "condition": state,
                          "condition_since": repr(since)}  # fmt: skip
                await store.devices.record_polls([PollUpdate(cid, fields=fields)])
            settings = Settings(redis_url=redis_url, secret_key=secret_key, unpolled_after_s=86400.0)
            await Evaluator(store, settings, []).round()
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        pool.submit(asyncio.run, go()).result()


@pytest.fixture
def alerting_site(redis_url: str, secret_key: str) -> Iterator[ApiServer]:
    _prepare(redis_url, secret_key)
    server = start_api(redis_url, secret_key, UNPOLLED_AFTER_S="86400", ALERT_EVAL_S="0")
    yield server
    server.stop()


def test_a_coordinator_sees_who_is_dark_and_an_admin_acknowledges_and_snoozes(
    browser: Browser,  # noqa: F811 (the fixture)
    alerting_site: ApiServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    server = alerting_site
    viewer, errors = log_in(browser, server.url, make_token(redis_url, "viewer", True), tmp_path)
    viewer.goto(f"{server.url}/alerts")
    rows = viewer.locator("table.alerts tbody tr")
    assert rows.count() == 2
    text = " ".join(rows.all_inner_texts())
    assert "Power-cycle the gateway" in text and "enter it again" in text and "00f001@example.org" in text
    assert viewer.locator("table.alerts form").count() == 0, "a read-only session acts on nothing"
    assert "not-shown-7" not in viewer.content()
    viewer.goto(f"{server.url}/fleet/00f001")
    assert (
        "frozen" in viewer.locator("h1").inner_text()
        and "Power-cycle" in viewer.locator("p.health").inner_text()
    )

    admin, more = log_in(browser, server.url, make_token(redis_url, "coordinator"), tmp_path)
    admin.goto(f"{server.url}/alerts?cause=frozen")
    assert admin.locator("table.alerts tbody tr").count() == 1
    admin.fill("form[action^='/alerts/ack/'] input[name=note]", "asked them to unplug it")
    admin.click("form[action^='/alerts/ack/'] button")
    admin.wait_for_url("**/alerts")
    admin.goto(f"{server.url}/alerts?state=acknowledged")
    acked = admin.locator("table.alerts tbody tr")
    assert acked.count() == 1 and "by coordinator: asked them to unplug it" in acked.inner_text()
    admin.goto(f"{server.url}/alerts?cause=auth")
    admin.fill("form[action='/alerts/snooze/00f002'] input[name=until]", "2099-01-31")
    admin.click("form[action='/alerts/snooze/00f002'] button")
    admin.wait_for_url("**/alerts")
    assert "snoozed until 2099-01-31" in admin.locator("table.alerts").inner_text()
    admin.screenshot(path=str(tmp_path / "alerts.png"), full_page=True)
    assert not errors and not more, errors + more
