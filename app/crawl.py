"""Crawls: each gateway asked what it is (model, firmware, meter, link), with history.

Cephalopod's crawler, done right: never inside a web request (the pages only ask for one),
bounded concurrency and a timeout per device, partial results kept (a device that fails is
recorded as failed, the others as found), and every crawl kept with its time and what changed
since the one before (the last CRAWL_HISTORY of them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from app.eagle.client import Clients
from app.eagle.gateway import Gateway
from app.errors import DeviceError, StoreError
from app.store import Store

log = logging.getLogger(__name__)
CONCURRENCY = 8
TIMEOUT_S = 30.0


async def crawl(
    store: Store,
    clients: Clients,
    gateways: Iterable[Gateway],
    keep: int,
    clock: Callable[[], float] = time.time,
) -> dict[str, int]:
    """Crawl these gateways; returns counts: ok, failed, changed."""
    slots = asyncio.Semaphore(CONCURRENCY)
    counts = {"ok": 0, "failed": 0, "changed": 0}

    async def one(gw: Gateway) -> None:
        async with slots:
            at = clock()
            try:
                fields = await asyncio.wait_for(
                    clients.for_protocol(gw.protocol, gw.api).describe(gw), TIMEOUT_S
                )
                entry: dict[str, object] = {"at": round(at, 3), "fields": fields}
                counts["ok"] += 1
            except (DeviceError, TimeoutError) as exc:
                reason = exc.reason if isinstance(exc, DeviceError) else "timeout: no answer to the crawl"
                entry = {"at": round(at, 3), "fields": {}, "error": reason}
                counts["failed"] += 1
            try:
                changed = await store.crawls.record_crawl(gw.cloud_id, entry, keep)
            except StoreError as exc:
                log.warning("could not record a crawl", extra={"cloud_id": gw.cloud_id, "reason": str(exc)})
                return
            if changed:
                counts["changed"] += 1
                log.info("device changed", extra={"cloud_id": gw.cloud_id, "changed": changed})

    await asyncio.gather(*(one(gw) for gw in gateways))
    log.info("crawl", extra=counts)
    return counts
