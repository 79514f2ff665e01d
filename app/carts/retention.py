"""Carts leave disk CART_TTL after their last download (or creation), oldest first, never while
being built or downloaded: the registry's `evict` decides atomically, then the files go."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

from app.carts.model import BUILDING, Cart
from app.carts.registry import CartRegistry
from app.settings import Settings

log = logging.getLogger(__name__)


def remove_files(settings: Settings, cart_id: str) -> None:
    shutil.rmtree(settings.carts_dir / cart_id, ignore_errors=True)


async def evict_idle(
    registry: CartRegistry,
    settings: Settings,
    older_than_s: float,
    *,
    dry_run: bool = False,
    now: float | None = None,
) -> list[Cart]:
    """Remove finished carts idle for `older_than_s`; returns them (or, dry, those it would remove)."""
    now = time.time() if now is None else now
    cutoff = now - older_than_s
    removed = []
    for cart_id in await registry.idle_since(cutoff):
        cart = await registry.get(cart_id)
        if cart is not None and (
            cart.status in BUILDING or float(cart.extra.get("download_until", "0")) > now
        ):
            continue
        if dry_run:
            if cart is not None:
                removed.append(cart)
            continue
        if await registry.evict(cart_id, cutoff, now):
            await asyncio.to_thread(remove_files, settings, cart_id)
            if cart is not None:
                removed.append(cart)
                log.info(
                    "cart expired", extra={"cart_id": cart_id, "status": cart.status, "bytes": cart.size}
                )
    return removed


def parse_age(text: str) -> float:
    """`60d`, `12h`, `30m`, `90s` → seconds (ValueError with a sentence otherwise)."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    value, unit = text[:-1], text[-1:].lower()
    if unit not in units or not (value.isascii() and value.replace(".", "", 1).isdigit()):
        raise ValueError(f"an age looks like 60d, 12h, 30m or 90s, got {text!r}.")
    return float(value) * units[unit]
