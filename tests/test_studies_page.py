"""The pages for a study in a real browser: a study's session sees its households only (the fleet,
the studies, the study's page with who is enrolled and who is dark), another study is not there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from app.credentials import Vault
from app.devices import DeviceInput
from app.store import PollUpdate, Store
from app.studies import Enrolment, Study
from app.tokens import Tokens
from tests.api_helpers import ApiServer, start_api
from tests.test_pages import browser, log_in  # noqa: F401 (the browser fixture)

MINE, THEIRS = (
    Study("heat-pump-2027", "Heat pump trial", "America/Chicago"),
    Study("city-pilot", "City pilot", "Europe/London"),
)


def _prepare(redis_url: str, secret_key: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        store, vault = Store.from_url(redis_url), Vault(secret_key)
        try:
            for s in (MINE, THEIRS):
                await store.studies.save(s)
            for cid, study, pid in (
                ("0a1001", MINE, "hp-001"),
                ("0a1002", MINE, "hp-002"),
                ("0a1003", THEIRS, "cp-001"),
            ):
                user = {"cloud_id": cid, "user_email": f"{cid}@example.org", "user_pw": "pw"}
                await store.devices.save_device(DeviceInput.from_mapping(user), vault)
                body = {"enrolled_from": "2026-01-01", "participant_id": pid}
                await store.studies.enrol(cid, Enrolment.from_mapping(body, study, cid))
            since = repr(time.time() - 3600)
            dark = {
                "health": "frozen",
                "health_since": since,
                "condition": "frozen",
                "condition_since": since,
            }
            await store.devices.record_polls([PollUpdate("0a1002", fields=dark)])
            tokens = Tokens(store)
            return {
                "lead": await tokens.create("lead", read_only=True, study=MINE.id),
                "ops": await tokens.create("ops"),
            }
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        return pool.submit(asyncio.run, go()).result()


@pytest.fixture
def study_site(redis_url: str, secret_key: str) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    tokens = _prepare(redis_url, secret_key)
    server = start_api(redis_url, secret_key, UNPOLLED_AFTER_S="86400", ALERT_EVAL_S="0")
    yield server, tokens
    server.stop()


def test_a_study_session_sees_its_households_only(
    browser: Browser,  # noqa: F811 (the fixture)
    study_site: tuple[ApiServer, dict[str, str]],
    tmp_path: Path,
) -> None:
    server, tokens = study_site
    lead, errors = log_in(browser, server.url, tokens["lead"], tmp_path)
    ids = [r.split("\t")[0] for r in lead.locator("table.fleet tbody tr").all_inner_texts()]
    assert sorted(ids) == ["0a1001", "0a1002"], "the fleet of a study's session is its study"
    lead.goto(f"{server.url}/studies")
    assert lead.locator("table.fleet tbody tr").count() == 1 and "heat-pump-2027" in lead.content()
    lead.goto(f"{server.url}/studies/{MINE.id}")
    text = lead.locator("table.study").inner_text()
    assert "hp-001" in text and "hp-002" in text and "America/Chicago" in text and "cp-001" not in text
    assert "1 dark now" in lead.locator("p.incident").inner_text()
    assert lead.goto(f"{server.url}/studies/{THEIRS.id}").status == 404  # type: ignore[union-attr]
    assert lead.goto(f"{server.url}/fleet/0a1003").status == 404  # type: ignore[union-attr]
    ops, more = log_in(browser, server.url, tokens["ops"], tmp_path)
    ops.goto(f"{server.url}/fleet?study={THEIRS.id}")
    assert [r.split("\t")[0] for r in ops.locator("table.fleet tbody tr").all_inner_texts()] == ["0a1003"]
    ops.goto(f"{server.url}/studies")
    assert ops.locator("table.fleet tbody tr").count() == 2
    unexpected = [e for e in errors + more if "status of 404" not in e]  # the two 404s asked for above
    assert not unexpected, unexpected
