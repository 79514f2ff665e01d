"""Build one cart: claim it, plan, reserve space, stage and verify, bundle, report. One job, one cart.

Failures end in `error` with a reason and one sentence; nothing stays "not ready" forever:
- the archive failing past ARCHIVE_RETRIES (with backoff) → ARCHIVE_UNAVAILABLE;
- a fetched object that does not match its checksum, twice → HASH_MISMATCH;
- not enough disk or CARTS_MAX_BYTES for the whole cart, known before staging → NO_SPACE;
- nothing in range → EMPTY; past CART_DEADLINE_S → TIMEOUT; a DELETE meanwhile → CANCELLED.
The worker refreshes a lease while it builds; if it dies, the watchdog gives the cart to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import heapq
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from app import lines
from app.archive.backend import Archive, file_sha256
from app.carts import bundle, datapackage, pseudonyms
from app.carts.columnar import build_parquet_device
from app.carts.model import (
    ARCHIVE_UNAVAILABLE,
    BUNDLING,
    EMPTY,
    FAILED,
    HASH_MISMATCH,
    NO_SPACE,
    READY,
    STAGING,
    TIMEOUT,
    Cart,
    CartRequest,
)  # fmt: skip
from app.carts.plan import Part, hours_in, plan
from app.carts.readme import readme_text, write_completeness, write_completeness_days
from app.carts.registry import CartRegistry
from app.carts.stage import HashMismatch, Staged, Vanished, append_record, load_record, stage_part
from app.carts.tables import DeviceTables, HourLines, build_device, staged_hours
from app.errors import ArchiveError, StoreError
from app.hours import Hour
from app.logs import action
from app.research.days import DayManifest, DayReader, compacted_device_days, compacted_hours
from app.settings import Settings
from app.store import Store
from app.studies import Enrolment
from app.threads import joined

log = logging.getLogger(__name__)
T = TypeVar("T")
STAGE_CONCURRENCY = 8
KEEPER_S = 1.0  # how often a build refreshes its lease and notices a DELETE


class CartFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class LostCart(Exception):
    """The cart was cancelled, deleted or given to another worker while this one built it."""


def cart_dir(settings: Settings, cart_id: str) -> Path:
    return settings.carts_dir / cart_id


def tar_path(settings: Settings, cart_id: str) -> Path:
    return cart_dir(settings, cart_id) / "cart.tar"


@dataclass
class Builder:
    settings: Settings
    archive: Archive
    registry: CartRegistry
    store: Store
    worker: str
    requeue: Callable[[str, str], Awaitable[None]] | None = None  # hands an interrupted build back
    clock: Callable[[], float] = time.time

    async def build(self, cart_id: str, attempt: int) -> str:
        """Build the cart if this worker wins it; returns the outcome (ready, a reason, or skipped).

        The build is one logged action: every line it causes carries its `action_id`."""
        with action("cart_build"):
            return await self._claim_and_build(cart_id, attempt)

    async def _claim_and_build(self, cart_id: str, attempt: int) -> str:
        if not await self.registry.claim(cart_id, self.worker, attempt, self.clock()):
            return "skipped"
        cart = await self.registry.get(cart_id)
        if cart is None:
            return "skipped"
        started = time.monotonic()
        task = asyncio.current_task()
        lost = asyncio.Event()  # set by the keeper when the cart is cancelled or taken, before it cancels us
        keeper = asyncio.create_task(self._keep_lease(cart_id, task, lost))
        outcome = READY
        counts: dict[str, int] = {}
        try:
            async with asyncio.timeout(self.settings.cart_deadline_s):
                await self._build(cart, counts)
        except asyncio.CancelledError:  # our keeper saw a DELETE, or the worker is stopping
            outcome = await self._stopped(cart_id)
            me = asyncio.current_task()
            if lost.is_set() and me is not None:
                me.uncancel()  # our own keeper stopped the build: the job ends normally
            elif me is not None and me.cancelling():
                raise
        except Exception as exc:
            if isinstance(exc, LostCart) or not await self.registry.update(cart_id, self.worker):
                outcome = await self._stopped(cart_id)  # cancelled or taken while we built it
            elif isinstance(exc, CartFailed):
                outcome = exc.reason
                await self._fail(cart, exc.reason, exc.message)
            elif isinstance(exc, TimeoutError):
                outcome = TIMEOUT
                deadline = f"CART_DEADLINE_S ({self.settings.cart_deadline_s:.0f} s)"
                advice = "ask for a smaller range or fewer devices."
                await self._fail(cart, TIMEOUT, f"the cart was still building after {deadline}; {advice}")
            else:  # a bug, or the disk: the cart fails with a message, the trace is logged
                outcome = FAILED
                log.exception("cart build failed", extra={"cart_id": cart_id})
                await self._fail(
                    cart, FAILED, f"the build failed unexpectedly ({type(exc).__name__}); it is logged."
                )
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        log.info(
            "cart build", extra={"cart_id": cart_id, "outcome": outcome, "attempt": attempt,
                                 "seconds": round(time.monotonic() - started, 3), **counts},
        )  # fmt: skip
        return outcome

    async def _build(self, cart: Cart, counts: dict[str, int]) -> None:
        settings = self.settings
        request = cart.request
        folder = cart_dir(settings, cart.id)
        stage_dir = folder / "staging"
        devices = (
            list(request.devices)
            if request.devices is not None
            else sorted(await self.store.devices.all_ids())
        )
        parts = await self._archive_call(
            lambda: plan(
                self.archive, settings.logs_dir, settings.file_prefix, request, devices, self.clock()
            )
        )
        # consent: a household's hours outside its study window are not even fetched
        records = await self.store.devices.load_devices(devices)
        windows = {r.cloud_id: r.enrolment for r in records if r.enrolment}
        naming = pseudonyms.naming(records, settings.secret_key, request.pseudonymize)
        parts = [p for p in parts if _consented(windows.get(p.device_hour.cloud_id), p.device_hour.hour)]
        marks = await self.store.erasures.marks(settings.secret_key)  # erased: never served again
        parts = [
            p for p in parts if not marks.erased(p.device_hour.cloud_id, Hour.parse(p.device_hour.hour).start)
        ]
        compacted: dict[tuple[str, str], DayManifest] = {}
        if request.format != "jl":  # jl carts are the hourly files themselves, always
            compacted = await self._archive_call(lambda: _compacted(self.archive, parts))
            parts = [p for p in parts if (p.device_hour.cloud_id, p.device_hour.day.key) not in compacted]
            counts["compacted_device_days"] = len(compacted)
        if not parts and not compacted:
            span = request.to_json()
            raise CartFailed(
                EMPTY,
                f"no readings for those {len(devices)} devices between {span['start']} and {span['end']}.",
            )
        sizes = await self._archive_call(lambda: [_staged_size(self.archive, p) for p in parts])
        staged_total = sum(sizes)
        # the staged files, the tar of them, and the csv/parquet files made from them (at most
        # their size again), COMPLETENESS.csv and README.txt
        made = staged_total if request.format != "jl" else 0
        need = staged_total + made + bundle.tar_size([*sizes, made, 64 * 1024, 64 * 1024, 64 * 1024])
        folder.mkdir(parents=True, exist_ok=True)
        ok, have = await self.registry.reserve(
            cart.id, need, usable_bytes(folder, settings.carts_disk_reserve_bytes), settings.carts_max_bytes
        )
        if not ok:
            raise CartFailed(
                NO_SPACE,
                f"not enough space for this cart: need {_mb(need)}, have {_mb(max(have, 0))} "
                "(CARTS_MAX_BYTES, and the disk space kept for readings not yet shipped).",
            )
        await self._update(cart.id, status=STAGING, files_total=len(parts), bytes_total=staged_total,
                           files_done=0, bytes_done=0, message=f"staging {len(parts)} files")  # fmt: skip
        stage_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        staged = await self._stage_all(cart.id, parts, stage_dir, counts)
        counts["stage_ms"] = round((time.monotonic() - began) * 1000)
        began = time.monotonic()
        await self._update(cart.id, status=BUNDLING, message="bundling the tar")
        polls = await self._polls(devices, request)
        members, content = await joined(
            self._members, cart, parts, staged, stage_dir, devices, polls, compacted, windows, naming
        )
        counts["tables_ms"] = round((time.monotonic() - began) * 1000)  # the format's files, the counts
        began = time.monotonic()
        per_device = content.pop("per_device")
        asked = request.to_json()
        if naming.pseudonymous and request.devices is not None:
            asked["devices"] = sorted(naming.of(cid) for cid in request.devices)
        sources = [] if naming.pseudonymous else [  # an archive key names its household
            {"path": s.name, "source": s.source, "sha256": s.sha256} for s in staged
        ]  # fmt: skip
        manifest = bundle.manifest_bytes({
            "cart_id": cart.id, "created_at": cart.public()["created_at"], "request": asked,
            "format": request.format, "counts": content, "devices": per_device,
            "files": [{"path": m.name, "size": m.size, "sha256": m.sha256} for m in members],
            "sources": sources,
        })  # fmt: skip
        loop = asyncio.get_running_loop()
        total = sum(m.size for m in members)

        def progress(done: int) -> None:  # from the bundling thread
            asyncio.run_coroutine_threadsafe(
                self.registry.update(cart.id, self.worker, bytes_done=min(done, total)), loop
            )

        size = await joined(
            bundle.write_tar,
            tar_path(settings, cart.id),
            members,
            manifest,
            cart.created_at,
            _throttled(progress),
            stoppable=True,
        )
        counts.update(files=len(members), bytes=size, bundle_ms=round((time.monotonic() - began) * 1000))
        if not await self.registry.update(
            cart.id, self.worker, status=READY, size=size, files_done=len(parts), bytes_done=staged_total,
            message=f"ready: {len(members)} files, {_mb(size)}",
        ):  # fmt: skip
            raise LostCart(cart.id)
        # the tar holds every file, verified: the staged and made copies only took disk space
        await joined(_keep_only_tar, folder, tar_path(settings, cart.id))
        await self.registry.set_space(cart.id, await joined(used_bytes, folder))

    async def _stage_all(
        self, cart_id: str, parts: list[Part], stage_dir: Path, counts: dict[str, int]
    ) -> list[Staged]:
        previous = await joined(load_record, stage_dir)
        gate = asyncio.Semaphore(STAGE_CONCURRENCY)
        done = {"files": 0, "bytes": 0, "reused": 0}
        results: list[Staged | None] = [None] * len(parts)

        async def one(i: int, part: Part) -> None:
            async with gate:
                staged, reused = await self._stage_one(part, stage_dir, previous)
                if not reused:
                    await joined(append_record, stage_dir, staged)
                results[i] = staged
                done["files"] += 1
                done["bytes"] += staged.size
                done["reused"] += reused
                await self._update(cart_id, files_done=done["files"], bytes_done=done["bytes"])

        try:  # on the first failure the other parts stop, and are waited for, before it goes on
            async with asyncio.TaskGroup() as group:
                for i, p in enumerate(parts):
                    group.create_task(one(i, p))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        counts["reused_staged_files"] = done["reused"]
        return [r for r in results if r is not None]

    async def _stage_one(
        self, part: Part, stage_dir: Path, previous: dict[str, Staged]
    ) -> tuple[Staged, bool]:
        for mismatch_try in range(2):
            try:
                return await self._archive_call(
                    lambda part=part, previous=previous: stage_part(self.archive, part, stage_dir, previous)  # type: ignore[misc]
                )
            except HashMismatch as exc:
                if mismatch_try == 1:
                    raise CartFailed(
                        HASH_MISMATCH, f"{exc} It was fetched twice; the archive copy needs checking."
                    ) from exc
                previous = {}
            except Vanished:
                # rotate shipped this hour while we staged it: it is now the archive's next part
                again = await self._archive_call(lambda part=part: self._replan(part))  # type: ignore[misc]
                if not again:
                    raise CartFailed(
                        FAILED, f"{part.local} vanished and is not in the archive either."
                    ) from None
                part = again[0]
        raise AssertionError("unreachable")

    def _replan(self, part: Part) -> list[Part]:
        """The archived part that a vanished local hour became."""
        found = plan(self.archive, self.settings.logs_dir, self.settings.file_prefix, _hour_request(part),
                     [part.device_hour.cloud_id], self.clock())  # fmt: skip
        return [p for p in found if p.part == part.part and p.key is not None]

    def _members(
        self,
        cart: Cart,
        parts: list[Part],
        staged: list[Staged],
        stage_dir: Path,
        devices: list[str],
        polls: dict[tuple[str, int], tuple[int, int]],
        compacted: dict[tuple[str, str], DayManifest],
        windows: dict[str, Enrolment],
        naming: pseudonyms.Naming,
    ) -> tuple[list[bundle.Member], dict[str, Any]]:
        """The cart's files in its format, plus COMPLETENESS.csv and README.txt; and its counts."""
        request = cart.request
        folder = cart_dir(self.settings, cart.id)
        counts: dict[str, Any] = {
            "devices": len({p.device_hour.cloud_id for p in parts} | {cid for cid, _ in compacted}),
            "hours": len({p.device_hour for p in parts}),
            "parts": len(parts),
            "partial_lines": sum(s.partial for s in staged),
        }
        by_device: dict[str, dict[int, list[Path]]] = {}
        for p, s in zip(parts, staged, strict=True):
            by_device.setdefault(p.device_hour.cloud_id, {}).setdefault(
                Hour.parse(p.device_hour.hour).start, []
            ).append(stage_dir / s.name)
        members: list[bundle.Member] = []
        if request.format == "jl":
            cut = [
                _scrubbed(_within(s, stage_dir, windows.get(p.device_hour.cloud_id), p.device_hour.hour),
                          stage_dir, naming)
                for p, s in zip(parts, staged, strict=True)
            ]  # fmt: skip
            counts["lines"] = sum(s.lines for s in cut)
            named = [naming.path(s.name, p.device_hour.cloud_id) for p, s in zip(parts, cut, strict=True)]
            members = [
                bundle.Member(name, stage_dir / s.name, s.size, s.sha256)
                for name, s in zip(named, cut, strict=True)
            ]
        per_device: dict[str, DeviceTables] = {}
        readers: dict[str, DayReader] = {}  # one per compacted day, its files' footers read once
        wanted = set(hours_in(request, self.clock()))
        try:
            for cloud_id in sorted(set(by_device) | {cid for cid, _ in compacted}):
                days = sorted(day for cid, day in compacted if cid == cloud_id)
                for day in days:
                    readers.setdefault(day, DayReader(self.archive, compacted[(cloud_id, day)]))
                hours = _device_hours(
                    by_device.get(cloud_id, {}), [readers[d] for d in days], cloud_id, wanted,
                    count_only=request.format == "jl",
                )  # fmt: skip
                window = windows.get(cloud_id)
                span = (
                    (request.start, request.end)
                    if window is None
                    else window.clamp(request.start, request.end)
                )
                start, end = span or (request.start, request.start)  # no consent at all: no rows
                label = (naming.id_column, naming.of(cloud_id))
                zone = window.timezone if window else "UTC"
                by_lines = functools.partial(
                    build_device, request.format, cloud_id, hours, start, end, folder, label, zone
                )
                if request.format == "parquet":  # by columns, or by_lines if they do not take the lines
                    day_readers = [readers[d] for d in days]
                    made = build_parquet_device(cloud_id, by_device.get(cloud_id, {}), day_readers, wanted,
                                                (start, end), folder, label, zone, by_lines)  # fmt: skip
                else:
                    made = by_lines()
                per_device[cloud_id] = made
                members.extend(bundle.Member(m.name, m.path, m.size, m.sha256) for m in made.files)
        finally:
            for reader in readers.values():
                reader.close()
        counts["compacted_days_read"] = sorted(readers)
        counts["duplicates_dropped"] = sum(d.duplicates for d in per_device.values())
        counts["rows"] = sum(sum(d.rows.values()) for d in per_device.values())  # distinct readings
        counts["per_device"] = {naming.of(cid): d.counts() for cid, d in per_device.items()}
        completeness = folder / "COMPLETENESS.csv"
        write_completeness(completeness, devices, hours_in(request, self.clock()),
                           {cid: d.hours for cid, d in per_device.items()}, polls, naming)  # fmt: skip
        by_day = folder / "COMPLETENESS_DAYS.csv"
        write_completeness_days(by_day, devices, hours_in(request, self.clock()),
                                {cid: d.hours for cid, d in per_device.items()}, polls, naming)  # fmt: skip
        readme = folder / "README.txt"
        readme.write_text(readme_text(request.format, cart.id, request.start, request.end, len(devices),
                                      naming.pseudonymous))  # fmt: skip
        extras = [completeness, by_day, readme]
        if naming.pseudonymous:
            people = folder / "participants.csv"
            held = {cid: d.counts() for cid, d in per_device.items()}
            pseudonyms.write_participants(people, naming, devices, held)
            extras.append(people)
        for extra in extras:
            members.append(bundle.Member(extra.name, extra, extra.stat().st_size, file_sha256(extra)))
        package = folder / "datapackage.json"
        described = [
            datapackage.resource(m.name, m.path, m.size, m.sha256, naming.id_column) for m in members
        ]
        package.write_bytes(datapackage.document(cart.id, request.format, described))
        members.append(bundle.Member(package.name, package, package.stat().st_size, file_sha256(package)))
        return members, counts

    async def _polls(
        self, devices: list[str], request: CartRequest
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """Polls scheduled and ok per device-hour, as Redis still has them (COMPLETENESS_DAYS)."""
        kept_from = self.clock() - self.settings.completeness_days * 86400
        oldest = Hour.at(kept_from) - 1
        hours = [Hour.at(h).number for h in hours_in(request, self.clock()) if Hour.at(h) >= oldest]
        if not hours:
            return {}
        try:
            rows = await self.store.completeness.completeness(devices, hours)
        except StoreError:
            return {}  # the columns stay empty; the readings counted from the files are there
        return {(r["cloud_id"], r["hour"]): (r["scheduled"], r["ok"]) for r in rows if r["scheduled"]}

    async def _archive_call(self, fn: Callable[[], T]) -> T:
        """Run blocking archive work in a thread, retrying archive trouble with backoff."""
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.settings.archive_retries),
                wait=wait_exponential_jitter(multiplier=0.2, max=5),
                retry=retry_if_exception_type(ArchiveError),
                reraise=True,
            ):
                with attempt:
                    return await joined(fn)
        except ArchiveError as exc:
            raise CartFailed(
                ARCHIVE_UNAVAILABLE, f"the archive failed {self.settings.archive_retries} times: {exc}"
            ) from exc
        raise AssertionError("unreachable")

    async def _stopped(self, cart_id: str) -> str:
        """The build stopped without finishing; every thread of it has ended (see `app.threads`).

        A cancelled or deleted cart's files go; a cart still ours (the worker is stopping) is
        handed back to the queue at once."""
        current = await self.registry.get(cart_id)
        if current is None or current.reason == "CANCELLED":
            await joined(shutil.rmtree, cart_dir(self.settings, cart_id), True)
            await self.registry.set_space(cart_id, None)
        elif current.extra.get("worker") == self.worker and self.requeue is not None:
            # this worker is shutting down: another (or this one, restarted) takes over now
            await self.requeue(cart_id, "waiting: its worker stopped; queued again")
        return "cancelled"

    async def _update(self, cart_id: str, **fields: object) -> None:
        if not await self.registry.update(cart_id, self.worker, **fields):
            raise LostCart(cart_id)

    async def _fail(self, cart: Cart, reason: str, message: str) -> None:
        """Record the failure; staged files stay for `carts fixit`, and count against the space."""
        await self.registry.fail(cart.id, self.worker, reason, message)
        folder = cart_dir(self.settings, cart.id)
        (folder / "cart.tar").unlink(missing_ok=True)
        await self.registry.set_space(cart.id, await joined(used_bytes, folder) or None)
        log.warning("cart failed", extra={"cart_id": cart.id, "reason": reason, "error": message})

    async def _keep_lease(self, cart_id: str, builder: asyncio.Task[Any] | None, lost: asyncio.Event) -> None:
        """Refresh the lease every KEEPER_S; when the cart is cancelled or taken, stop the build."""
        while True:
            await asyncio.sleep(KEEPER_S)
            if not await self.registry.update(cart_id, self.worker) and builder is not None:
                current = await self.registry.get(cart_id)
                if current is not None and current.status == READY:
                    return  # finished between two ticks: nothing to stop
                lost.set()
                builder.cancel()
                return


def _compacted(archive: Archive, parts: list[Part]) -> dict[tuple[str, str], DayManifest]:
    """The device-days of a plan that compacted Parquet holds exactly (see compacted_device_days)."""
    archived: dict[tuple[str, str], list[tuple[str, int]]] = {}
    local: set[tuple[str, str]] = set()
    for p in parts:
        where = (p.device_hour.cloud_id, p.device_hour.day.key)
        if p.key is None:
            local.add(where)
        else:
            archived.setdefault(where, []).append((p.key, p.stored_size))
    return compacted_device_days(archive, archived, local)


def _device_hours(
    staged: dict[int, list[Path]],
    readers: list[DayReader],
    cloud_id: str,
    wanted: set[int],
    count_only: bool = False,
) -> Iterator[HourLines]:
    """A device's hours in the cart's range, in order: from staged hourly parts, and from
    compacted days (a day at a time)."""
    from_days = (h for reader in readers for h in compacted_hours(reader, cloud_id) if h[0] in wanted)
    yield from heapq.merge(staged_hours(staged, count_only), from_days, key=lambda h: h[0])


def _consented(window: Enrolment | None, hour: str) -> bool:
    """Whether any of this UTC hour lies inside the household's consent window."""
    span = Hour.parse(hour)
    return window is None or window.clamp(span.start, span.end) is not None


def _within(staged: Staged, stage_dir: Path, window: Enrolment | None, hour: str) -> Staged:
    """A staged hourly file as the cart may hold it: for an hour the household's consent window
    cuts, only the readings inside the window (the file rewritten, its size and digest anew)."""
    span = Hour.parse(hour)
    if window is None or (window.covers(span.start) and window.covers(span.end - 0.001)):
        return staged
    path = stage_dir / staged.name
    data, kept = lines.keep(path.read_bytes(), lambda r: window.covers(lines.time_of(r)))
    path.write_bytes(data)
    return dataclasses.replace(
        staged, size=len(data), sha256=hashlib.sha256(data).hexdigest(), lines=kept, partial=0
    )


def _scrubbed(staged: Staged, stage_dir: Path, naming: pseudonyms.Naming) -> Staged:
    """A staged hourly file as a pseudonymous cart holds it: each reading without what names its
    household (re-encoded: the bytes are no longer the archive's)."""
    if not naming.pseudonymous:
        return staged
    path = stage_dir / staged.name
    parsed = lines.parse(path.read_bytes())
    data = b"".join(lines.encode(naming.scrub(r)) for r in parsed.records)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    return dataclasses.replace(staged, size=len(data), sha256=digest, lines=len(parsed.records), partial=0)


def _keep_only_tar(folder: Path, tar: Path) -> None:
    """Remove everything in a ready cart's folder but its tar (a 10-year cart left 109 MB)."""
    for entry in folder.iterdir():
        if entry == tar:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def used_bytes(folder: Path) -> int:
    """What a cart's folder holds on disk now (staged files, CSVs, the tar)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _staged_size(archive: Archive, part: Part) -> int:
    """Bytes the part takes once staged (decompressed), from the archive's record of it."""
    if part.key is None:
        return part.stored_size
    stored = archive.stat(part.key)
    if stored is None:
        raise ArchiveError(f"{part.key} disappeared from {archive.url}.", kind="error")
    return stored.source_bytes if stored.source_bytes is not None else part.stored_size * 20


def _hour_request(part: Part) -> CartRequest:
    start = Hour.parse(part.device_hour.hour).start
    return CartRequest((part.device_hour.cloud_id,), start, start + 3600)


def _throttled(fn: Callable[[int], None], every_s: float = 0.5) -> Callable[[int], None]:
    last = [0.0]

    def call(value: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            fn(value)

    return call


def usable_bytes(folder: Path, reserve_bytes: int) -> int:
    """Free space on `folder`'s disk that carts may take: what is free, less a reserve that no cart
    may use (CARTS_DISK_RESERVE_BYTES, and at least a tenth of the disk), so that carts sharing a
    disk with DATA_DIR never take the space the pinger and rotate need for unshipped hours."""
    usage = shutil.disk_usage(folder)
    return max(0, usage.free - max(reserve_bytes, usage.total // 10))


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
