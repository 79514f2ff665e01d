"""One upload from a gateway: authenticate it, read its body, write its readings once, count.

Authentication costs the same whether the device is unknown, not a push device, or known with
another key (one Redis read, one digest, one constant-time comparison), so a wrong key (401)
and an unknown device (404) cannot be told apart by their timing. Neither writes anything.
What Redis says of a device is kept for CREDENTIALS_TTL_S, so a gateway uploading every 8 s
costs one Redis read a few times a minute; a new key takes effect within that time.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass, field

import orjson

from app.completeness import Tally
from app.devices import PUSH, push_key_digest
from app.pinger.ledger import Ledger
from app.push.dialects import BadUpload, parse_upload
from app.push.writer import PushWriter
from app.store import PollUpdate, Store

log = logging.getLogger(__name__)
_NO_DEVICE = push_key_digest("no device has this key")
CREDENTIALS_TTL_S = 2.0


class UploadRefused(Exception):
    """The upload is not taken: HTTP status, a short code and one sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Received:
    """What became of one upload."""

    written: int = 0
    duplicates: int = 0
    ignored: list[str] = field(default_factory=list)

    def answer(self) -> dict[str, object]:
        return {
            "count": self.written,
            "written": self.written,
            "duplicates": self.duplicates,
            "ignored": len(self.ignored),
            "reasons": self.ignored[:5],
        }


class PushReceiver:
    """Shared by every upload a server process takes; counters go to Redis in batches."""

    def __init__(self, store: Store, writer: PushWriter, ledger: Ledger, max_bytes: int) -> None:
        self.store = store
        self.writer = writer
        self.ledger = ledger
        self.max_bytes = max_bytes
        self._known: dict[str, tuple[float, str | None]] = {}  # cloud_id → (until, digest; None: not push)
        self.tally = Tally()  # completeness, sent to Redis by PushUpkeep
        self._last_demand: dict[str, int] = {}  # the newest demand time written, per device

    async def _digest(self, cloud_id: str) -> str | None:
        now = time.monotonic()
        cached = self._known.get(cloud_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self.store.push_credentials(cloud_id)
        digest = found[2] if found is not None and found[0] == PUSH and found[1] else None
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[cloud_id] = (now + CREDENTIALS_TTL_S, digest)
        return digest

    async def authenticate(self, cloud_id: str, key: str | None) -> None:
        """Pass for an active push device's own key; UploadRefused (401 or 404) otherwise."""
        expected = await self._digest(cloud_id)
        matches = hmac.compare_digest(push_key_digest(key or ""), expected or _NO_DEVICE)
        if expected is None:
            raise UploadRefused(404, "unknown_device", f"no active push device {cloud_id} is registered.")
        if not key or not matches:
            raise UploadRefused(
                401, "unauthorized", "send the device's push key (HTTP Basic cloud_id:key or ?key=)."
            )

    async def receive(self, cid: str, body: bytes, now: float | None = None) -> Received:
        """Write what the body holds; UploadRefused when it cannot be taken."""
        now = time.time() if now is None else now
        if len(body) > self.max_bytes:
            await self.store.count_push_rejected(cid)
            raise UploadRefused(
                413, "too_large", f"an upload is at most {self.max_bytes} bytes (MAX_PUSH_BYTES)."
            )
        try:
            upload = parse_upload(body, now)
        except BadUpload as exc:
            await self.store.count_push_rejected(cid)
            raise UploadRefused(400, "bad_upload", str(exc)) from None
        lines = [
            (r.kind, r.device_time, orjson.dumps(r.record(cid, now, "push")) + b"\n") for r in upload.readings
        ]
        written, duplicates = self.writer.write(cid, lines, now) if lines else ([], 0)
        demands = sorted((t, line) for kind, t, line in written if kind == "demand")
        self.tally.ok(cid, now)
        for t, _ in demands:
            previous = self._last_demand.get(cid)
            self.tally.reading(cid, now, t - previous if previous is not None and t > previous else None)
            self._last_demand[cid] = max(t, previous or t)
        self.ledger.add(
            PollUpdate(
                cid,
                events=len(demands),
                first_timestamp=float(demands[0][0]) if demands else None,
                last_timestamp=float(demands[-1][0]) if demands else None,
                last_success_at=now,
                last_error="",
                last_reading=demands[-1][1].decode().rstrip("\n") if demands else None,
            )
        )
        if upload.kept:
            await self.store.record_push_info(cid, upload.kept)
        return Received(len(written), duplicates, upload.ignored)
