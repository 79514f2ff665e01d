"""Alerts that reach people: outages opened and resolved once per route, incidents instead of a
storm, retries, several evaluators, the digest. A real pinger polls the simulator (on the test's
clock); messages land in a real SMTP server (aiosmtpd) and a webhook receiver through apprise."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.alerts.evaluate import Evaluator
from app.alerts.routes import AppriseRoute, EmailRoute, Route, webhook_id
from app.alerts.service import AlertService
from app.credentials import Vault
from app.devices import DeviceInput
from app.pinger.loop import Pinger
from app.settings import Settings
from app.store import PollUpdate, Store
from tests.catchers import Hook, Mailbox, smtp_catcher, webhook_catcher
from tests.clocked_sim import ClockedSim, clocked_sim
from tests.conftest import wait_until

# (the digest is tested on its own: here it must not depend on the hour a test runs)
QUICK = {"poll_interval_s": 6.0, "poll_timeout_s": 2.0, "local_request_gap_s": 0.0, "silent_after_s": 60.0,
         "frozen_after_s": 60.0, "auth_after_s": 60.0, "unpolled_after_s": 3600.0,
         "alert_digest_at": "off"}  # fmt: skip


def routes(mail: Mailbox, hook: Hook) -> list[Route]:
    return [
        EmailRoute(mail.url, "alerts@test", ("coordinator@test",)),
        AppriseRoute(hook.url, webhook_id(hook.url)),
    ]


async def step(pinger: Pinger, service: AlertService, cs: ClockedSim, n: int = 1) -> None:
    """One poll cycle, one alerts round, six seconds on."""
    for _ in range(n):
        await pinger.ownership.renew()
        await pinger.poll_once(spread=False)
        await service.once()
        cs.clock.now += 6.0


async def test_one_message_per_outage_per_route_and_one_when_it_ends(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    async with clocked_sim(4, {"eagle100-cloud": 1}, start=time.time() - 400) as cs:
        settings = make_settings(redis_url, cs.relay_url, **QUICK)
        await cs.register(settings)
        down, flaky = cs.sim.fleet[0].cloud_id, cs.sim.fleet[1].cloud_id
        with smtp_catcher() as mail, webhook_catcher() as hook:
            hook.refuse = 1  # the webhook refuses the first message: retried, the mail is not held up
            pinger = Pinger.create(settings, clock=cs.clock, monotonic=cs.clock)
            await pinger.fleet.resync()
            store = Store.from_url(settings.redis_url)
            service = AlertService(store, settings, routes(mail, hook), clock=cs.clock)
            try:
                await step(pinger, service, cs, 3)
                cs.sim.faults.replace({"devices": {down: {"error": "http_503"},
                                                   flaky: {"error": "http_503", "rate": 1 / 3}}})  # fmt: skip
                await step(pinger, service, cs, 20)  # two minutes: past SILENT_AFTER_S
                assert mail.subjects() == [f"[rainforest] {down} unreachable"], "one message, no more"
                assert hook.titles() == [f"[rainforest] {down} unreachable"], "retried after its refusal"
                cs.sim.faults.replace({})
                await step(pinger, service, cs, 5)
            finally:
                await pinger.close()
                await store.close()
        assert mail.subjects() == [f"[rainforest] {down} unreachable", f"[rainforest] {down} ok again"]
        assert hook.titles() == mail.subjects()
        body = mail.messages[1].get_payload()
        assert "Readings missed: about" in str(body) and "after 2 min unreachable" in str(body)
        assert settings.secret_key not in str(mail.messages[0]) and cs.sim.fleet[0].password not in str(
            mail.messages[0]
        )


async def test_three_hundred_households_failing_together_are_one_incident(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    async with clocked_sim(300, {"eagle100-cloud": 1}, start=time.time() - 400) as cs:
        settings = make_settings(redis_url, cs.relay_url, **QUICK, max_concurrency=300)
        await cs.register(settings)
        with smtp_catcher() as mail, webhook_catcher() as hook:
            pinger = Pinger.create(settings, clock=cs.clock, monotonic=cs.clock)
            await pinger.fleet.resync()
            store = Store.from_url(settings.redis_url)
            service = AlertService(store, settings, routes(mail, hook), clock=cs.clock)
            try:
                await step(pinger, service, cs, 2)
                cs.sim.faults.replace({"fleet": {"error": "http_503"}})  # the relay is down
                await step(pinger, service, cs, 14)
                assert mail.subjects() == ["[rainforest] incident: 300 households on relay unreachable"]
                alerts = await store.alerts.open_alerts()
                assert len(alerts) == 300, "each household's outage is still recorded"
                cs.sim.faults.replace({})
                await step(pinger, service, cs, 4)
            finally:
                await pinger.close()
                await store.close()
        assert mail.subjects() == ["[rainforest] incident: 300 households on relay unreachable",
                                   "[rainforest] incident over: relay"]  # fmt: skip
        assert hook.titles() == mail.subjects()


async def _dark_device(settings: Settings, cloud_id: str, since: float) -> None:
    """A registered device its pinger found unreachable (as the pinger stores it)."""
    store, vault = Store.from_url(settings.redis_url), Vault(settings.secret_key)
    try:
        user = {"cloud_id": cloud_id, "user_email": "home@example.org", "user_pw": "pw-not-in-mail-9"}
        await store.devices.save_device(DeviceInput.from_mapping(user), vault)
        health = {"health": "unreachable", "health_since": repr(since), "condition": "unreachable",
                  "condition_since": repr(since)}  # fmt: skip
        await store.devices.record_polls([PollUpdate(cloud_id, consecutive_failures=30, fields=health)])
    finally:
        await store.close()


async def _recovered(settings: Settings, cloud_id: str, at: float) -> None:
    store = Store.from_url(settings.redis_url)
    try:
        fields = {"health": "ok", "health_since": repr(at), "condition": "ok", "condition_since": repr(at)}
        await store.devices.record_polls([PollUpdate(cloud_id, last_success_at=at, fields=fields)])
    finally:
        await store.close()


async def test_two_evaluators_at_once_send_each_message_once(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings(redis_url, **QUICK)
    await _dark_device(settings, "00c0de", time.time() - 700)
    with smtp_catcher() as mail, webhook_catcher() as hook:
        stores = [Store.from_url(redis_url), Store.from_url(redis_url)]
        ids = [r.id for r in routes(mail, hook)]
        evaluators = [Evaluator(s, settings, ids) for s in stores]
        for _ in range(3):  # both decide, at the same moment, that the outage needs an alert
            await asyncio.gather(*(e.round() for e in evaluators))
        service = AlertService(stores[0], settings, routes(mail, hook))
        await service.sender.round()
        await _recovered(settings, "00c0de", time.time())
        for _ in range(3):
            await asyncio.gather(*(e.round() for e in evaluators))
        await service.sender.round()
        for s in stores:
            await s.close()
    assert mail.subjects() == ["[rainforest] 00c0de unreachable", "[rainforest] 00c0de ok again"]
    assert hook.titles() == mail.subjects()
    assert "pw-not-in-mail-9" not in str(mail.messages[0]) and "home@example.org" in str(mail.messages[0])


def _alerts_process(
    port: int, redis_url: str, secret_key: str, workdir: Path, mail: Mailbox
) -> subprocess.Popen[bytes]:
    import os
    import sys

    env = {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(workdir),
           "ALERT_EVAL_S": "0.3", "SMTP_URL": mail.url, "ALERT_EMAIL_TO": "coordinator@test",
           "SILENT_AFTER_S": "60", "UNPOLLED_AFTER_S": "3600", "ALERT_DIGEST_AT": "off"}  # fmt: skip
    with (workdir / f"alerts-{port}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "alerts", "run"], cwd=workdir,
                                env=env, stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip


async def test_alert_processes_restarted_mid_outage_send_nothing_twice(
    make_settings: Callable[..., Settings], redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    settings = make_settings(redis_url, **QUICK)
    await _dark_device(settings, "00c0df", time.time() - 700)
    with smtp_catcher() as mail:
        a = _alerts_process(free_port(), redis_url, secret_key, tmp_path, mail)
        b = _alerts_process(free_port(), redis_url, secret_key, tmp_path, mail)
        try:
            await asyncio.to_thread(wait_until, lambda: len(mail.messages) >= 1, 30, "the alert's mail")
            a.send_signal(signal.SIGKILL)  # the evaluator dies mid-outage; another takes over, and a restarts
            a.wait(10)
            a = _alerts_process(free_port(), redis_url, secret_key, tmp_path, mail)
            await _recovered(settings, "00c0df", time.time())
            await asyncio.to_thread(wait_until, lambda: len(mail.messages) >= 2, 30, "the recovery's mail")
            await asyncio.sleep(1.5)  # five more rounds of each server: nothing more may arrive
        finally:
            for p in (a, b):
                p.terminate()
                p.wait(15)
    assert mail.subjects() == ["[rainforest] 00c0df unreachable", "[rainforest] 00c0df ok again"]


async def test_the_daily_digest_lists_every_dark_household_once_a_day(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    quick = {**QUICK, "unpolled_after_s": 30 * 86400.0}  # no pinger runs here: not what this test is about
    settings = make_settings(
        redis_url, **{**quick, "alert_digest_at": "08:00"}, alert_timezone="America/Chicago"
    )
    await _dark_device(settings, "00d1e5", 1_800_000_000.0 - 3 * 86400)
    clock_now = [1_800_000_000.0]  # 2027-01-15 02:00 in Chicago: not yet
    with smtp_catcher() as mail, webhook_catcher() as hook:
        store = Store.from_url(redis_url)
        service = AlertService(store, settings, routes(mail, hook), clock=lambda: clock_now[0])
        try:
            assert not await service.digest_if_due()
            clock_now[0] += 6 * 3600 + 60  # 08:01 in Chicago
            assert await service.digest_if_due()
            assert not await service.digest_if_due(), "once a day, whoever asks"
            await service.sender.round()
        finally:
            await store.close()
    (message,) = mail.messages
    assert str(message["Subject"]).startswith("[rainforest] daily digest 2027-01-15")
    parts = list(message.walk())
    text = next(p for p in parts if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    csv_part = next(p for p in parts if p.get_content_type() == "text/csv")
    table = csv_part.get_payload(decode=True).decode()
    assert "00d1e5: unreachable since 2027-01-12 02:00 CST" in text and "contact home@example.org" in text
    assert table.splitlines()[0].startswith("cloud_id,state,since_utc") and "00d1e5,unreachable" in table
    assert hook.posts and hook.posts[0].get("attachments"), "the webhook gets the CSV too"


async def test_the_api_lists_acknowledges_and_snoozes(
    make_settings: Callable[..., Settings], redis_url: str, secret_key: str
) -> None:
    import requests

    from tests.api_helpers import conforms, make_token, start_api

    settings = make_settings(redis_url, **QUICK)
    await _dark_device(settings, "00a1e1", time.time() - 700)
    await _dark_device(settings, "00a1e2", time.time() - 700)
    store = Store.from_url(redis_url)
    try:
        await store.alerts.snooze("00a1e2", time.time() + 86400)  # a household away
        await Evaluator(store, settings, []).round()
    finally:
        await store.close()
    server = start_api(redis_url, secret_key, SILENT_AFTER_S="60", UNPOLLED_AFTER_S="3600", ALERT_EVAL_S="0")
    try:
        admin = {"Authorization": f"Bearer {await asyncio.to_thread(make_token, redis_url, 'coordinator')}"}
        reader = {"Authorization": f"Bearer {await asyncio.to_thread(make_token, redis_url, 'viewer', True)}"}
        got = requests.get(f"{server.url}/api/alerts", params={"state": "open"}, headers=reader, timeout=10)
        conforms(got, "/api/alerts", "GET")
        (alert,) = got.json()["alerts"]
        assert (alert["cloud_id"], alert["cause"], alert["state"]) == ("00a1e1", "unreachable", "open")
        ack = f"{server.url}/api/alerts/{alert['id']}/ack"
        assert requests.post(ack, json={"note": "called"}, headers=reader, timeout=10).status_code == 403
        done = requests.post(ack, json={"note": "called them; router unplugged"}, headers=admin, timeout=10)
        conforms(done, "/api/alerts/{id}/ack", "POST")
        assert done.json()["state"] == "acknowledged" and done.json()["acknowledged"]["by"] == "coordinator"
        missing = requests.post(f"{server.url}/api/alerts/nope-1/ack", json={}, headers=admin, timeout=10)
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_alert"
        snooze = f"{server.url}/api/users/00a1e1/snooze"
        bad = requests.post(snooze, json={"until": "2001-01-01"}, headers=admin, timeout=10)
        assert bad.status_code == 400 and "future date" in bad.json()["message"]
        ok = requests.post(snooze, json={"until": "2099-01-31"}, headers=admin, timeout=10)
        conforms(ok, "/api/users/{cloud_id}/snooze", "POST")
        assert ok.json()["snoozed_until"] == 4073587199.0  # 2099-01-31 23:59:59 UTC
    finally:
        server.stop()


def test_alerts_test_sends_through_every_route_and_names_the_one_that_refused(
    redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    import os
    import sys

    with smtp_catcher() as mail, webhook_catcher() as hook:
        hook.refuse = 1
        env = {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path),
               "SMTP_URL": mail.url, "ALERT_EMAIL_TO": "coordinator@test",
               "ALERT_APPRISE_URLS": hook.url}  # fmt: skip
        run = [sys.executable, "-m", "app.cli", "alerts", "test"]
        refused = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1, refused.stderr
        assert "email            delivered" in refused.stdout
        assert f"{webhook_id(hook.url)}  route {webhook_id(hook.url)} refused" in refused.stdout
        assert hook.url not in refused.stdout + refused.stderr, "a route's URL may hold a secret"
        fine = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert fine.returncode == 0 and fine.stdout.count("delivered") == 2, fine.stdout
    assert mail.subjects() == ["[rainforest] test message"] * 2 and hook.titles() == [
        "[rainforest] test message"
    ]


async def test_a_studys_households_alert_its_contacts_and_its_own_routes_too(
    make_settings: Callable[..., Settings], redis_url: str, caplog: Any
) -> None:
    from app.studies import Enrolment, Study

    with smtp_catcher() as mail, webhook_catcher() as hook:
        secret_url = hook.url.replace("json://", "json://team:hunter2-s3cret@")
        settings = make_settings(redis_url, **QUICK, smtp_url=mail.url, alert_email_to="ops@test")
        await _dark_device(settings, "00e5d1", time.time() - 700)
        await _dark_device(settings, "00e5d2", time.time() - 700)
        store = Store.from_url(redis_url)
        try:
            asked = {"timezone": "Europe/London", "contacts": ["lead@uni.example"], "routes": [secret_url]}
            study = Study.from_mapping(asked, "solar-2027")
            await store.studies.save(study, Vault(settings.secret_key))
            await store.studies.enrol("00e5d1", Enrolment.from_mapping({"enrolled_from": 0}, study, "00e5d1"))
            service = AlertService(store, settings)
            await service.once()
            kept = await store.studies.get("solar-2027")
            stored = [await store.redis.dump(k) for k in await store.redis.keys("*")]
        finally:
            await store.close()
    sent = sorted((str(m["To"]), str(m["Subject"])) for m in mail.messages)
    assert sent == [
        ("lead@uni.example", "[rainforest] 00e5d1 unreachable"),
        ("ops@test", "[rainforest] 00e5d1 unreachable"),
        ("ops@test", "[rainforest] 00e5d2 unreachable"),
    ], "the study's household reaches its contacts; another household does not"
    assert hook.titles() == ["[rainforest] 00e5d1 unreachable"], "and the study's own webhook, only its own"
    assert kept is not None and kept.public()["routes"] == [webhook_id(secret_url)], "named by digest"
    assert not [s for s in stored if s and b"hunter2" in s], "the route's secret is encrypted at rest"
    assert "hunter2" not in caplog.text
