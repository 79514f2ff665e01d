"""One upload from a gateway: authenticate it, read its body, write its readings once, count.

Authentication answers the same 401 whether the device is unknown, not a push device, or known
with another key, after the same work (one digest look-up, one digest, one constant-time
comparison), so an upload cannot tell whether a cloud_id is registered. Nothing is written.

What Redis says of a device's key is kept by app.push.keycache (a change to the device takes
effect at once); while Redis is unreachable, a device this process has seen keeps uploading (its
readings are written, the counters catch up when Redis is back); a device never seen gets a 503.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field

import orjson

from app.completeness import Tally
from app.devices import push_key_digest
from app.eagle.readings import Reading
from app.errors import FileBusy, StoreError
from app.hours import Hour
from app.pinger.ledger import Ledger
from app.push.dialects import BadUpload, parse_upload
from app.push.keycache import KeyCache
from app.push.writer import PushWriter
from app.store import PollUpdate, Store

log = logging.getLogger(__name__)
ACCEPTED = {"push_refused_since": "", "push_refused": ""}  # an accepted upload ends a run of refusals
_NO_DEVICE = push_key_digest("no device has this key")
LOCK_WAIT_S = 2.0  # how long an upload waits, asleep, for a file another process holds
OUTSIDE = "this household's consent window (its study enrolment) does not cover now: nothing was written."
REFUSED = "send this device's push key (HTTP Basic cloud_id:key); no push device takes this key."


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
        self.keys = KeyCache(store)
        self.tally = Tally()  # completeness, sent to Redis by PushUpkeep
        self._last_demand: dict[str, int] = {}  # the newest demand time written, per device

    async def authenticate(self, cloud_id: str, key: str | None) -> None:
        """Pass for an active push device's own key; UploadRefused (401) otherwise, the same
        answer for an unknown device as for a wrong key."""
        expected = await self.keys.digest(cloud_id)
        matches = hmac.compare_digest(push_key_digest(key or ""), expected or _NO_DEVICE)
        if expected is None or not key or not matches:
            if expected is not None:  # a push device of ours sending a wrong key: its health says so
                try:
                    await self.store.push.note_refused(cloud_id, time.time())
                except StoreError as exc:
                    log.warning(
                        "could not count a refused key", extra={"cloud_id": cloud_id, "reason": str(exc)}
                    )
            raise UploadRefused(401, "unauthorized", REFUSED)

    async def _write(
        self, cid: str, lines: list[tuple[str, int | None, bytes]], now: float
    ) -> tuple[list[tuple[str, int | None, bytes]], int]:
        """The writer's append, tried again (asleep, the loop free) while another process holds
        the file, for at most LOCK_WAIT_S; then FileBusy, which the route answers with a 503."""
        delay_s, deadline = 0.005, time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                return self.writer.write(cid, lines, now)
            except FileBusy:
                if time.monotonic() + delay_s > deadline:
                    raise
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.2)

    async def _history(
        self, cid: str, entries: list[Reading], now: float
    ) -> tuple[list[tuple[str, int | None, bytes]], int]:
        """History entries (`source: history`), each filed in the hour of its own time."""
        by_hour: dict[int, list[tuple[str, int | None, bytes]]] = {}
        for r in entries:
            if r.device_time is not None:  # (the parser keeps only entries with a time)
                line = orjson.dumps(r.record(cid, now, "history")) + b"\n"
                by_hour.setdefault(Hour.at(r.device_time).start, []).append((r.kind, r.device_time, line))
        written: list[tuple[str, int | None, bytes]] = []
        duplicates = 0
        for hour_start, group in sorted(by_hour.items()):
            done, repeated = await self._write(cid, group, float(hour_start))
            written, duplicates = written + done, duplicates + repeated
        return written, duplicates

    async def _count_rejected(self, cid: str) -> None:
        try:
            await self.store.push.count_push_rejected(cid)
        except StoreError as exc:  # a statistic: the refusal is answered all the same
            log.warning("could not count a refused upload", extra={"cloud_id": cid, "reason": str(exc)})

    async def receive(self, cid: str, body: bytes, now: float | None = None) -> Received:
        """Write what the body holds; UploadRefused when it cannot be taken."""
        now = time.time() if now is None else now
        window = self.keys.window(cid)
        if window is not None and not window.covers(now):
            raise UploadRefused(403, "outside_window", OUTSIDE)
        if len(body) > self.max_bytes:
            await self._count_rejected(cid)
            raise UploadRefused(
                413, "too_large", f"an upload is at most {self.max_bytes} bytes (MAX_PUSH_BYTES)."
            )
        try:
            upload = parse_upload(body, now)
        except BadUpload as exc:
            await self._count_rejected(cid)
            raise UploadRefused(400, "bad_upload", str(exc)) from None
        lines = [
            (r.kind, r.device_time, orjson.dumps(r.record(cid, now, "push")) + b"\n") for r in upload.readings
        ]
        written, duplicates = await self._write(cid, lines, now) if lines else ([], 0)
        demands = sorted((t, line) for kind, t, line in written if kind == "demand" and t is not None)
        if upload.history:  # a HistoryData upload: each entry into the hour it belongs to, once
            more, repeated = await self._history(cid, upload.history, now)
            written, duplicates = written + more, duplicates + repeated
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
                fields=ACCEPTED,
            )
        )
        if upload.kept:
            try:
                await self.store.push.record_push_info(cid, upload.kept)
            except StoreError as exc:  # what the gateway said of itself; its readings are stored
                log.warning("could not keep push info", extra={"cloud_id": cid, "reason": str(exc)})
        return Received(len(written), duplicates, upload.ignored)
