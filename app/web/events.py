"""/api/event/{cloud_id}: a reading from the device now, or the last one logged."""

from __future__ import annotations

import asyncio
import time

import orjson

from app.devices import PUSH
from app.eagle.gateway import gateway_for
from app.errors import CredentialError, DeviceError, DeviceTimeout
from app.pinger.schedule import phase_fraction
from app.web.base import ApiError, BaseHandler
from app.web.devices import cloud_id_from_path


def between_polls_s(cloud_id: str, interval_s: float, now: float) -> float:
    """Seconds from `now` to the middle between two of the pinger's polls of a gateway (polls
    start at the device's phase in every wall-clock interval)."""
    target = (phase_fraction(cloud_id) + 0.5) * interval_s
    return (target - now) % interval_s


class EventHandler(BaseHandler):
    route = "/api/event/{cloud_id}"

    async def get(self, raw_id: str) -> None:
        cloud_id = cloud_id_from_path(raw_id)
        source = self.query({"source"}).get("source", "device")
        if source not in ("device", "latest"):
            raise ApiError(
                400, "bad_parameter", "source must be 'device' (ask it now) or 'latest' (last logged)."
            )
        record = await self.device(cloud_id)
        if record is None:
            raise ApiError(
                404,
                "unknown_device",
                f"no device {cloud_id} is registered; POST /api/users/{cloud_id} first.",
            )
        if source == "latest":
            line = await self.ctx.store.devices.latest_reading(cloud_id)
            if line is None:
                raise ApiError(404, "no_reading", f"no reading has been logged for {cloud_id} yet.")
            self.send_json({**orjson.loads(line), "protocol": record.protocol, "source": "latest"})
            return
        if record.protocol == PUSH:
            raise ApiError(
                409, "push_device", f"{cloud_id} pushes its readings and cannot be asked; use ?source=latest."
            )
        try:
            secret = self.ctx.vault.decrypt(record.encrypted_secret)
        except CredentialError:
            raise ApiError(
                500, "credentials_unreadable",
                f"the stored secret of {cloud_id} does not decrypt with this server's SECRET_KEY; "
                f"restore the old key in SECRET_KEY or re-save the device with POST /api/users/{cloud_id}.",
            ) from None  # fmt: skip
        settings = self.ctx.settings
        gateway = gateway_for(record, secret, settings.eagle_cloud_url, settings.eagle_tls_verify)
        if gateway.local and record.active:
            # a pinger asks this gateway once an interval at its phase; a unit freezes when two
            # requests overlap, so ask it half an interval away from the pinger's turn
            await asyncio.sleep(between_polls_s(cloud_id, settings.poll_interval_s, time.time()))
        try:
            readings = await self.ctx.client.for_protocol(record.protocol, record.api).poll(
                gateway, frozenset(["demand"])
            )
        except DeviceTimeout as exc:
            raise ApiError(504, "timeout", f"device {cloud_id} did not answer in time: {exc}.") from exc
        except DeviceError as exc:
            raise ApiError(
                502, exc.kind, f"device {cloud_id} did not give a reading ({exc.kind}): {exc}."
            ) from exc
        if readings.demand is None:
            raise ApiError(
                502, "no_reading", f"device {cloud_id} answered, but its meter reported no demand."
            )
        answer = readings.demand.record(cloud_id, time.time(), record.protocol)
        # `source` answers the query (device or latest); the line's own source is the protocol
        self.send_json({**answer, "protocol": record.protocol, "source": "device"})
