"""The pages for a study in a real browser: a study's session sees its households only (the fleet,
the studies, the study's page with who is enrolled and who is dark), another study is not there."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser

from app.credentials import Vault
from app.db.alerts import alert_id
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
            theirs = {"kind": "unreachable", "study": THEIRS.id}
            await store.alerts.open_alert("0a1003", alert_id("0a1003", 1000), 1000.0, theirs, None)
            tokens = Tokens(store)
            return {
                "lead": await tokens.create("lead", read_only=True, study=MINE.id),
                "lead_admin": await tokens.create("lead-admin", study=MINE.id),
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


MASKED_XSRF = re.compile(r'name="_xsrf" value="[^"]*"')


def _session(url: str, token: str) -> tuple[requests.Session, str]:
    s = requests.Session()
    xsrf = s.get(f"{url}/login", timeout=10).text.split('name="_xsrf" value="')[1].split('"')[0]
    assert s.post(f"{url}/login", data={"token": token, "_xsrf": xsrf}, timeout=10).status_code == 200
    return s, xsrf


def test_every_page_answers_another_studys_household_as_an_unknown_one(
    study_site: tuple[ApiServer, dict[str, str]],
) -> None:
    """The pages' matrix: every page route naming a household or a study, for both kinds of study
    session: another study's answers exactly as one that does not exist (status and body)."""
    server, tokens = study_site
    pages = [("GET", "/fleet/{cid}"), ("GET", "/fleet/{cid}?format=csv"), ("GET", "/studies/{sid}")]
    pages += [("POST", f"/fleet/{{cid}}/{action}") for action in ("activate", "deactivate", "crawl")]
    pages += [("POST", "/alerts/ack/{cid}-1000"), ("POST", "/alerts/snooze/{cid}")]
    checked = 0
    for kind in ("lead", "lead_admin"):
        s, xsrf = _session(server.url, tokens[kind])
        for method, page in pages:
            answers = []
            for cid, sid in (("0a1003", THEIRS.id), ("0bffff", "no-such-study")):
                url = server.url + page.format(cid=cid, sid=sid)
                form = {"_xsrf": xsrf, "until": "2030-01-01"}
                r = s.post(url, data=form, timeout=10) if method == "POST" else s.get(url, timeout=10)
                body = MASKED_XSRF.sub("", r.text)  # masked afresh on every page (Tornado's BREACH defence)
                answers.append((r.status_code, body.replace(cid, "X").replace(sid, "X")))
            assert answers[0] == answers[1], (kind, method, page, answers)
            assert answers[0][0] in (403, 404), (kind, method, page, answers[0][0])
            checked += 1
    assert checked == 2 * len(pages)
    ops, xsrf = _session(server.url, tokens["ops"])
    assert ops.get(f"{server.url}/fleet/0a1003", timeout=10).status_code == 200, "the operator sees it"
