"""Cart routes: request a bundle, poll it (HEAD), download it (Range, RFC 6266), cancel or delete it.

A cart belongs to the token that made it (read-only tokens may make carts); only that token
or an admin may see, download or delete it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from app.carts import jobs
from app.carts.build import tar_path
from app.carts.model import (
    BUILDING,
    ERASED,
    ERROR,
    READY,
    Cart,
    CartRequest,
    cart_id,
    download_name,
    new_cart_id,
)
from app.carts.registry import DOWNLOAD_LEASE_S
from app.carts.retention import remove_files
from app.errors import ValidationError
from app.studies import moment, study_id
from app.web.base import ApiError, BaseHandler

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # a plain date: a local day of the study


def _refuse_unknown(unknown: list[str]) -> None:
    """A 400 naming the cloud_ids a cart asked for that are not known (to this token)."""
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        said = f"unknown cloud_id {shown}: register devices before asking for their data."
        raise ApiError(400, "unknown_device", said)


class _CartBase(BaseHandler):
    read_only_may = frozenset({"POST", "DELETE"})

    async def _create(self, cid: str) -> None:
        self.query(set())
        request = await self._scoped(CartRequest.from_mapping(await self._study_body(self.json_body())))
        await self._check_devices(request)
        assert self.token is not None
        await self._check_work(request)
        now = time.time()
        cart = Cart(
            cid, self.token.name, self.token.created_at, request, message="waiting for a cart worker",
            created_at=now, updated_at=now, last_access=now,
        )  # fmt: skip
        registry = self.ctx.carts
        if not await registry.create(cart):
            existing = await registry.get(cid)
            if existing is not None and self._owns(existing) and existing.request == request:
                self._status_json(existing, 200)  # a retried POST: same cart, same answer
                return
            raise ApiError(409, "cart_exists", f"a cart with id {cid} exists already; pick another id.")
        try:
            await jobs.submit(self.ctx.queue, self.ctx.settings, cid, cart.attempt)
        except Exception as exc:  # the cart stays waiting; cartd's watchdog queues it within a minute
            log.warning(
                "cart queued late: the job queue refused it", extra={"cart_id": cid, "error": str(exc)}
            )
        self.set_header("Location", f"/api/carts/{cid}")
        self._status_json(cart, 201)

    async def _study_body(self, body: dict[str, object]) -> dict[str, object]:
        """A cart of a whole study: `"study": "<id>"` stands for its households, and a plain date
        in start or end is that day's local midnight in the study's zone."""
        if "study" not in body:
            return body
        try:
            sid = study_id(body["study"])
        except ValidationError as exc:
            raise ApiError(400, "invalid_field", str(exc)) from None
        study = await self.ctx.store.studies.get(sid)
        if study is None or self.token is None or not self.token.sees(sid):
            raise ApiError(400, "unknown_study", f"no study {sid!r}.")
        if "devices" in body:
            raise ApiError(400, "invalid_field", "give a study or devices, not both.")
        ids = sorted(await self.ctx.store.studies.device_ids(sid))
        if not ids:
            raise ApiError(400, "empty_selection", "this study has no households, so a cart would be empty.")
        local = dict(body, devices=ids)
        for name in ("start", "end"):
            value = body.get(name)
            if isinstance(value, str) and DATE_RE.match(value):
                local[name] = moment(value, name, study.timezone)
        return local

    async def _scoped(self, request: CartRequest) -> CartRequest:
        """A study's token asks for its own households: "all" is its study's devices, and another
        study's device is as unknown as one never registered."""
        token = self.token
        if token is None or token.deployment_wide:
            return request
        request = dataclasses.replace(request, pseudonymize=True)  # a study's cart names no household
        ids = await self.ctx.store.studies.device_ids(token.study)
        if request.devices is None:
            if not ids:
                raise ApiError(
                    400, "empty_selection", "this study has no households, so a cart would be empty."
                )
            return dataclasses.replace(request, devices=tuple(sorted(ids)))
        _refuse_unknown([cid for cid in request.devices if cid not in ids])
        return request

    async def _check_devices(self, request: CartRequest) -> None:
        if request.devices is None:
            if not await self.ctx.store.devices.device_count():
                raise ApiError(400, "empty_selection", "no devices are registered, so a cart would be empty.")
            return
        _refuse_unknown(await self.ctx.store.devices.unknown_ids(request.devices))

    async def _check_work(self, request: CartRequest) -> None:
        """Bound the work one token may cause: device-days per cart, carts building at once."""
        settings = self.ctx.settings
        devices = (
            len(request.devices)
            if request.devices is not None
            else await self.ctx.store.devices.device_count()
        )
        device_days = devices * math.ceil((request.end - request.start) / 86400)
        if device_days > settings.cart_max_device_days:
            raise ApiError(
                400,
                "too_much",
                f"this cart spans {device_days:,} device-days and a cart may span at most "
                f"{settings.cart_max_device_days:,} (CART_MAX_DEVICE_DAYS): ask for fewer devices or days.",
            )
        token = self.token
        assert token is not None
        building = [
            c for c in await self.ctx.carts.all()
            if c.status in BUILDING and c.owner == token.name and c.owner_since == token.created_at
        ]  # fmt: skip
        if len(building) >= settings.carts_building_per_token:
            raise ApiError(
                429,
                "too_many_carts",
                f"this token has {len(building)} carts waiting or being built, the most it may have "
                "(CARTS_BUILDING_PER_TOKEN); ask again when one is ready.",
            )

    async def _owned(self, raw_id: str) -> Cart:
        cid = cart_id(raw_id)
        cart = await self.ctx.carts.get(cid)
        if cart is None:
            raise ApiError(404, "not_found", f"no cart {cid} (never made, deleted, or expired).")
        if not self._owns(cart):
            raise ApiError(
                403, "forbidden", "this cart belongs to another token; only its owner or an admin may use it."
            )
        return cart

    def _owns(self, cart: Cart) -> bool:
        token = self.token
        return token is not None and (
            (token.can_write and token.deployment_wide)
            or (token.name == cart.owner and token.created_at == cart.owner_since)
        )

    def _status_json(self, cart: Cart, status: int) -> None:
        self._cart_headers(cart)
        body = cart.public()
        body["status_url"] = f"/api/carts/{cart.id}"
        self.send_json(body, status)

    def _cart_headers(self, cart: Cart) -> None:
        self.set_header("X-Cart-Status", cart.status)
        self.set_header("X-Cart-Message", _header_safe(cart.message))
        self.set_header("X-Cart-Progress", cart.progress())
        if cart.reason:
            self.set_header("X-Cart-Reason", cart.reason)


class CartsHandler(_CartBase):
    route = "/api/carts/"

    async def post(self) -> None:
        await self._create(new_cart_id())


class CartHandler(_CartBase):
    route = "/api/carts/{cart_id}"

    async def post(self, raw_id: str) -> None:
        await self._create(cart_id(raw_id))

    async def head(self, raw_id: str) -> None:
        self.query(set())
        cart = await self._owned(raw_id)
        self._cart_headers(cart)
        if cart.status == READY:
            self.set_header("Content-Length", str(cart.size))
            self.set_header("Accept-Ranges", "bytes")
        self.finish()

    async def get(self, raw_id: str) -> None:
        args = self.query({"filename"})
        cart = await self._owned(raw_id)
        name = download_name(args.get("filename"), cart.created_at)
        if cart.status in BUILDING:
            self._status_json(cart, 202)
            return
        if cart.status == ERASED:
            self._cart_headers(cart)
            self.send_json({"error": "cart_erased", "reason": "ERASED", "message": cart.message}, 410)
            return
        if cart.status == ERROR:
            self._cart_headers(cart)
            self.send_json(
                {"error": "cart_failed", "reason": cart.reason, "message": f"{cart.reason}: {cart.message}"},
                409,
            )
            return
        await self._download(cart, name)

    async def delete(self, raw_id: str) -> None:
        self.query(set())
        cart = await self._owned(raw_id)
        registry = self.ctx.carts
        assert self.token is not None
        if cart.status in BUILDING:
            await registry.cancel(cart.id, f"cancelled by {self.token.name}")
        else:
            await registry.delete(cart.id)
        await asyncio.to_thread(remove_files, self.ctx.settings, cart.id)
        await registry.set_space(cart.id, None)
        self.send_json({"id": cart.id, "deleted": True, "was": cart.status})

    async def _download(self, cart: Cart, name: str) -> None:
        path = tar_path(self.ctx.settings, cart.id)
        if not await self.ctx.carts.start_download(cart.id):
            raise ApiError(409, "cart_not_ready", "the cart changed while starting the download; ask again.")
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise ApiError(
                409,
                "cart_failed",
                "the cart's tar is missing on this server; `rainforest carts fixit` rebuilds it.",
            ) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            start, end = _range(self.request.headers.get("Range"), size)
            if start is None:  # answered here: an error page would drop the Content-Range header
                self.set_header("Content-Range", f"bytes */{size}")
                message = f"the Range is outside the cart's {size} bytes."
                self.send_json({"error": "bad_range", "message": message}, 416)
                return
            self.set_header("Content-Type", "application/x-tar")
            self.set_header("Accept-Ranges", "bytes")
            self.set_header("Content-Disposition", _disposition(name))
            self._cart_headers(cart)
            if (start, end) != (0, size - 1):
                self.set_status(206)
                self.set_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.set_header("Content-Length", str(end - start + 1))
            async with self.heavy_slot():
                await self._stream(f, path, start, end + 1, cart.id)
        self.finish()

    async def _stream(self, f: Any, path: Path, start: int, stop: int, cid: str) -> None:
        f.seek(start)
        left = stop - start
        renewed = time.monotonic()
        while left > 0:
            chunk = await self.ctx.heavy.run(f.read, min(CHUNK, left))
            if not chunk:
                raise OSError(f"{path} ended early")
            left -= len(chunk)
            self.write(chunk)
            await self.flush()
            if time.monotonic() - renewed > DOWNLOAD_LEASE_S / 4:
                renewed = time.monotonic()
                await self.ctx.carts.start_download(cid)  # keep eviction away while it streams


def _range(header: str | None, size: int) -> tuple[int | None, int]:
    """(start, end) inclusive for one `bytes=` range; the whole file when absent or unusable."""
    whole = (0, size - 1) if size else (0, -1)
    if not header or not header.startswith("bytes=") or "," in header:
        return whole  # no range, another unit, or several ranges: send it all (RFC 9110 allows that)
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size else (None, 0)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return whole
    if start >= size or start > end:
        return None, 0
    return start, min(end, size - 1)


def _disposition(name: str) -> str:
    """RFC 6266: an ASCII `filename` fallback and the exact name in `filename*` (RFC 5987)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:300]
