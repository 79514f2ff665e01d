"""The alerts' background work in every server process, beside the HTTP server: every
ALERT_EVAL_S the process holding the evaluator's lease evaluates (app.alerts.evaluate) and queues
the day's digest when it is due; every process sends what is queued (app.alerts.sender). None of
it runs inside a request or the pinger's loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from app import health
from app.alerts import messages
from app.alerts.evaluate import Evaluator
from app.alerts.routes import AppriseRoute, EmailRoute, Route, routes_from, webhook_id
from app.alerts.sender import Sender
from app.credentials import Vault
from app.errors import ConfigError, CredentialError, StoreError
from app.heartbeat import Heartbeat, process_id
from app.hours import local_day
from app.leases import Leases
from app.settings import Settings
from app.store import Store
from app.studies import Study

log = logging.getLogger(__name__)
DIGEST_LATE_S = 12 * 3600  # a digest not sent at its time (the servers were down) goes out this late at most


class AlertService:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        routes: list[Route] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.settings, self.clock = store, settings, clock
        self.routes = routes_from(settings) if routes is None else routes
        self.route_ids = [r.id for r in self.routes]
        self.evaluator = Evaluator(store, settings, self.route_ids, clock)
        self.sender = Sender(store.outbox, self.routes, clock)
        self.holder = process_id()
        self.zone = ZoneInfo(settings.alert_timezone)
        self._pruned_at = 0.0
        self.study_route_objects: dict[str, list[Route]] = {}
        self.vault = Vault(settings.secret_key) if settings.secret_key else None
        self._unsealed: set[str] = set()  # studies whose routes could not be read (said once)

    async def run(self, stop: asyncio.Event) -> None:
        every_s = self.settings.alert_eval_s
        while not stop.is_set():
            await self.once(every_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def _study_routes(self) -> None:
        """A study's own routes: e-mail to its contacts (when SMTP_URL is set) and its
        notification URLs (decrypted here, in the process that sends): its households' alerts,
        and its own digest, go there too."""
        routes: dict[str, list[Route]] = {}
        for study in await self.store.studies.all():
            found: list[Route] = []
            if self.settings.smtp_url and study.contacts:
                sender = self.settings.alert_email_from
                found.append(EmailRoute(self.settings.smtp_url, sender, study.contacts, f"study-{study.id}"))
            found += [
                AppriseRoute(url, f"study-{study.id}-{webhook_id(url)}") for url in await self._urls(study)
            ]
            if found:
                routes[study.id] = found
        self.evaluator.study_routes = {sid: [r.id for r in found] for sid, found in routes.items()}
        self.study_route_objects = routes
        self.sender.routes = [*self.routes, *(r for found in routes.values() for r in found)]

    async def _urls(self, study: Study) -> list[str]:
        if not study.route_ids:
            return []
        try:
            if self.vault is None:
                raise ConfigError("SECRET_KEY is not set")
            return await self.store.studies.routes(study.id, self.vault)
        except (ConfigError, CredentialError) as exc:
            if study.id not in self._unsealed:
                self._unsealed.add(study.id)
                log.warning("a study's routes cannot be read", extra={"study": study.id, "reason": str(exc)})
            return []

    async def once(self, every_s: float | None = None) -> None:
        """One round: evaluate (when this process holds the lease), the digest, then send."""
        lease_s = 3 * (every_s or self.settings.alert_eval_s or 15.0)
        try:
            await self._study_routes()
            if await self.store.alerts.hold_evaluator(self.holder, lease_s):
                await self.evaluator.round()
                await self.digest_if_due()
                await self._prune()
        except StoreError as exc:
            log.warning("alerts not evaluated: Redis unreachable", extra={"reason": str(exc)})
        except Exception:  # a bug costs one round, never the server
            log.exception("alerts round failed")
        await self.sender.round()

    async def digest_if_due(self) -> bool:
        """Queue today's digest once, at ALERT_DIGEST_AT local time (or late, after an outage)."""
        at = self.settings.alert_digest_at
        if at in ("", "off") or not self.route_ids:
            return False
        now = self.clock()
        local = datetime.fromtimestamp(now, self.zone)
        hour, minute = (int(x) for x in at.split(":"))
        due = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if not timedelta(0) <= local - due < timedelta(seconds=DIGEST_LATE_S):
            return False
        day = local_day(due.timestamp(), self.zone)
        if not await self.store.alerts.digest_once(day, self.holder):
            return False
        await self.queue_digest(now, f"digest-{day}")
        for sid, routes in self.study_route_objects.items():  # each study's own, to its own routes
            message = messages.digest(await self.dark(now, sid), now, self.zone)
            await self.store.outbox.put(f"digest-{day}-{sid}", message, [r.id for r in routes], now)
        return True

    async def queue_digest(self, now: float, message_id: str) -> None:
        message = messages.digest(await self.dark(now), now, self.zone)
        await self.store.outbox.put(message_id, message, self.route_ids, now)
        log.info("digest queued", extra={"notification": message_id})

    async def dark(self, now: float, study: str = "") -> list[messages.Dark]:
        """Every household in trouble now (or one study's), for the digest."""
        thresholds = health.Thresholds.from_settings(self.settings)
        held = await Leases(self.store.redis).held()
        found = []
        for record in await self.store.devices.all_devices():
            if study and record.study != study:
                continue
            view = health.view(record, now, thresholds, held)
            if view.alerting:
                since = view.since or now
                missed = int((now - since) // self.settings.poll_interval_s)
                found.append(
                    messages.Dark(record.cloud_id, view.state, since, record.user_email, missed, view.detail)
                )
        return found

    async def test(self) -> dict[str, str]:
        """A test message through every route, sent now (not retried); route id → "delivered"
        or why not."""
        now = self.clock()
        sent = {}
        await self._study_routes()
        everyone = [*self.routes, *(r for found in self.study_route_objects.values() for r in found)]
        for route in everyone:
            mid = sent[route.id] = f"test-{route.id}-{int(now * 1000)}"
            await self.store.outbox.put(mid, messages.test(now, self.zone, route.id), [route.id], now)
        await self.sender.round()
        outcome = {}
        for route in everyone:
            message = await self.store.outbox.message(sent[route.id])
            if message.get(f"delivered:{route.id}"):
                outcome[route.id] = "delivered"
            else:
                await self.store.outbox.failed(route.id, sent[route.id], None, "a test is not retried")
                outcome[route.id] = message.get(f"error:{route.id}", "not sent")
        return outcome

    async def _prune(self) -> None:
        now = self.clock()
        if now - self._pruned_at < 3600:
            return
        self._pruned_at = now
        await self.store.alerts.prune(now - self.settings.alerts_keep_days * 86400)


class AlertDaemon:
    """`rainforest alerts run`: a process of its own that evaluates alerts every ALERT_EVAL_S and
    sends what is queued, until SIGTERM. Run one or several (they share the work through the
    evaluator's lease and the outbox's claims); judging a large fleet takes a core's time that
    the API server's requests should not wait behind."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        store = Store.for_settings(self.settings, max_connections=8)
        service = AlertService(store, self.settings)
        beat = Heartbeat(store, "alerts", lambda: {"routes": str(len(service.route_ids))})
        log.info("alerts running", extra={"every_s": self.settings.alert_eval_s, "routes": service.route_ids})
        beating = asyncio.create_task(beat.run(self._stop))
        try:
            await service.run(self._stop)
        finally:
            self._stop.set()
            await beating
            await beat.remove()
            await store.close()
            log.info("alerts stopped")
