"""/api/alerts: the alerts (open, acknowledged, resolved), acknowledging one; snoozing a device."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

from app import health
from app.alerts.listing import STATES, listing, public
from app.store import Store
from app.web.base import ApiError, BaseHandler
from app.web.devices import cloud_id_from_path

NOTE_MAX = 500


class AlertsApiHandler(BaseHandler):
    route = "/api/alerts"

    async def get(self) -> None:
        args = self.query({"state", "cause", "limit"})
        state, cause = args.get("state"), args.get("cause")
        if state is not None and state not in STATES:
            raise ApiError(400, "bad_parameter", f"state must be one of {', '.join(STATES)}.")
        if cause is not None and cause not in health.STATES:
            raise ApiError(400, "bad_parameter", f"cause must be one of {', '.join(health.STATES)}.")
        raw = args.get("limit", "100")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
            raise ApiError(400, "bad_parameter", "limit must be a whole number from 1 to 1000.")
        study = self.token.study if self.token is not None else ""
        alerts = await listing(self.ctx.store, state, cause, int(raw), study)
        incidents = [] if study else await open_incidents(self.ctx.store)  # a path is the operators'
        self.send_json({"alerts": alerts, "open_incidents": incidents})


async def open_incidents(store: Store) -> list[dict[str, object]]:
    found = await store.alerts.open_incidents()
    return [
        {"id": r.get("id"), "path": path, "cause": r.get("cause"), "since": float(r.get("since", 0)),
         "devices": len(members)}
        for path, (r, members) in sorted(found.items())
    ]  # fmt: skip


class AlertAckApiHandler(BaseHandler):
    route = "/api/alerts/{id}/ack"

    async def post(self, alert_id: str) -> None:
        self.query(set())
        body = self.json_body() if self.request.body else {}
        note = body.get("note", "")
        if not isinstance(note, str) or len(note) > NOTE_MAX:
            raise ApiError(400, "invalid_field", f"note must be text of at most {NOTE_MAX} characters.")
        by = self.token.name if self.token is not None else ""
        known = await self.ctx.store.alerts.alert(alert_id[:80])
        if known is None or self.token is None or not self.token.sees(known.get("study", "default")):
            raise ApiError(404, "unknown_alert", f"no alert {alert_id[:64]!r} is kept.")
        if not await self.ctx.store.alerts.acknowledge(alert_id, by, time.time(), note):
            raise ApiError(404, "unknown_alert", f"no alert {alert_id[:64]!r} is kept.")
        alert = await self.ctx.store.alerts.alert(alert_id)
        assert alert is not None
        self.send_json(public(alert))


def parse_until(value: object) -> float:
    """A date (the end of that day, UTC) or a time as ISO 8601 or Unix seconds, in the future."""
    until: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        until = float(value)
    elif isinstance(value, str):
        try:
            day = date.fromisoformat(value)
            until = datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC).timestamp()
        except ValueError:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                until = None
            else:
                until = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if until is None or until <= time.time():
        raise ApiError(400, "invalid_field", "until must be a future date such as 2027-01-31, or a time.")
    return until


class SnoozeApiHandler(BaseHandler):
    route = "/api/users/{cloud_id}/snooze"

    async def post(self, raw_id: str) -> None:
        cloud_id = cloud_id_from_path(raw_id)
        self.query(set())
        until = parse_until(self.json_body().get("until"))
        if await self.device(cloud_id) is None:
            raise ApiError(404, "unknown_device", f"no device {cloud_id} is registered.")
        await self.ctx.store.alerts.snooze(cloud_id, until)
        self.send_json({"cloud_id": cloud_id, "snoozed_until": until})

    async def delete(self, raw_id: str) -> None:
        cloud_id = cloud_id_from_path(raw_id)
        self.query(set())
        if await self.device(cloud_id) is None:
            raise ApiError(404, "unknown_device", f"no device {cloud_id} is registered.")
        await self.ctx.store.alerts.unsnooze(cloud_id)
        self.send_json({"cloud_id": cloud_id, "snoozed_until": None})
