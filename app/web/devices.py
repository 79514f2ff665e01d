"""/api/users/: create, update, read, list and deactivate devices (credentials never returned)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app import health
from app.check import check
from app.devices import CLOUD, DeviceInput, normalize_cloud_id
from app.devices import DeviceRecord as Record
from app.eagle.reach import ReachPolicy
from app.errors import ValidationError
from app.web.base import ApiError, BaseHandler

STATUSES = ("ok", "failing", "never")  # how the last poll went; `health` says what state it is in


def cloud_id_from_path(raw: str) -> str:
    try:
        return normalize_cloud_id(raw)
    except ValidationError:
        raise ApiError(
            400, "invalid_cloud_id", f"cloud_id must be 6 hex digits such as 002738, got {raw!r}."
        ) from None


class DeviceApiHandler(BaseHandler):
    route = "/api/users/{cloud_id}"
    preload_device = True

    async def _record(self, cloud_id: str) -> Record:
        if self.request.method == "GET" and self.preloaded is not None:
            return self.preloaded  # read with the token, in the same round trip
        record = await self.device(cloud_id)
        if record is None:
            raise ApiError(404, "unknown_device", f"no device {cloud_id} is registered; POST it first.")
        return record

    async def _answer(self, cloud_id: str) -> dict[str, Any]:
        """The public record with the pinger holding its lease (read with the token on GET)."""
        record = await self._record(cloud_id)
        owner = self.preloaded_owner if self.preloaded is not None else await self.ctx.leases.owner(cloud_id)
        now = time.time()
        held = {cloud_id: now + owner["lease_expires_in_s"]} if owner else {}
        state = health.view(record, now, self.ctx.thresholds, held)
        return {**record.public(), "health": state.public(), "owner": owner}

    async def get(self, raw_id: str) -> None:
        self.query(set())
        self.send_json(await self._answer(cloud_id_from_path(raw_id)))

    async def post(self, raw_id: str) -> None:
        cloud_id = cloud_id_from_path(raw_id)
        self.query(set())
        body = self.json_body()
        wants_check = isinstance(body, dict) and body.pop("check", False) is True
        inp = DeviceInput.from_mapping(body, cloud_id=cloud_id)
        if self.token is not None and not self.token.deployment_wide and await self.device(cloud_id) is None:
            raise ApiError(
                403,
                "forbidden",
                "a study's token changes its own households; an operator registers new ones.",
            )
        if inp.address and inp.protocol != CLOUD:  # resolving a name may block: off the loop
            await asyncio.to_thread(ReachPolicy.from_settings(self.ctx.settings).check, inp.address)
        saved = await self.ctx.store.devices.register(inp, self.ctx.vault)
        answer = {**await self._answer(cloud_id), "outcome": saved.outcome}
        if saved.push_key:  # made for this device now: the only time it is shown
            answer["push_key"] = saved.push_key
        if wants_check:  # asked for on create: the gateway asked once (app.check)
            record = await self._record(cloud_id)
            secret = self.ctx.vault.decrypt(record.encrypted_secret) if record.encrypted_secret else ""
            checked = await check(record, secret, self.ctx.client, self.ctx.settings)
            if checked.found.get("detected_api"):
                await self.ctx.store.devices.set_api(cloud_id, checked.found["detected_api"])
            answer["check"] = checked.public()
        self.send_json(answer, status=201 if saved.outcome == "created" else 200)

    async def delete(self, raw_id: str) -> None:
        cloud_id = cloud_id_from_path(raw_id)
        self.query(set())
        if await self.device(cloud_id) is None or not await self.ctx.store.devices.deactivate_device(
            cloud_id
        ):
            raise ApiError(404, "unknown_device", f"no device {cloud_id} is registered.")
        self.send_json(await self._answer(cloud_id))


class DeviceListApiHandler(BaseHandler):
    route = "/api/users/"

    async def get(self) -> None:
        args = self.query({"limit", "after", "active", "status", "health"})
        limit = _limit(args.get("limit", "100"))
        after = cloud_id_from_path(args["after"]) if "after" in args else ""
        active = _bool(args["active"]) if "active" in args else None
        status = args.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, "bad_parameter", f"status must be one of {', '.join(STATUSES)}.")
        wanted = args.get("health")
        if wanted is not None and wanted not in health.STATES:
            raise ApiError(400, "bad_parameter", f"health must be one of {', '.join(health.STATES)}.")
        now, held = time.time(), await self.ctx.leases.held()

        def state_of(record: Record) -> health.Health:
            return health.view(record, now, self.ctx.thresholds, held)

        page, cursor = await self.ctx.store.devices.list_devices(
            after=after, limit=limit, active=active, status=status,
            keep=lambda r: self.sees(r) and (wanted is None or state_of(r).state == wanted),
            among=await self._among(),
        )  # fmt: skip
        users = [{**r.public(), "health": state_of(r).public()} for r in page]
        self.send_json({"users": users, "next": cursor})

    async def _among(self) -> set[str] | None:
        """A study's token lists its study's households: only those are read."""
        token = self.token
        if token is None or token.deployment_wide:
            return None
        return await self.ctx.store.studies.device_ids(token.study)


def _limit(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
        raise ApiError(400, "bad_parameter", "limit must be a whole number from 1 to 1000.")
    return int(raw)


def _bool(raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ApiError(400, "bad_parameter", "active must be true or false.")
    return raw == "true"


class DeviceCheckApiHandler(BaseHandler):
    route = "/api/users/{cloud_id}/check"

    async def post(self, raw_id: str) -> None:
        """Ask the gateway once with its stored credentials; what it said, in one sentence."""
        cloud_id = cloud_id_from_path(raw_id)
        self.query(set())
        record = await self.device(cloud_id)
        if record is None:
            raise ApiError(404, "unknown_device", f"no device {cloud_id} is registered.")
        secret = self.ctx.vault.decrypt(record.encrypted_secret) if record.encrypted_secret else ""
        checked = await check(record, secret, self.ctx.client, self.ctx.settings)
        if checked.found.get("detected_api"):
            await self.ctx.store.devices.set_api(cloud_id, checked.found["detected_api"])
        self.send_json(checked.public())
