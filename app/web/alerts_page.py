"""/alerts: open, acknowledged and resolved alerts, filtered by cause; admins acknowledge an
alert or snooze a household from here (form POSTs with the XSRF token)."""

from __future__ import annotations

import time

import tornado.web

from app import health
from app.alerts.listing import STATES, listing
from app.web.alerts import open_incidents, parse_until
from app.web.base import ApiError
from app.web.pages import PageHandler, cloud_id_of


class AlertsPageHandler(PageHandler):
    async def get(self) -> None:
        state, cause = self.get_argument("state", "open"), self.get_argument("cause", "")
        if state not in ("all", *STATES) or cause not in ("", *health.STATES):
            raise tornado.web.HTTPError(400, reason="Unknown state or cause")
        study = (
            self.token.study
            if self.token is not None and self.token.study
            else self.get_argument("study", "")[:40]
        )
        found = await listing(self.ctx.store, None if state == "all" else state, cause or None, 500, study)
        now = time.time()
        snoozed = {
            cid: until for cid, until in (await self.ctx.store.alerts.snoozes()).items() if until > now
        }
        causes = [s for s in health.STATES if s not in health.QUIET]
        incidents = [] if study else await open_incidents(self.ctx.store)
        self.render_page("alerts.html", alerts=found, state=state, cause=cause, states=STATES, causes=causes,
                         incidents=incidents, snoozed=snoozed)  # fmt: skip


class AlertsPageActionHandler(PageHandler):
    """POST /alerts/{id}/ack (a note) and /alerts/snooze/{cloud_id} (until a date): admins only."""

    async def post(self, what: str, target: str) -> None:
        if self.token is None:
            return
        if not self.token.can_write:
            raise tornado.web.HTTPError(
                403, reason="This session's token is read-only; log in with an admin token"
            )
        if what == "ack":
            alert = await self.ctx.store.alerts.alert(target[:80])
            if alert is None or not self.token.sees(alert.get("study", "default")):
                raise tornado.web.HTTPError(404, reason="No such alert is kept")
            note = self.get_argument("note", "")[:500]
            if not await self.ctx.store.alerts.acknowledge(target[:80], self.token.name, time.time(), note):
                raise tornado.web.HTTPError(404, reason="No such alert is kept")
        else:
            cloud_id = cloud_id_of(target)
            record = await self.ctx.store.devices.get_device(cloud_id)
            if record is None or not self.token.sees(record.study):
                raise tornado.web.HTTPError(404, reason=f"No device {cloud_id} is registered")
            try:
                until = parse_until(self.get_argument("until", ""))
            except ApiError as exc:
                raise tornado.web.HTTPError(400, reason=exc.message.rstrip(".")) from None
            await self.ctx.store.alerts.snooze(cloud_id, until)
        self.redirect("/alerts")
