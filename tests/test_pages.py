"""The pages in a real browser: Debian's headless Chromium driven by Playwright, against a real
`rainforest server`, a running pinger and the simulator. Screenshots land in the test's folder."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from app.lines import read as read_lines
from tests.api_helpers import ApiServer, start_api
from tests.api_helpers import make_token as _make_token
from tests.api_helpers import revoke_token as _revoke_token
from tests.conftest import Sim, wait_until
from tests.redis_cluster import sync_client
from tests.test_pinger_process import fleet_env, start_pinger

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make test`, which installs it.")
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield found
        found.close()


@pytest.fixture
def site(
    start_sim: Callable[..., Sim], redis_url: str, secret_key: str, tmp_path: Path
) -> Iterator[tuple[ApiServer, Path, Sim]]:
    sim = start_sim(12, "--protocols", "eagle100-cloud=1,eagle200-local=1,eagle100-local=1")
    env = fleet_env(sim, redis_url, secret_key, tmp_path)
    env["LOCAL_REQUEST_GAP_S"] = "0.05"
    pinger = start_pinger(env, tmp_path)
    server = start_api(redis_url, secret_key, sim.url, DATA_DIR=env["DATA_DIR"], POLL_INTERVAL_S="0.5",
                       POLL_TIMEOUT_S="0.4")  # fmt: skip
    data = Path(env["DATA_DIR"])
    wait_until(lambda: len(list(data.glob("logs/????-??-??-??/*.jl"))) == 12, timeout_s=15, what="readings")
    yield server, data, sim
    server.stop()
    pinger.send_signal(signal.SIGTERM)
    pinger.wait(15)


def make_token(redis_url: str, name: str, read_only: bool = False) -> str:
    """Playwright's sync API holds this thread's event loop: talk to Redis from another thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_make_token, redis_url, name, read_only).result()


def revoke_token(redis_url: str, name: str) -> None:
    with ThreadPoolExecutor(1) as pool:
        pool.submit(_revoke_token, redis_url, name).result()


def log_in(browser: Browser, url: str, token: str, shots: Path) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/fleet")
    assert "/login" in page.url
    page.fill("#token", token)
    page.click("form.login button[type=submit]")
    page.wait_for_url("**/fleet")
    return page, errors


def test_the_pages_show_the_fleet_its_charts_and_what_each_token_may_do(
    browser: Browser, site: tuple[ApiServer, Path, Sim], redis_url: str, tmp_path: Path
) -> None:
    server, data, _ = site
    shots = tmp_path / "screenshots"
    shots.mkdir()
    admin, errors = log_in(browser, server.url, make_token(redis_url, "admin"), shots)
    rows = admin.locator("table.fleet tbody tr")
    assert rows.count() == 12
    admin.screenshot(path=str(shots / "fleet.png"))

    # server-side filters and sorting
    admin.select_option("select[name=protocol]", "eagle200-local")
    admin.click("form.filters button[type=submit]")
    assert rows.count() == 4 and all("eagle200-local" in t for t in rows.all_inner_texts())
    admin.goto(f"{server.url}/fleet?sort=cloud_id&dir=desc")
    ids = [r.split("\t")[0] for r in rows.all_inner_texts()]
    assert ids == sorted(ids, reverse=True)
    csv = admin.request.get(f"{server.url}/fleet?format=csv&protocol=eagle100-local").text()
    assert len(csv.splitlines()) == 5 and csv.startswith("cloud_id,")

    # one device: its chart draws every reading its files hold
    cid = ids[0]
    on_disk = {
        int(r["device_time"])  # type: ignore[call-overload]
        for path in data.glob(f"logs/????-??-??-??/*-{cid}-*.jl")
        for r in read_lines(path).records
        if r.get("kind", "demand") == "demand"
    }  # counted first: the files only grow, so the page must draw at least these
    admin.goto(f"{server.url}/fleet/{cid}")
    admin.wait_for_selector("#chart-demand .uplot")
    drawn = int(admin.locator("#chart-demand").get_attribute("data-points") or "0")
    assert drawn >= len(on_disk) > 0
    admin.screenshot(path=str(shots / "device.png"), full_page=True)

    admin.goto(f"{server.url}/stats")
    admin.wait_for_selector("#chart-completeness .uplot")
    admin.wait_for_selector("#chart-added .uplot")
    admin.screenshot(path=str(shots / "stats.png"), full_page=True)

    # "crawl now" is taken up by the pinger within seconds, and the answer shows on the page
    admin.goto(f"{server.url}/fleet/{cid}")
    admin.click("form.crawl button")

    def crawled() -> bool:
        admin.goto(f"{server.url}/fleet/{cid}")
        return admin.locator("table.crawls tbody tr").count() == 1

    wait_until(crawled, timeout_s=15, what="the crawl asked for from the page")
    assert "2.0." in admin.locator("table.crawls").inner_text()  # the gateway's firmware

    # an admin deactivates a device from its page; a read-only session cannot
    admin.click("form.action button")
    admin.wait_for_selector("form.action button:has-text('Activate')")
    reader, reader_errors = log_in(
        browser, server.url, make_token(redis_url, "reader", read_only=True), shots
    )
    reader.goto(f"{server.url}/fleet/{cid}")
    assert reader.locator("form.action").count() == 0  # no button to press
    xsrf = reader.locator("input[name=_xsrf]").first.get_attribute("value")
    refused = reader.request.post(f"{server.url}/fleet/{cid}/activate", form={"_xsrf": xsrf or ""})
    assert refused.status == 403 and "read-only" in refused.text()
    assert errors == [] and reader_errors == [], (errors, reader_errors)


def test_a_gap_in_the_data_is_drawn_as_a_gap(
    browser: Browser, site: tuple[ApiServer, Path, Sim], redis_url: str, tmp_path: Path
) -> None:
    server, _, sim = site
    cid = str(sim.users()[0]["cloud_id"])
    token = make_token(redis_url, "gap")

    def readings() -> dict[str, list[object]]:
        url = f"{server.url}/api/users/{cid}/readings?resolution=0"
        return requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).json()  # type: ignore[no-any-return]

    wait_until(lambda: len(readings()["t"]) >= 4, timeout_s=10, what="a few readings before the outage")
    sim.set_faults({"devices": {cid: {"error": "offline"}}})
    time.sleep(5.0)
    sim.set_faults({})
    wait_until(lambda: readings()["value"][-1] is not None and None in readings()["value"], timeout_s=15,
               what="readings after the outage, with the outage a gap between them")  # fmt: skip
    page, errors = log_in(browser, server.url, token, tmp_path)
    page.goto(f"{server.url}/fleet/{cid}")
    page.wait_for_selector("#chart-demand .uplot")
    page.screenshot(path=str(tmp_path / "gap.png"))
    assert errors == []


def test_sessions_end_with_their_token_and_forms_need_their_xsrf_token(
    site: tuple[ApiServer, Path, Sim], redis_url: str, secret_key: str
) -> None:
    server, _, _ = site
    token = make_token(redis_url, "short-lived")
    s = requests.Session()
    form = s.get(f"{server.url}/login", timeout=5).text
    xsrf = form.split('name="_xsrf" value="')[1].split('"')[0]
    assert s.post(f"{server.url}/login", data={"token": token}, timeout=5).status_code == 403  # no XSRF token
    ok = s.post(f"{server.url}/login", data={"token": token, "_xsrf": xsrf}, allow_redirects=False, timeout=5)
    assert (
        ok.status_code == 302
        and "HttpOnly" in ok.headers["Set-Cookie"]
        and "SameSite=Strict" in ok.headers["Set-Cookie"]
    )
    assert s.get(f"{server.url}/fleet", timeout=5).status_code == 200
    assert s.get(f"{server.url}/api/stats", timeout=5).status_code == 200  # the pages' data route
    cid = s.get(f"{server.url}/fleet?format=csv", timeout=5).text.splitlines()[1].split(",")[0]
    for path in (f"/fleet/{cid}", f"/api/users/{cid}", "/fleet?format=csv", f"/api/users/{cid}/readings"):
        text = s.get(f"{server.url}{path}", timeout=5).text
        assert "user_pw" not in text and "install_code" not in text and token not in text, path
    assert s.post(f"{server.url}/fleet/{cid}/deactivate", data={}, timeout=5).status_code == 403  # no XSRF
    revoke_token(redis_url, "short-lived")
    gone = s.get(f"{server.url}/fleet", allow_redirects=False, timeout=5)
    assert gone.status_code == 302 and "/login" in gone.headers["Location"]
    assert s.get(f"{server.url}/api/stats", timeout=5).status_code == 401


def test_login_goes_back_only_to_this_site_and_the_csv_never_runs_in_a_spreadsheet(
    site: tuple[ApiServer, Path, Sim], redis_url: str
) -> None:

    from app import keys

    server, _, _ = site
    token = make_token(redis_url, "redirects")

    def login_to(next_: str) -> str:
        s = requests.Session()
        form = s.get(f"{server.url}/login", params={"next": next_}, timeout=5).text
        xsrf = form.split('name="_xsrf" value="')[1].split('"')[0]
        got = s.post(
            f"{server.url}/login", params={"next": next_}, data={"token": token, "_xsrf": xsrf},
            allow_redirects=False, timeout=5,
        )  # fmt: skip
        assert got.status_code == 302
        return got.headers["Location"]

    for hostile in ("/\\evil.example", "//evil.example", "https://evil.example", "/\t/evil.example", "evil"):
        assert login_to(hostile) == "/fleet", hostile
    assert login_to("/fleet?status=failing") == "/fleet?status=failing"

    # what an importer could put in a record; before the first read of /fleet (a fresh snapshot)
    with sync_client(redis_url, decode_responses=True) as r:
        cid = sorted(r.smembers(keys.devices_active(0)))[0]
        r.hset(keys.device(cid), mapping={"user_email": '=HYPERLINK("http://x")'})
        failing = sorted(r.smembers(keys.devices_active(0)))[-1]
        dark = {"health": "unreachable", "health_since": "1.0", "last_error": "timeout: no reply"}
        r.hset(keys.device(failing), mapping=dark)
    s = requests.Session()
    form = s.get(f"{server.url}/login", timeout=5).text
    xsrf = form.split('name="_xsrf" value="')[1].split('"')[0]
    s.post(f"{server.url}/login", data={"token": token, "_xsrf": xsrf}, timeout=5)
    import csv
    import io

    rows = list(csv.reader(io.StringIO(s.get(f"{server.url}/fleet?format=csv", timeout=5).text)))
    emails = [row[1] for row in rows[1:]]
    assert rows[1][0] == failing and rows[1][3] == "unreachable", "the fleet lists dark households first"
    assert '\'=HYPERLINK("http://x")' in emails
    assert not [e for e in emails if e[:1] in ("=", "+", "-", "@")]
