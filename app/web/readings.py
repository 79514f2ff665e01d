"""/api/users/{cloud_id}/readings: a device's readings over a range, for charts."""

from __future__ import annotations

import time

from app.series import VALUE, downsample, with_gaps, within
from app.web.base import ApiError, BaseHandler
from app.web.completeness import unix_seconds
from app.web.devices import cloud_id_from_path

MAX_RANGE_S = 31 * 86400
MAX_POINTS = 100_000


class ReadingsHandler(BaseHandler):
    route = "/api/users/{cloud_id}/readings"

    async def get(self, raw_id: str) -> None:
        cloud_id = cloud_id_from_path(raw_id)
        args = self.query({"start", "end", "kind", "resolution"})
        end = unix_seconds(args.get("end"), time.time(), "end")
        start = unix_seconds(args.get("start"), end - 86400, "start")
        kind = args.get("kind", "demand")
        if kind not in VALUE:
            raise ApiError(400, "bad_parameter", f"kind must be one of {', '.join(VALUE)}.")
        if not start < end or end - start > MAX_RANGE_S:
            raise ApiError(400, "bad_parameter", "start must be before end, at most 31 days apart.")
        raw = args.get("resolution", "auto")
        if raw == "auto":  # full resolution up to a day, then about 2,000 buckets
            resolution = 0 if end - start <= 86400 else max(60, int((end - start) // 2000))
        elif raw.isascii() and raw.isdigit() and (raw == "0" or 10 <= int(raw) <= 86400):
            resolution = int(raw)
        else:
            raise ApiError(
                400, "bad_parameter", "resolution is auto, 0 (every reading) or 10 to 86400 seconds."
            )
        record = await self.device(cloud_id)
        if record is None:
            raise ApiError(404, "unknown_device", f"no device {cloud_id} is registered.")
        async with self.heavy_slot():
            t, v = await self.ctx.heavy.run(self.ctx.series.series, cloud_id, kind, start, end)
        if record.enrolment is not None:  # nothing from outside the household's consent window
            t, v = within((t, v), record.enrolment.clamp(start, end))
        if resolution == 0 and len(t) > MAX_POINTS:
            raise ApiError(400, "bad_parameter", f"over {MAX_POINTS} readings: ask with a resolution.")
        min_gap_s = 2 * self.ctx.settings.poll_interval_s
        if resolution == 0:
            body = with_gaps(list(zip(t.tolist(), v.tolist(), strict=True)), min_gap_s)
        else:
            body = downsample((t, v), start, end, resolution)
        self.send_json({"cloud_id": cloud_id, "kind": kind, "start": start, "end": end,
                        "resolution": resolution, "count": len(t), **body})  # fmt: skip
