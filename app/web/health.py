"""/healthz (no token) and /metrics (Prometheus text)."""

from __future__ import annotations

import time
from collections import Counter

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import health
from app.errors import StoreError
from app.web.base import BaseHandler


class HealthHandler(BaseHandler):
    route = "/healthz"
    public = True

    async def get(self) -> None:
        try:
            await self.ctx.store.ping()
        except StoreError:
            self.send_json({"ok": False, "redis": "unreachable"}, status=503)
            return
        self.send_json({"ok": True, "redis": "reachable"})


class MetricsHandler(BaseHandler):
    route = "/metrics"
    deployment_only = True

    async def get(self) -> None:
        self.query(set())
        counts: Counter[str] = Counter({"ok": 0, "failing": 0, "never": 0, "inactive": 0})
        records = await self.ctx.store.devices.all_devices()
        counts.update("inactive" if not r.active else r.status for r in records)
        for status, n in counts.items():
            self.ctx.metrics.devices.labels(status).set(n)
        now, held = time.time(), await self.ctx.leases.held()
        states = Counter(dict.fromkeys(health.STATES, 0))
        states.update(health.view(r, now, self.ctx.thresholds, held).state for r in records)
        for state, n in states.items():
            self.ctx.metrics.health.labels(state).set(n)
        await self._alerts()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.ctx.metrics.registry))

    async def _alerts(self) -> None:
        """Open alerts by cause, open incidents by path, and what each route has still to send."""
        m, book = self.ctx.metrics, self.ctx.store.alerts
        causes = Counter(dict.fromkeys(health.STATES, 0))
        opened = await book.open_alerts()
        for alert in await book.alerts(list(opened.values())):
            causes[alert.get("cause", "")] += 1
        for cause, n in causes.items():
            if cause in health.STATES and cause not in health.QUIET:
                m.alerts_open.labels(cause).set(n)
        m.incidents_open.clear()
        for path in await book.open_incidents():
            m.incidents_open.labels(path).set(1)
        for route in self.ctx.alert_routes:
            m.notifications_waiting.labels(route).set(await self.ctx.store.outbox.waiting(route))
