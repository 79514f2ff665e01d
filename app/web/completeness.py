"""/api/users/{cloud_id}/completeness: a device's data, hour by hour, as it arrived."""

from __future__ import annotations

import time
from dataclasses import asdict

from app.completeness import HourCounts, public_row
from app.hours import hours_between
from app.web.base import ApiError, BaseHandler
from app.web.devices import cloud_id_from_path


class CompletenessHandler(BaseHandler):
    route = "/api/users/{cloud_id}/completeness"

    async def get(self, raw_id: str) -> None:
        cloud_id = cloud_id_from_path(raw_id)
        args = self.query({"start", "end"})
        now = time.time()
        end = unix_seconds(args.get("end"), now, "end")
        start = unix_seconds(args.get("start"), end - 86400, "start")
        keep_s = self.ctx.settings.completeness_days * 86400
        if not start < end or end - start > keep_s:
            raise ApiError(
                400, "bad_parameter",
                f"start must be before end, at most {self.ctx.settings.completeness_days:g} days apart "
                "(COMPLETENESS_DAYS).",
            )  # fmt: skip
        if await self.device(cloud_id) is None:
            raise ApiError(404, "unknown_device", f"no device {cloud_id} is registered.")
        hours = [h.number for h in hours_between(start, end)]
        found = {
            row["hour"]: row for row in await self.ctx.store.completeness.completeness([cloud_id], hours)
        }
        empty = HourCounts()
        rows = [
            public_row(found.get(h) or {"hour": h, **asdict(empty)}) for h in hours
        ]  # an hour with no counts: nothing was scheduled, polled or received
        self.send_json({"cloud_id": cloud_id, "hours": rows})


def unix_seconds(raw: str | None, default: float, name: str) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be Unix seconds, such as 1795500000.") from None
    if not 946684800 <= value <= 4102444800:
        raise ApiError(400, "bad_parameter", f"{name} must be Unix seconds between 2000 and 2100.")
    return value
