"""POST /api/push/{cloud_id}: a gateway's uploader delivers readings (see app/push/)."""

from __future__ import annotations

import binascii
import time
from base64 import b64decode

from app.errors import WriteError
from app.push.receiver import UploadRefused
from app.web.base import SERVER_MAX_BODY_BYTES, ApiError, BaseHandler
from app.web.devices import cloud_id_from_path


class PushHandler(BaseHandler):
    route = "/api/push/{cloud_id}"
    public = True  # gateways authenticate with their push key, not an API token

    def body_limit(self) -> int:
        # up to the server's ceiling the receiver answers (and counts, on the device) its own 413
        return SERVER_MAX_BODY_BYTES

    async def post(self, raw_id: str) -> None:
        started = time.perf_counter()
        metrics = self.ctx.metrics
        cloud_id = cloud_id_from_path(raw_id)
        receiver = self.ctx.push
        self.refuse_oversized()
        try:
            await receiver.authenticate(cloud_id, self._key(cloud_id))
            received = await receiver.receive(cloud_id, self.request.body)
        except UploadRefused as exc:
            metrics.uploads.labels(exc.code).inc()
            raise ApiError(exc.status, exc.code, exc.message) from None
        except WriteError as exc:
            metrics.uploads.labels("unavailable").inc()
            raise ApiError(
                503,
                "unavailable",
                "the reading could not be stored right now; the uploader will send it again.",
            ) from exc
        metrics.uploads.labels("ok").inc()
        metrics.pushed.labels("written").inc(received.written)
        metrics.pushed.labels("duplicate").inc(received.duplicates)
        metrics.pushed.labels("ignored").inc(len(received.ignored))
        metrics.upload_latency.observe(time.perf_counter() - started)
        self.send_json(received.answer())

    def _key(self, cloud_id: str) -> str | None:
        """The push key from HTTP Basic (user = the cloud_id) or `?key=`, whichever was sent."""
        args = self.query({"key"})
        if "key" in args:
            return args["key"]
        scheme, _, encoded = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, key = b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return key if user.strip().lower() == cloud_id else None
