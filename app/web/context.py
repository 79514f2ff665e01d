"""What handlers share: settings, store, credentials, tokens, the device client, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from saq import Queue

from app.carts.registry import CartRegistry
from app.credentials import Vault
from app.eagle.client import Clients
from app.health import Thresholds
from app.leases import Leases
from app.push.receiver import PushReceiver
from app.series import SeriesSource
from app.settings import Settings
from app.store import Store
from app.tokens import Tokens
from app.web.fleet_view import Snapshot
from app.web.heavy import HeavyWork
from app.web.sessions import Sessions


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rainforest_http_requests_total", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "rainforest_http_request_duration_seconds", "HTTP request latency by route and method",
            ["route", "method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.uploads = Counter(
            "rainforest_push_uploads_total",
            "Uploads from pushing gateways by outcome: ok, unauthorized, unknown_device, bad_upload, "
            "too_large, unavailable",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.pushed = Counter(
            "rainforest_push_readings_total",
            "Pushed readings by what became of them: written, duplicate, ignored",
            ["result"], registry=self.registry,
        )  # fmt: skip
        self.upload_latency = Histogram(
            "rainforest_push_upload_seconds",
            "Time to answer an upload (read, parse, write, counters queued)",
            registry=self.registry, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
        )  # fmt: skip
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.devices = Gauge(
            "rainforest_devices", "Registered devices by how their last poll went (inactive counted apart)",
            ["status"], registry=self.registry,
        )  # fmt: skip
        self.alerts_open = Gauge(
            "rainforest_alerts_open", "Open alerts (one per dark household) by cause",
            ["cause"], registry=self.registry,
        )  # fmt: skip
        self.incidents_open = Gauge(
            "rainforest_incidents_open", "Open fleet-wide incidents, by path (relay, push, a pinger)",
            ["path"], registry=self.registry,
        )  # fmt: skip
        self.notifications_waiting = Gauge(
            "rainforest_notifications_waiting", "Notifications a route has still to deliver (retrying)",
            ["route"], registry=self.registry,
        )  # fmt: skip
        self.health = Gauge(
            "rainforest_devices_health", "Registered devices by health state (app.health)",
            ["state"], registry=self.registry,
        )  # fmt: skip

    def count(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        """One request in the metrics (label lookups done once per route, method and status)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed_s)


@dataclass
class Context:
    settings: Settings
    store: Store
    vault: Vault
    tokens: Tokens
    client: Clients
    metrics: Metrics
    carts: CartRegistry
    queue: Queue  # cart jobs
    push: PushReceiver  # gateways' uploads
    sessions: Sessions  # page logins
    series: SeriesSource  # readings for charts, from files and the archive
    fleet: Snapshot  # (records, today's completeness) for the pages, re-read every 2 s
    leases: Leases  # which pinger polls which device
    heavy: HeavyWork  # readings over long ranges and cart downloads: per token, in their own pool
    thresholds: Thresholds  # how long each trouble must last to become a device's health state
    alert_routes: list[str]  # the ids of the routes notifications go out by (app.alerts.routes)
