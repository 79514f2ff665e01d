"""One evaluation round: every device's health (app.health) against the open alerts and incidents.

- a device whose state alerts and has no open alert opens one (unless snoozed), with a message
  for every route, or silently when it belongs to an open incident;
- an open alert whose device is `ok` again (or inactive) is resolved, with the outage's length and
  the readings missed (and refilled from history);
- a device whose cause changed keeps its alert, with the new cause and action;
- many devices of one path in trouble together open one incident (app.alerts.incidents); it is
  over when fewer than half of them are still in trouble, and those still dark then get alerts
  of their own.

Every change goes through AlertBook's guarded script, so a round run by two processes at once, or
run again after a crash, opens, resolves and notifies each outage once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from app import health
from app.alerts import incidents, messages
from app.alerts.incidents import Trouble
from app.db.alerts import Message, alert_id, incident_id
from app.devices import DeviceRecord
from app.leases import Leases
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)
YIELD_EVERY = 250  # devices judged between two turns of the event loop (a few ms: requests wait no longer)


@dataclass
class RoundSummary:
    devices: int = 0
    dark: int = 0
    opened: int = 0
    resolved: int = 0
    changed: int = 0
    incidents_opened: int = 0
    incidents_resolved: int = 0
    by_state: Counter[str] = field(default_factory=Counter)


class Evaluator:
    def __init__(
        self, store: Store, settings: Settings, routes: list[str], clock: Callable[[], float] = time.time
    ) -> None:
        self.store, self.routes, self.clock = store, routes, clock
        self.study_routes: dict[str, list[str]] = {}  # study → its own routes (set each round)
        self.thresholds = health.Thresholds.from_settings(settings)
        self.rules = incidents.Rules(
            settings.incident_share, settings.incident_min_devices, settings.incident_window_s
        )
        self.zone = ZoneInfo(settings.alert_timezone)
        self.poll_interval_s = settings.poll_interval_s
        self.leases = Leases(store.redis)

    def _message(self, about: str, fields: dict[str, str], study: str = "") -> Message | None:
        """A message for every route of the deployment, and the household's study's own."""
        routes = [*self.routes, *self.study_routes.get(study, [])]
        return (f"{about}-{fields['kind']}", fields, routes) if routes else None

    async def round(self) -> RoundSummary:
        now = self.clock()
        records = await self.store.devices.all_devices()
        held, owners = await self.leases.held(), await self.leases.owners()
        views = {}
        for n, r in enumerate(records, 1):
            views[r.cloud_id] = health.view(r, now, self.thresholds, held)
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a big fleet's round never holds the server's requests up for long
        summary = RoundSummary(devices=len(records))
        summary.by_state.update(v.state for v in views.values())
        open_alerts = await self.store.alerts.open_alerts()
        snoozes = await self.store.alerts.snoozes()
        members = await self._incidents(records, views, owners, now, summary)
        for n, record in enumerate(records, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            view = views[record.cloud_id]
            aid = open_alerts.get(record.cloud_id)
            if view.alerting:
                summary.dark += 1
                if aid is None and snoozes.get(record.cloud_id, 0.0) <= now:
                    await self._open(record, view, now, record.cloud_id in members, summary)
                elif aid is not None:
                    await self._update(record, aid, view, now, summary)
            elif aid is not None and view.state in ("ok", "inactive"):
                await self._resolve(record, aid, view, now, record.cloud_id in members, summary)
        log.info("alerts evaluated", extra={k: v for k, v in vars(summary).items() if k != "by_state"})
        return summary

    # --- alerts ----------------------------------------------------------------------------

    async def _open(
        self, record: DeviceRecord, view: health.Health, now: float, quiet: bool, summary: RoundSummary
    ) -> None:
        since = view.since or now
        aid = alert_id(record.cloud_id, since)
        fields = {"cause": view.state, "since": repr(since), "action": view.action,
                  "email": record.user_email, "detail": view.detail[:500], "study": record.study}  # fmt: skip
        if quiet:
            fields["incident"] = "1"
        said = messages.opened({**fields, "cloud_id": record.cloud_id, "id": aid}, self.zone)
        message = None if quiet else self._message(aid, said, record.study)
        if await self.store.alerts.open_alert(record.cloud_id, aid, now, fields, message):
            summary.opened += 1
            log.warning(
                "alert opened",
                extra={"cloud_id": record.cloud_id, "alert": aid, "cause": view.state, "in_incident": quiet},
            )

    async def _update(
        self, record: DeviceRecord, aid: str, view: health.Health, now: float, summary: RoundSummary
    ) -> None:
        alert = await self.store.alerts.alert(aid)
        if alert is None or alert.get("cause") == view.state:
            return
        causes = f"{alert.get('causes', alert.get('cause', ''))},{view.state}".strip(",")
        fields = {"cause": view.state, "action": view.action, "detail": view.detail[:500], "causes": causes}
        if await self.store.alerts.update_alert(record.cloud_id, aid, now, fields):
            summary.changed += 1

    async def _resolve(
        self,
        record: DeviceRecord,
        aid: str,
        view: health.Health,
        now: float,
        quiet: bool,
        summary: RoundSummary,
    ) -> None:
        alert = await self.store.alerts.alert(aid) or {"cloud_id": record.cloud_id, "id": aid}
        since = float(alert.get("since", now))
        backfill = record.last_backfill or {}
        refilled = int(backfill.get("lines", 0)) if float(backfill.get("at", 0)) >= since else 0
        fields = {"outage_s": repr(round(now - since, 1)),
                  "missed": str(int((now - since) // self.poll_interval_s)), "refilled": str(refilled),
                  "resolution": view.state}  # fmt: skip
        quiet = quiet or alert.get("incident") == "1"
        text = messages.resolved({**alert, **fields, "cause": alert.get("cause", "ok")}, now, self.zone)
        message = None if quiet else self._message(aid, text, record.study)
        if await self.store.alerts.resolve_alert(record.cloud_id, aid, now, fields, message):
            summary.resolved += 1
            log.info(
                "alert resolved", extra={"cloud_id": record.cloud_id, "alert": aid, "outage_s": now - since}
            )

    # --- incidents -------------------------------------------------------------------------

    async def _incidents(
        self,
        records: list[DeviceRecord],
        views: dict[str, health.Health],
        owners: dict[str, str],
        now: float,
        summary: RoundSummary,
    ) -> set[str]:
        """Open and resolve incidents; returns the devices inside an open one (their alerts
        are opened and resolved without a message of their own)."""
        paths = {
            r.cloud_id: incidents.path_of(r, owners, views[r.cloud_id].state == "unpolled")
            for r in records
            if r.active
        }
        size = incidents.sizes(paths.values())
        troubles = []
        for cid, path in paths.items():
            v = views[cid]
            pending = v.condition not in health.QUIET and v.state in ("ok", "never")
            if v.alerting or pending:
                cause = v.state if v.alerting else v.condition
                since = v.since if v.alerting else v.condition_since
                troubles.append(Trouble(cid, path, cause, since or now, v.alerting))
        in_trouble = {t.cloud_id for t in troubles}
        members: set[str] = set()
        still_open = await self.store.alerts.open_incidents()
        for path, (record, its) in still_open.items():
            dark = its & in_trouble
            if len(dark) * 2 < len(its):  # most have recovered: the incident is over
                await self._end_incident(path, record, dark, now, summary)
            else:
                members |= its
                joined = [t.cloud_id for t in troubles if t.path == path and t.cloud_id not in its and
                          abs(t.since - float(record.get("since", now))) <= self.rules.window_s]  # fmt: skip
                await self.store.alerts.add_members(record["id"], joined)
                members |= set(joined)
        for path, group in incidents.clusters(troubles, size, self.rules).items():
            if path in still_open:
                continue
            since = min(t.since for t in group)
            iid = incident_id(path, since)
            fields = {"since": repr(since), "cause": incidents.cause_of(group), "devices": str(len(group)),
                      "path_devices": str(size[path])}  # fmt: skip
            text = messages.incident_opened({**fields, "path": path, "id": iid}, self.zone,
                                            incidents.what_failed(path))  # fmt: skip
            ids = [t.cloud_id for t in group]
            if await self.store.alerts.open_incident(path, iid, now, fields, ids, self._message(iid, text)):
                summary.incidents_opened += 1
                log.warning("incident opened", extra={"incident": iid, "path": path, "devices": len(ids)})
            members |= set(ids)
        return members

    async def _end_incident(
        self, path: str, record: dict[str, str], dark: set[str], now: float, summary: RoundSummary
    ) -> None:
        iid = record["id"]
        text = messages.incident_resolved(record, now, len(dark), self.zone)
        fields = {"still_dark": str(len(dark))}
        if await self.store.alerts.resolve_incident(path, iid, now, fields, self._message(iid, text)):
            summary.incidents_resolved += 1
            log.info("incident over", extra={"incident": iid, "path": path, "still_dark": len(dark)})
            # those still dark now stand alone: their alerts are opened afresh, with a message
            open_alerts = await self.store.alerts.open_alerts()
            for cid in dark:
                aid = open_alerts.get(cid)
                alert = await self.store.alerts.alert(aid) if aid else None
                if aid and alert and alert.get("incident") == "1":
                    message = self._message(aid, messages.opened(alert, self.zone))
                    if message is not None:
                        await self.store.outbox.put(f"{aid}-alone", dict(message[1]), self.routes, now)
                    await self.store.alerts.update_alert(cid, aid, now, {"incident": ""})
