"""`rainforest cartd`: saq workers that build carts, plus two housekeeping jobs every minute:
the watchdog (a cart whose worker died goes back to waiting and is queued again) and
eviction (CART_TTL after last access)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from saq import CronJob, Worker

from app.archive.backend import open_archive
from app.carts import jobs
from app.carts.build import Builder
from app.carts.model import BUILDING, STATES, WAITING
from app.carts.registry import CartRegistry
from app.carts.retention import evict_idle
from app.heartbeat import Heartbeat
from app.lifecycle import serve_metrics
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)


class CartdMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.builds = Counter(
            "rainforest_cart_builds_total", "Cart builds by outcome (ready, or the error reason)",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.seconds = Histogram(
            "rainforest_cart_build_duration_seconds", "Time to build a cart", registry=self.registry,
            buckets=(1, 5, 15, 60, 300, 900, 3600),
        )  # fmt: skip
        self.carts = Gauge("rainforest_carts", "Carts by state", ["state"], registry=self.registry)
        self.queued = Gauge(
            "rainforest_cart_queue_depth", "Cart jobs waiting for a worker", registry=self.registry
        )


class Cartd:
    """One cartd process: CART_JOBS carts at once; any number of processes may share the queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.store = Store.from_url(settings.redis_url, max_connections=20)
        self.registry = CartRegistry(self.store.redis)
        self.queue = jobs.open_queue(settings)
        self.metrics = CartdMetrics()
        self.building = 0  # carts this process is building now
        self.builder = Builder(
            settings, open_archive(settings), self.registry, self.store, self.worker_id, requeue=self.requeue
        )
        self.worker = Worker(
            self.queue,
            functions=[(jobs.BUILD, self.build_cart)],
            concurrency=settings.cart_jobs,
            cron_jobs=[CronJob(self.housekeeping, cron="* * * * *", timeout=55)],
            startup=self.startup,
            shutdown_grace_period_s=0,  # a cart being built is handed back at once (Builder._stopped)
        )

    async def build_cart(self, ctx: Any, *, cart_id: str, attempt: int) -> str:
        started = time.monotonic()
        self.building += 1
        try:
            outcome = await self.builder.build(cart_id, attempt)
        finally:
            self.building -= 1
        if outcome != "skipped":
            self.metrics.builds.labels(outcome).inc()
            self.metrics.seconds.observe(time.monotonic() - started)
        return outcome

    async def requeue(self, cart_id: str, message: str) -> None:
        attempt = await self.registry.requeue(cart_id, message)
        await jobs.submit(self.queue, self.settings, cart_id, attempt)

    async def startup(self, ctx: Any) -> None:
        serve_metrics(self.settings, "cartd", self.metrics.registry)
        log.info("cartd started", extra={"worker": self.worker_id, "archive": self.builder.archive.url})
        await self.housekeeping(ctx)

    async def housekeeping(self, ctx: Any) -> None:
        """Requeue carts whose worker died, queue waiting carts that lost their job, expire idle ones."""
        now = time.time()
        counts = dict.fromkeys(STATES, 0)
        for cart in await self.registry.all():
            counts[cart.status] = counts.get(cart.status, 0) + 1
            if cart.status in BUILDING and cart.status != WAITING:
                if float(cart.extra.get("lease_until", "0")) < now:
                    await self.requeue(cart.id, "waiting: its worker stopped; queued again")
                    log.warning("requeued a cart whose worker stopped", extra={"cart_id": cart.id})
            elif cart.status == WAITING:
                await jobs.submit(self.queue, self.settings, cart.id, cart.attempt)
        for state, n in counts.items():
            self.metrics.carts.labels(state).set(n)
        self.metrics.queued.set(await self.queue.count("queued"))
        await evict_idle(self.registry, self.settings, self.settings.cart_ttl_s, now=now)

    async def run(self) -> None:
        stop = asyncio.Event()
        heartbeat = asyncio.create_task(
            Heartbeat(self.store, "cartd", lambda: {"jobs": str(self.building)}).run(stop)
        )
        try:
            await self.worker.start()
        finally:
            stop.set()
            await heartbeat
            await self.queue.disconnect()
            await self.store.close()
            log.info("cartd stopped", extra={"worker": self.worker_id})

    def request_stop(self) -> None:
        self.worker.event.set()
