"""`rainforest cartd`: saq workers that build carts, plus two housekeeping jobs every minute:
the watchdog (a cart whose worker died goes back to waiting and is queued again) and
eviction (CART_TTL after last access)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.exceptions import RedisError
from saq import CronJob, Worker

from app import keys
from app.archive.factory import open_archive
from app.carts import jobs
from app.carts.build import Builder
from app.carts.model import BUILDING, STATES, WAITING
from app.carts.registry import CartRegistry
from app.carts.retention import evict_idle
from app.errors import StoreError
from app.heartbeat import Heartbeat
from app.lifecycle import serve_metrics
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)
REDIS_RETRY_S = 2.0


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
        self.store = Store.for_settings(settings, max_connections=20)
        self.registry = CartRegistry(self.store.redis)
        self.queue = jobs.open_queue(settings)
        self.metrics = CartdMetrics()
        self.building = 0  # carts this process is building now
        self._stop: asyncio.Event | None = None
        self.builder = Builder(
            settings, open_archive(settings), self.registry, self.store, self.worker_id, requeue=self.requeue
        )
        self.worker = Worker(
            self.queue,
            functions=[(jobs.BUILD, self.build_cart)],
            concurrency=settings.cart_jobs,
            cron_jobs=[CronJob(self._housekeeping_job(), cron="* * * * *", timeout=55)],
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

    def _housekeeping_job(self) -> Callable[[Any], Awaitable[None]]:
        """The housekeeping as saq's cron job: saq keys a cron job by its function's name, which
        therefore carries the queue's hash tag on a cluster (`keys.cart_job`)."""

        async def job(ctx: Any) -> None:
            await self.housekeeping(ctx)

        job.__qualname__ = job.__name__ = keys.cart_job("housekeeping")
        return job

    async def housekeeping(self, ctx: Any) -> None:
        """Requeue carts whose worker died, queue waiting carts that lost their job, expire idle ones."""
        try:
            await self._housekeeping()
        except (StoreError, RedisError, OSError) as exc:  # Redis away: the next minute tries again
            log.error("cartd housekeeping skipped: Redis unreachable", extra={"reason": str(exc)})

    async def _housekeeping(self) -> None:
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
            if await self._wait_for_redis(stop):
                await self.worker.start()
        finally:
            stop.set()
            await heartbeat
            with contextlib.suppress(RedisError, OSError):  # Redis may be the reason we stop
                await self.queue.disconnect()
            await self.store.close()
            log.info("cartd stopped", extra={"worker": self.worker_id})

    async def _wait_for_redis(self, stop: asyncio.Event) -> bool:
        """Start only once Redis answers (one sentence while it does not, as the pinger says);
        False when a stop came first."""
        self._stop = stop
        down_since: float | None = None
        while not stop.is_set():
            try:
                await self.store.ping()
            except StoreError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.error(
                        f"cannot reach Redis at {self.settings.redis_where}; cartd retries every "
                        f"{REDIS_RETRY_S:.0f} s",
                        extra={"reason": str(exc)},
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), REDIS_RETRY_S)
                continue
            if down_since is not None:
                log.info(
                    "Redis reachable: cartd starting",
                    extra={"waited_s": round(time.monotonic() - down_since)},
                )
            return True
        return False

    def request_stop(self) -> None:
        self.worker.event.set()
        if self._stop is not None:
            self._stop.set()
