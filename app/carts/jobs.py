"""Cart jobs on a saq queue in Redis. A job's key is `<cart_id>:<attempt>`, so a cart's attempt is
queued at most once however many times it is submitted (single-flight before a worker even
looks at it; the registry's claim makes it certain)."""

from __future__ import annotations

from saq import Queue
from saq.queue.redis import RedisQueue

from app import keys
from app.settings import Settings
from app.store import queue_client

BUILD = "build_cart"


def open_queue(settings: Settings) -> Queue:
    """The queue on the deployment's Redis (TLS and a private CA as the store has them)."""
    return RedisQueue(queue_client(settings), name=keys.cart_queue())


async def submit(queue: Queue, settings: Settings, cart_id: str, attempt: int) -> bool:
    """Queue the build of `attempt`; False when that attempt is already queued or done."""
    job = await queue.enqueue(
        BUILD,
        key=keys.cart_job(f"{cart_id}:{attempt}"),
        timeout=int(settings.cart_deadline_s) + 120,  # the builder's own deadline fires first
        heartbeat=0,
        retries=1,
        ttl=600,
        cart_id=cart_id,
        attempt=attempt,
    )
    return job is not None
