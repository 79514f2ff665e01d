"""/studies and /studies/{id}: the studies a session may see, and one study's households: who is
enrolled, their windows, completeness over the study so far, and who is dark now."""

from __future__ import annotations

import time
from typing import Any

import tornado.web

from app import health
from app.hours import Day
from app.studies import study_id
from app.web.pages import PageHandler

DAYS_SHOWN = 35  # at most this many days of completeness (what Redis keeps, COMPLETENESS_DAYS)


class StudiesPageHandler(PageHandler):
    async def get(self) -> None:
        token = self.token
        studies = [s for s in await self.ctx.store.studies.all() if token is not None and token.sees(s.id)]
        counts = {s.id: len(await self.ctx.store.studies.device_ids(s.id)) for s in studies}
        self.render_page("studies.html", studies=studies, counts=counts)


class StudyPageHandler(PageHandler):
    async def get(self, raw: str) -> None:
        try:
            sid = study_id(raw)
        except Exception:
            raise tornado.web.HTTPError(404, reason="No such study") from None
        study = await self.ctx.store.studies.get(sid)
        if study is None or self.token is None or not self.token.sees(sid):
            raise tornado.web.HTTPError(404, reason=f"No study {sid}")
        records = await self.ctx.store.devices.load_devices(
            sorted(await self.ctx.store.studies.device_ids(sid))
        )
        now = time.time()
        held = await self.ctx.leases.held()
        starts = [r.enrolment.enrolled_from for r in records if r.enrolment is not None]
        first = Day.at(max(min(starts, default=now), now - DAYS_SHOWN * 86400))
        totals: dict[str, list[int]] = {}
        day = first
        while day.start <= now:
            for cid, (scheduled, ok, readings) in (
                await self.ctx.store.completeness.completeness_day(day.key)
            ).items():
                t = totals.setdefault(cid, [0, 0, 0])
                t[0], t[1], t[2] = t[0] + scheduled, t[1] + ok, t[2] + readings
            day = day + 1
        rows: list[dict[str, Any]] = []
        for r in records:
            if r.enrolment is None:
                continue
            state = health.view(r, now, self.ctx.thresholds, held)
            scheduled, ok, readings = totals.get(r.cloud_id, [0, 0, 0])
            rows.append({"record": r, "enrolment": r.enrolment.public(), "health": state,
                         "complete": round(100.0 * ok / scheduled, 1) if scheduled else None,
                         "readings": readings})  # fmt: skip
        dark = [row for row in rows if isinstance(row["health"], health.Health) and row["health"].alerting]
        self.render_page("study.html", study=study, rows=rows, dark=dark, since=first.key)
