"""Sending what is queued: each route on its own (a route that refuses never holds up another),
each message claimed before it is sent, retried with backoff, given up after MAX_ATTEMPTS."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.alerts.routes import Route, RouteError
from app.db.outbox import Outbox
from app.errors import StoreError

log = logging.getLogger(__name__)
CLAIM_S = 120.0  # a claimed message is someone else's to send again only after this long
FIRST_RETRY_S = 10.0
LONGEST_RETRY_S = 3600.0
MAX_ATTEMPTS = 12  # about a day of retries


def retry_in_s(attempts: int) -> float:
    return float(min(LONGEST_RETRY_S, FIRST_RETRY_S * 2.0 ** (attempts - 1)))


@dataclass
class Sent:
    delivered: int = 0
    failed: int = 0
    gave_up: int = 0


class Sender:
    def __init__(self, outbox: Outbox, routes: list[Route], clock: Callable[[], float] = time.time) -> None:
        self.outbox, self.routes, self.clock = outbox, routes, clock

    async def round(self) -> dict[str, Sent]:
        results = await asyncio.gather(*(self._route(r) for r in self.routes))
        return {r.id: sent for r, sent in zip(self.routes, results, strict=True)}

    async def _route(self, route: Route) -> Sent:
        sent = Sent()
        try:
            ids = await self.outbox.claim(route.id, self.clock(), CLAIM_S)
        except StoreError as exc:
            log.warning(
                "cannot read the notifications to send", extra={"route": route.id, "reason": str(exc)}
            )
            return sent
        for mid in ids:
            try:
                await self._one(route, mid, sent)
            except StoreError as exc:  # sent again once its claim runs out
                log.warning(
                    "cannot note a notification's fate", extra={"route": route.id, "reason": str(exc)}
                )
        return sent

    async def _one(self, route: Route, mid: str, sent: Sent) -> None:
        message = await self.outbox.message(mid)
        if not message:
            await self.outbox.failed(route.id, mid, None, "the message is gone")
            return
        attachment = (message["csv_name"], message["csv"]) if message.get("csv") else None
        try:
            await asyncio.wait_for(route.send(message["subject"], message["text"], attachment), CLAIM_S / 2)
        except (RouteError, TimeoutError) as exc:
            reason = str(exc) or f"route {route.id} did not answer within {CLAIM_S / 2:.0f} s"
            attempts = int(message.get(f"attempts:{route.id}", "0")) + 1
            retry_at = self.clock() + retry_in_s(attempts) if attempts < MAX_ATTEMPTS else None
            await self.outbox.failed(route.id, mid, retry_at, reason)
            if retry_at is None:
                sent.gave_up += 1
                log.error(
                    "notification given up", extra={"route": route.id, "notification": mid, "reason": reason}
                )
            else:
                sent.failed += 1
                log.warning(
                    "notification not delivered: retrying",
                    extra={"route": route.id, "notification": mid, "reason": reason, "attempt": attempts,
                           "retry_in_s": retry_in_s(attempts)},
                )  # fmt: skip
            return
        await self.outbox.delivered(route.id, mid, self.clock())
        sent.delivered += 1
        done = {"route": route.id, "notification": mid, "kind": message.get("kind")}
        log.info("notification delivered", extra=done)
