"""Studies: enrolment windows as consent (polling, pushes and readings cut at their edges, on an
injected clock), and access scoped to a study across every route of the OpenAPI document."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from app.credentials import Vault
from app.devices import DeviceInput
from app.errors import ValidationError
from app.lines import read as read_lines
from app.pinger.loop import Pinger
from app.settings import Settings
from app.store import Store
from app.studies import Enrolment, Study, moment
from app.tokens import Tokens
from app.web.openapi import document
from tests.api_helpers import ApiServer, start_api
from tests.clocked_sim import clocked_sim
from tests.conftest import Sim, wait_until

STUDY = Study("heat-pump-2027", "Heat pump trial", "America/Chicago")


def test_a_window_covers_its_start_and_not_its_end_in_the_households_zone() -> None:
    e = Enrolment.from_mapping(
        {"enrolled_from": "2026-03-08", "enrolled_until": "2026-11-01"}, STUDY, "00ab12"
    )
    chicago = ZoneInfo("America/Chicago")
    assert e.enrolled_from == 1772949600.0, "midnight in Chicago, CST"
    assert moment("2026-11-01", "x", "America/Chicago") == e.enrolled_until == 1793509200.0, "midnight, CDT"
    assert not e.covers(e.enrolled_from - 0.001) and e.covers(e.enrolled_from)
    assert e.covers(e.enrolled_until - 0.001) and not e.covers(e.enrolled_until)  # type: ignore[operator]
    assert e.clamp(0, 2e9) == (e.enrolled_from, e.enrolled_until) and e.clamp(0, 1e9) is None
    assert e.participant_id.startswith("p-") and e.timezone == chicago.key
    with pytest.raises(ValidationError, match="after enrolled_from"):
        Enrolment.from_mapping(
            {"enrolled_from": "2026-03-08", "enrolled_until": "2026-03-01"}, STUDY, "00ab12"
        )
    with pytest.raises(ValidationError, match="pseudonym"):
        Enrolment.from_mapping({"enrolled_from": 1, "participant_id": "jane@example.org"}, STUDY, "00ab12")
    done = e.completed(1780000000.0)
    assert done.state == "completed" and done.enrolled_until == 1780000000.0 and not done.covers(1780000000.0)


async def _device(store: Store, vault: Vault, cid: str) -> None:
    await store.devices.save_device(
        DeviceInput.from_mapping({"cloud_id": cid, "user_email": f"{cid}@example.org", "user_pw": "pw"}),
        vault,
    )


async def test_a_participant_id_is_one_households_and_a_device_is_in_one_study(
    redis_url: str, secret_key: str
) -> None:
    store, vault = Store.from_url(redis_url), Vault(secret_key)
    try:
        other = Study("city-pilot", "City pilot", "Europe/London")
        for s in (STUDY, other):
            await store.studies.save(s)
        for cid in ("0a0001", "0a0002"):
            await _device(store, vault, cid)
        first = Enrolment.from_mapping({"enrolled_from": 0, "participant_id": "hp-001"}, STUDY, "0a0001")
        await store.studies.enrol("0a0001", first)
        with pytest.raises(ValidationError, match="already names another household"):
            await store.studies.enrol("0a0002", Enrolment.from_mapping(
                {"enrolled_from": 0, "participant_id": "hp-001"}, STUDY, "0a0002"))  # fmt: skip
        with pytest.raises(ValidationError, match="enrolled in another study"):
            await store.studies.enrol("0a0001", Enrolment.from_mapping({"enrolled_from": 0}, other, "0a0001"))
        with pytest.raises(ValidationError, match="no device 0a0009"):
            await store.studies.enrol("0a0009", Enrolment.from_mapping({"enrolled_from": 0}, STUDY, "0a0009"))
        await store.studies.end("0a0001", first, 100.0)  # moving is an end, then a new enrolment
        await store.studies.enrol("0a0001", Enrolment.from_mapping({"enrolled_from": 0}, other, "0a0001"))
        record = await store.devices.get_device("0a0001")
        assert record is not None and record.study == "city-pilot"
        assert [p["participant_id"] for p in await store.studies.past("0a0001")] == ["hp-001"]
        assert await store.studies.device_ids(STUDY.id) == set()
    finally:
        await store.close()


async def test_polling_starts_and_stops_exactly_at_the_window(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    async with clocked_sim(2, {"eagle100-cloud": 1}, start=time.time() - 600) as cs:
        settings = make_settings(redis_url, cs.relay_url, poll_interval_s=6.0, poll_timeout_s=2.0)
        await cs.register(settings)
        enrolled, free = cs.sim.fleet[0].cloud_id, cs.sim.fleet[1].cloud_id
        t0 = cs.clock.now
        window = (t0 + 60.0, t0 + 120.0)
        store = Store.from_url(redis_url)
        await store.studies.save(STUDY)
        await store.studies.enrol(enrolled, Enrolment.from_mapping(
            {"enrolled_from": window[0], "enrolled_until": window[1]}, STUDY, enrolled))  # fmt: skip
        await store.close()
        pinger = Pinger.create(settings, clock=cs.clock, monotonic=cs.clock)
        await pinger.fleet.resync()
        outside = 0
        try:
            for _ in range(30):  # three minutes, a cycle every 6 s
                stats = await pinger.poll_once(spread=False)
                outside += stats.outside
                cs.clock.now += 6.0
        finally:
            await pinger.close()
    times: dict[str, list[float]] = {enrolled: [], free: []}
    for path in settings.logs_dir.glob("*/*.jl"):
        for record in read_lines(path).records:
            if record.get("kind", "demand") == "demand":
                times[str(record["cloud_id"])].append(float(record["polled_at"]))  # type: ignore[arg-type]
    assert times[free] and min(times[free]) < window[0] and max(times[free]) >= window[1]
    inside = sorted(times[enrolled])
    assert inside and window[0] <= inside[0] < window[0] + 6 and window[1] - 6 <= inside[-1] < window[1], (
        inside
    )
    assert outside == 30 - 10, "every cycle outside the window is counted, none polled"


@pytest.fixture
def scoped_site(
    redis_url: str, secret_key: str
) -> Iterator[tuple[ApiServer, dict[str, str], dict[str, str]]]:
    """Two studies with a household each, a household in none, and one token of every kind."""

    async def prepare() -> tuple[dict[str, str], dict[str, str]]:
        store, vault = Store.from_url(redis_url), Vault(secret_key)
        try:
            other = Study("city-pilot", "City pilot", "Europe/London")
            for s in (STUDY, other):
                await store.studies.save(s)
            devices = {"mine": "0b0001", "theirs": "0b0002", "loose": "0b0003"}
            for cid in devices.values():
                await _device(store, vault, cid)
            await store.studies.enrol("0b0001", Enrolment.from_mapping({"enrolled_from": 0}, STUDY, "0b0001"))
            await store.studies.enrol("0b0002", Enrolment.from_mapping({"enrolled_from": 0}, other, "0b0002"))
            t = Tokens(store)
            tokens = {
                "admin": await t.create("ops"), "read": await t.create("viewer", read_only=True),
                "study_admin": await t.create("lead", study=STUDY.id),
                "study_read": await t.create("analyst", read_only=True, study=STUDY.id),
            }  # fmt: skip
        finally:
            await store.close()
        return tokens, devices

    tokens, devices = asyncio.run(prepare())
    server = start_api(redis_url, secret_key, ALERT_EVAL_S="0")
    yield server, tokens, devices
    server.stop()


def _at(path: str, cid: str, sid: str) -> str:
    return path.replace("{cloud_id}", cid).replace("{id}", sid)


def _call(server: ApiServer, token: str, method: str, path: str) -> requests.Response:
    body = {"enrolled_from": 0} if "participants" in path else {}
    if path.endswith("/snooze"):
        body = {"until": "2099-01-01"}
    return requests.request(method, server.url + path, headers={"Authorization": f"Bearer {token}"},
                            json=body if method in ("POST", "PUT") else None, timeout=10)  # fmt: skip


def test_a_study_token_sees_another_study_as_nothing_on_every_route(
    scoped_site: tuple[ApiServer, dict[str, str], dict[str, str]],
) -> None:
    server, tokens, devices = scoped_site
    unknown_device, unknown_study = "0bffff", "no-such-study"
    checked = 0
    for path, methods in sorted(document()["paths"].items()):
        if path.startswith("/api/push/") or path == "/api/openapi.json":
            continue  # push devices authenticate with their own keys; the document is public to tokens
        for method in sorted(m.upper() for m in methods if m in ("get", "post", "delete")):
            for kind in ("study_admin", "study_read"):
                if "{cloud_id}" not in path and "{id}" not in path:
                    continue

                if "{id}" in path and "{cloud_id}" not in path:
                    theirs, nothing = _at(path, "", "city-pilot"), _at(path, "", unknown_study)
                else:
                    study = STUDY.id if "{id}" in path else ""
                    theirs, nothing = _at(path, devices["theirs"], study), _at(path, unknown_device, study)
                a, b = (
                    _call(server, tokens[kind], method, theirs),
                    _call(server, tokens[kind], method, nothing),
                )
                seen_a = (a.status_code, re.sub(f"{devices['theirs']}|city-pilot", "X", a.text))
                seen_b = (b.status_code, re.sub(f"{unknown_device}|{unknown_study}", "X", b.text))
                assert seen_a == seen_b, (kind, method, path, a.text, b.text)
                checked += 1
    assert checked >= 20, checked
    # lists and figures hold only the token's study; metrics need a deployment-wide token
    h = {"Authorization": f"Bearer {tokens['study_read']}"}
    listed = requests.get(f"{server.url}/api/users/", headers=h, timeout=10).json()["users"]
    assert [u["cloud_id"] for u in listed] == [devices["mine"]]
    assert requests.get(f"{server.url}/api/stats", headers=h, timeout=10).json()["devices"] == 1
    assert [
        s["id"] for s in requests.get(f"{server.url}/api/studies/", headers=h, timeout=10).json()["studies"]
    ] == [STUDY.id]
    assert requests.get(f"{server.url}/metrics", headers=h, timeout=10).status_code == 403
    every = {"Authorization": f"Bearer {tokens['read']}"}
    assert len(requests.get(f"{server.url}/api/users/", headers=every, timeout=10).json()["users"]) == 3
    assert requests.get(f"{server.url}/metrics", headers=every, timeout=10).status_code == 200
    # a study's admin acts on its own households only, and creates no study
    lead = {"Authorization": f"Bearer {tokens['study_admin']}"}
    body = {"enrolled_from": "2027-01-01", "participant_id": "hp-7"}
    mine = requests.post(f"{server.url}/api/studies/{STUDY.id}/participants/{devices['mine']}",
                         json=body, headers=lead, timeout=10)  # fmt: skip
    assert mine.status_code == 201 and mine.json()["participant_id"] == "hp-7"
    loose = requests.post(f"{server.url}/api/studies/{STUDY.id}/participants/{devices['loose']}",
                          json={"enrolled_from": 0}, headers=lead, timeout=10)  # fmt: skip
    assert loose.status_code == 404, "a household in no study is an operator's to enrol"
    made = requests.post(f"{server.url}/api/studies/new-one", json={"name": "x"}, headers=lead, timeout=10)
    assert made.status_code == 403


def test_the_cli_makes_a_study_enrols_a_household_and_a_researcher_token(
    redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    import os

    env = {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path)}

    def rf(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True
        )

    asyncio.run(_register_one(redis_url, secret_key, "0c0001"))
    made = rf("studies", "create", "solar-2027", "--name", "Solar homes", "--timezone", "Europe/London")
    assert made.returncode == 0 and "created study solar-2027 (Europe/London)" in made.stdout, made.stderr
    enrolled = rf(
        "participants", "enrol", "solar-2027", "0c0001", "--from", "2027-03-28", "--participant-id", "sh-01"
    )
    assert enrolled.returncode == 0, enrolled.stderr
    assert "from 2027-03-28T00:00:00+00:00 until open-ended (Europe/London)" in enrolled.stdout
    again = rf("participants", "enrol", "solar-2027", "0c0001", "--from", "nonsense")
    assert again.returncode == 1 and "enrolled_from must be a date" in again.stderr
    typo = rf("participants", "complete", "solar-2027", "0c00zz")
    assert (
        typo.returncode == 2
        and "cloud_id must be 6 hex digits" in typo.stderr
        and "Traceback" not in typo.stderr
    )
    assert "sh-01" in rf("participants", "list", "solar-2027").stdout
    token = rf("tokens", "create", "researcher", "--read-only", "--study", "solar-2027")
    assert token.returncode == 0 and token.stdout.startswith("rft_")
    assert "read in solar-2027" in rf("tokens", "list").stdout
    assert '"participant_id": "sh-01"' in rf("studies", "show", "solar-2027").stdout
    # a study's own notification route: kept encrypted, shown by digest, never repeated back
    bad = rf("studies", "create", "solar-2027", "--route", "nonsense://tok3n-abc")
    assert bad.returncode == 1 and "route 1 is not a notification URL" in bad.stderr
    assert "tok3n" not in bad.stderr + bad.stdout
    hooked = rf("studies", "create", "solar-2027", "--timezone", "Europe/London",
                "--route", "json://team:tok3n-abc@hooks.example/alerts")  # fmt: skip
    assert hooked.returncode == 0, hooked.stderr
    shown = rf("studies", "show", "solar-2027").stdout
    assert '"routes": [\n    "hook-' in shown and "tok3n" not in shown, shown


async def _register_one(redis_url: str, secret_key: str, cid: str) -> None:
    store = Store.from_url(redis_url)
    try:
        await _device(store, Vault(secret_key), cid)
    finally:
        await store.close()


def test_a_push_outside_the_window_is_refused_and_nothing_is_written(redis_url: str, secret_key: str) -> None:
    from tests.test_push import FIXTURES, KEY, register_push

    register_push(redis_url, secret_key, "0d0001")

    async def enrol(start: float, end: float | None) -> None:
        store = Store.from_url(redis_url)
        try:
            await store.studies.save(STUDY)
            body = {"enrolled_from": start, "enrolled_until": end, "participant_id": "hp-push"}
            await store.studies.enrol("0d0001", Enrolment.from_mapping(body, STUDY, "0d0001"))
        finally:
            await store.close()

    asyncio.run(enrol(time.time() + 86400, None))  # consent begins tomorrow
    server = start_api(redis_url, secret_key, ALERT_EVAL_S="0")
    try:
        demand = (FIXTURES / "push" / "eagle100_demand.xml").read_bytes()
        early = requests.post(f"{server.url}/api/push/0d0001", data=demand, auth=("0d0001", KEY), timeout=5)
        assert early.status_code == 403 and early.json()["error"] == "outside_window"
        assert "consent window" in early.json()["message"]
        assert not list(server.log_dir.glob("logs/*/*-0d0001-*.jl")), "nothing written"
        asyncio.run(enrol(time.time() - 60, None))

        def taken() -> bool:  # once the server's cached credentials (and window, 2 s) are read again
            sent = requests.post(
                f"{server.url}/api/push/0d0001", data=demand, auth=("0d0001", KEY), timeout=5
            )
            assert sent.status_code in (200, 403), sent.text
            return sent.status_code == 200

        wait_until(taken, 25, "the upload inside the window")
    finally:
        server.stop()


def test_the_devices_file_and_the_bulk_script_enrol_households(
    redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    import os

    asyncio.run(_study_only(redis_url))
    users = tmp_path / "users.jl"
    users.write_text(
        '{"cloud_id": "0f0001", "user_email": "a@example.org", "user_pw": "pw", "study": "heat-pump-2027", '
        '"enrolled_from": "2027-01-15", "participant_id": "hp-100"}\n'
        '{"cloud_id": "0f0002", "user_email": "b@example.org", "user_pw": "pw", "study": "no-such", '
        '"enrolled_from": "2027-01-15"}\n'
        '{"cloud_id": "0f0003", "user_email": "c@example.org", "user_pw": "pw", "participant_id": "x"}\n'
    )
    env = {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path)}
    ran = subprocess.run([sys.executable, "-m", "app.cli", "users", "import", str(users)], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert ran.returncode == 1 and "created 1, updated 0, unchanged 0, failed 2, enrolled 1" in ran.stdout
    assert (
        "users.jl:2: no study 'no-such'" in ran.stderr
        and "users.jl:3: enrolment fields need a study" in ran.stderr
    )
    server = start_api(redis_url, secret_key, ALERT_EVAL_S="0")
    try:
        token = asyncio.run(_admin_token(redis_url))
        again = tmp_path / "again.jl"
        again.write_text('{"cloud_id": "0f0004", "user_email": "d@example.org", "user_pw": "pw", '
                         '"study": "heat-pump-2027", "enrolled_from": "2027-02-01"}\n')  # fmt: skip
        script = [sys.executable, "scripts/add_user_info_via_server.py", str(again), "--server", server.url]
        done = subprocess.run(script, env={**env, "RAINFOREST_TOKEN": token}, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1])  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        server.stop()
    first, fourth = asyncio.run(_enrolments(redis_url, ["0f0001", "0f0004"]))
    assert first.participant_id == "hp-100" and fourth.participant_id.startswith("p-")
    assert fourth.enrolled_from == moment("2027-02-01", "x", "America/Chicago")


async def _enrolments(redis_url: str, ids: list[str]) -> list[Enrolment]:
    store = Store.from_url(redis_url)
    try:
        return [r.enrolment for r in await store.devices.load_devices(ids) if r.enrolment is not None]
    finally:
        await store.close()


async def _study_only(redis_url: str) -> None:
    store = Store.from_url(redis_url)
    try:
        await store.studies.save(STUDY)
    finally:
        await store.close()


async def _admin_token(redis_url: str) -> str:
    store = Store.from_url(redis_url)
    try:
        return await Tokens(store).create("bulk-admin")
    finally:
        await store.close()


async def test_a_refill_asks_the_gateway_for_nothing_before_the_window(
    start_sim: Callable[..., Sim], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    from tests.test_pinger import register

    sim = start_sim(1, "--protocols", "eagle100-cloud=1")
    settings = make_settings(redis_url, sim.url, summation_interval_s=60.0, price_interval_s=600.0)
    (cid,) = await register(sim, settings)
    now = time.time()
    window_start = now - 600.0
    store = Store.from_url(redis_url)
    try:
        await store.studies.save(STUDY)
        await store.studies.enrol(cid, Enrolment.from_mapping({"enrolled_from": window_start}, STUDY, cid))
    finally:
        await store.close()
    pinger = Pinger.create(settings)
    await pinger.fleet.resync()
    await pinger.poll_once(spread=False)
    state = pinger.fleet.devices[cid]
    state.refill_from, state.refill_until = now - 1800.0, int(now - 60)  # a half-hour gap, a third consented
    state.history_through, state.history_asked_at = 0, 0.0
    pinger.refiller.on_success(cid, state, pinger.clients.for_protocol("eagle100-cloud"), time.time(), None)
    await asyncio.gather(*pinger.refiller.tasks)
    await pinger.close()
    history = [
        int(r["device_time"])  # type: ignore[call-overload]
        for path in settings.logs_dir.glob("*/*.jl")
        for r in read_lines(path).records
        if r.get("source") == "history"
    ]
    assert history and min(history) >= window_start, (min(history, default=None), window_start)


def test_a_study_takes_at_most_ten_routes_each_one_apprise_understands() -> None:
    hooks = [f"json://hooks.example/{n}" for n in range(11)]
    assert len(Study.from_mapping({"routes": hooks[:10]}, "s").route_ids) == 10
    with pytest.raises(ValidationError, match="at most 10 notification URLs"):
        Study.from_mapping({"routes": hooks}, "s")
