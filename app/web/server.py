"""The `rainforest server` process: serve the API until SIGTERM, then drain and close."""

from __future__ import annotations

import asyncio
import logging

import tornado.httpserver
import tornado.netutil

from app.eagle.client import Clients, new_session
from app.erasure.local import LocalSweep
from app.heartbeat import Heartbeat
from app.lifecycle import binding, settle
from app.pinger.ledger import Ledger
from app.push.receiver import PushReceiver
from app.push.upkeep import PushUpkeep
from app.push.writer import PushWriter
from app.settings import Settings
from app.store import Store, follow_failovers
from app.web.app import make_app
from app.web.base import SERVER_MAX_BODY_BYTES

log = logging.getLogger(__name__)


class ApiServer:
    """One HTTP server bound to host:port; `run` returns after `request_stop` and a drain."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.host, self.port = settings, settings.server_host, settings.server_port
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        with binding(self.port, "the API server", "--port or SERVER_PORT"):  # before anything is opened
            sockets = tornado.netutil.bind_sockets(self.port, self.host)
        store = Store.for_settings(self.settings, max_connections=100)
        session = new_session(200, self.settings.eagle_tls_verify)
        client = Clients(session, self.settings.poll_timeout_s, self.settings.local_request_gap_s)
        writer = PushWriter(self.settings.logs_dir, self.settings.file_prefix, self.settings.max_open_files)
        ledger = Ledger(store)
        push = PushReceiver(store, writer, ledger, self.settings.max_push_bytes)
        app = make_app(self.settings, store, client, push)
        server = tornado.httpserver.HTTPServer(app, xheaders=True, max_body_size=SERVER_MAX_BODY_BYTES)
        server.add_sockets(sockets)
        settle()
        log.info("server listening", extra={"host": self.host, "port": self.port})
        heartbeat = asyncio.create_task(
            Heartbeat(store, "server", lambda: {"port": str(self.port)}).run(self._stop)
        )
        upkeep = PushUpkeep(store, push, self.settings.push_stale_s, self.settings.completeness_days * 86400)
        upkept = asyncio.create_task(upkeep.run(self._stop))
        swept = asyncio.create_task(LocalSweep(self.settings, store).run(self._stop))  # pushed files, carts
        failovers = asyncio.create_task(follow_failovers(self.settings, self._stop))
        key_changes = asyncio.create_task(push.keys.follow(self._stop))  # a new push key takes effect at once
        try:
            await self._stop.wait()
        finally:
            await heartbeat
            server.stop()  # no new uploads; then the held counters and files are flushed
            await asyncio.wait_for(server.close_all_connections(), 10)
            await upkept
            await swept
            await failovers
            await key_changes
            await app.settings["rf_context"].queue.disconnect()
            await store.close()
            await session.close()
            log.info("server stopped")
