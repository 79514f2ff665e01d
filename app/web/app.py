"""make_app: the Tornado application, its routes and collaborators."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from functools import partial
from pathlib import Path

import tornado.web
from tornado.log import access_log

from app.alerts.routes import routes_from
from app.archive.backend import Archive
from app.archive.factory import open_archive
from app.carts.jobs import open_queue
from app.carts.registry import CartRegistry
from app.credentials import Vault
from app.devices import DeviceRecord
from app.eagle.client import Clients
from app.errors import ConfigError
from app.health import Thresholds
from app.hours import Day
from app.leases import Leases
from app.logs import redact_url
from app.pinger.ledger import Ledger
from app.push.receiver import PushReceiver
from app.push.writer import PushWriter
from app.series import SeriesSource
from app.settings import Settings
from app.store import Store
from app.tokens import Tokens
from app.web.alerts import AlertAckApiHandler, AlertsApiHandler, SnoozeApiHandler
from app.web.alerts_page import AlertsPageActionHandler, AlertsPageHandler
from app.web.base import BaseHandler, NotFoundHandler
from app.web.carts import CartHandler, CartsHandler
from app.web.completeness import CompletenessHandler
from app.web.context import Context, Metrics
from app.web.devices import DeviceApiHandler, DeviceCheckApiHandler, DeviceListApiHandler
from app.web.events import EventHandler
from app.web.fleet_view import FleetRow, Snapshot, rows
from app.web.health import HealthHandler, MetricsHandler
from app.web.heavy import HeavyWork
from app.web.openapi import document
from app.web.pages import (
    ActionHandler,
    DeviceHandler,
    FleetHandler,
    LoginHandler,
    LogoutHandler,
    StatsPageHandler,
    fleet_stats,
)
from app.web.push import PushHandler
from app.web.readings import ReadingsHandler
from app.web.sessions import Sessions
from app.web.static_files import StaticFiles
from app.web.studies import (
    CompleteApiHandler,
    ErasureApiHandler,
    ParticipantApiHandler,
    ParticipantsApiHandler,
    StudiesApiHandler,
    StudyApiHandler,
    WithdrawApiHandler,
)
from app.web.studies_page import StudiesPageHandler, StudyPageHandler

CLOUD_ID_SEGMENT = r"([^/]+)"  # validated by the handler, so a bad id gets a clear 400, not a 404


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access line, with a secret query parameter's value (a push key given as ?key=)
    replaced by ***: never logged."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return  # nothing to format
    log = functools.partial(access_log.log, level)
    uri = redact_url(handler.request.uri or "")
    request = handler.request
    log("%d %s %s (%s) %.2fms", status, request.method, uri, request.remote_ip, 1000 * request.request_time())


class OpenApiHandler(BaseHandler):
    route = "/api/openapi.json"

    def get(self) -> None:
        self.query(set())
        self.send_json(document())


def _archive_or_none(settings: Settings) -> Archive | None:
    """The archive charts read closed hours from; without one they show the local files."""
    try:
        return open_archive(settings)
    except ConfigError:
        return None


async def _fleet(store: Store, settings: Settings) -> tuple[list[DeviceRecord], list[FleetRow]]:
    """The registry and the fleet table's rows, built once per snapshot."""
    records = await store.devices.all_devices()
    today = await store.completeness.completeness_day(Day.at(time.time()).key)
    leases = Leases(store.redis)
    owners, held = await leases.owners(), await leases.held()
    limits = Thresholds.from_settings(settings)
    # every row's health judged in a thread: 10,000 of them held the loop (and every request) ~150 ms
    table = await asyncio.to_thread(rows, records, today, time.time(), limits, held, owners)
    return records, table


class StatsHandler(BaseHandler):
    route = "/api/stats"

    async def get(self) -> None:
        self.query(set())
        self.send_json(await fleet_stats(self.ctx, self.token.study if self.token is not None else ""))


def make_app(
    settings: Settings, store: Store, client: Clients, push: PushReceiver | None = None
) -> tornado.web.Application:
    push = push or PushReceiver(
        store,
        PushWriter(settings.logs_dir, settings.file_prefix, settings.max_open_files),
        Ledger(store),
        settings.max_push_bytes,
    )
    tokens = Tokens(store, settings.api_tokens)
    ctx = Context(
        settings, store, Vault(settings.secret_key), tokens, client, Metrics(),
        CartRegistry(store.redis), open_queue(settings), push, Sessions(store, tokens),
        SeriesSource(settings, _archive_or_none(settings)), Snapshot(partial(_fleet, store, settings)),
        Leases(store.redis), HeavyWork(settings.heavy_requests_per_token, settings.heavy_threads),
        Thresholds.from_settings(settings), [r.id for r in routes_from(settings)],
    )  # fmt: skip
    routes = [
        # Tornado tries routes in order: uploads first (every gateway, every few seconds), then
        # the API, then the pages
        (rf"/api/push/{CLOUD_ID_SEGMENT}", PushHandler),
        (r"/api/stats", StatsHandler),
        (r"/healthz", HealthHandler),
        (r"/metrics", MetricsHandler),
        (r"/api/openapi.json", OpenApiHandler),
        (rf"/api/event/{CLOUD_ID_SEGMENT}", EventHandler),
        (r"/api/users/?", DeviceListApiHandler),
        (rf"/api/users/{CLOUD_ID_SEGMENT}", DeviceApiHandler),
        (rf"/api/users/{CLOUD_ID_SEGMENT}/check", DeviceCheckApiHandler),
        (rf"/api/users/{CLOUD_ID_SEGMENT}/completeness", CompletenessHandler),
        (rf"/api/users/{CLOUD_ID_SEGMENT}/readings", ReadingsHandler),
        (r"/api/alerts/?", AlertsApiHandler),
        (r"/api/alerts/([^/]{1,80})/ack", AlertAckApiHandler),
        (rf"/api/users/{CLOUD_ID_SEGMENT}/snooze", SnoozeApiHandler),
        (r"/api/studies/?", StudiesApiHandler),
        (r"/api/studies/([^/]{1,60})", StudyApiHandler),
        (r"/api/studies/([^/]{1,60})/participants/?", ParticipantsApiHandler),
        (rf"/api/studies/([^/]{{1,60}})/participants/{CLOUD_ID_SEGMENT}", ParticipantApiHandler),
        (rf"/api/studies/([^/]{{1,60}})/participants/{CLOUD_ID_SEGMENT}/complete", CompleteApiHandler),
        (rf"/api/studies/([^/]{{1,60}})/participants/{CLOUD_ID_SEGMENT}/withdraw", WithdrawApiHandler),
        (r"/api/studies/([^/]{1,60})/erasures/([^/]{1,60})", ErasureApiHandler),
        (r"/api/carts/?", CartsHandler),
        (r"/api/carts/([^/]+)", CartHandler),
        (r"/login", LoginHandler),
        (r"/logout", LogoutHandler),
        (r"/fleet", FleetHandler),
        (rf"/fleet/{CLOUD_ID_SEGMENT}", DeviceHandler),
        (rf"/fleet/{CLOUD_ID_SEGMENT}/(activate|deactivate|crawl)", ActionHandler),
        (r"/stats", StatsPageHandler),
        (r"/alerts", AlertsPageHandler),
        (r"/studies", StudiesPageHandler),
        (r"/studies/([^/]{1,60})", StudyPageHandler),
        (r"/alerts/(ack|snooze)/([^/]{1,80})", AlertsPageActionHandler),
    ]
    here = Path(__file__).parent
    return tornado.web.Application(
        [(r"/", tornado.web.RedirectHandler, {"url": "/fleet"})]
        + [(pattern, handler, {"ctx": ctx}) for pattern, handler in routes],
        template_path=str(here / "templates"),
        static_path=str(here / "static"),
        static_handler_class=StaticFiles,
        cookie_secret=settings.secret_key.split(",")[0],  # signs the XSRF cookie
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        compress_response=False,
        log_function=log_request,
        xheaders=True,  # behind nginx: the client's address comes from X-Real-IP / X-Forwarded-For
        rf_context=ctx,  # ApiServer closes the job queue's connections at shutdown
    )
