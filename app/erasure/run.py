"""`rainforest participants withdraw STUDY PARTICIPANT [--erase]`: the household stops being polled
and its pushes are refused at once; with `--erase`, every reading of it is erased, place by place
(app.erasure.tombstone.STEPS), each step written down when done.

Resumable and harmless twice: the tombstone says what is done; a run that died half-way (or an
erasure asked through the API) is finished by the next `withdraw --erase` of the same participant
or by the rotate process, which resumes any erasure whose runner's lease lapsed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from app.archive.backend import Archive
from app.carts.registry import CartRegistry
from app.carts.retention import remove_files
from app.erasure.hourly import erase_hourly
from app.erasure.local import LocalSweep, host_id
from app.erasure.marks import Mark, digests
from app.erasure.parquet import DayEraser
from app.erasure.tombstone import RUNNING, WITHDRAWN, Tombstone
from app.errors import ConfigError, ValidationError
from app.heartbeat import process_id
from app.research.compact import Compactor
from app.settings import Settings
from app.store import Store

log = logging.getLogger(__name__)
LEASE_S = 600.0  # a runner that stops renewing for this long is taken over


class Erasure:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        archive: Archive,
        clock: Callable[[], float] = time.time,
        on_step: Callable[[str, dict[str, Any]], None] = lambda step, counts: None,
    ) -> None:
        self.settings, self.store, self.archive, self.clock = settings, store, archive, clock
        self.on_step = on_step  # told as each step is done (the command prints it)
        self.runner = process_id()

    async def withdraw(self, study: str, participant_id: str, by: str, erase: bool) -> Tombstone:
        """Withdraw a participant (and erase, when asked): the tombstone, as it stands after."""
        tomb = await begin_withdrawal(
            self.settings, self.store, study, participant_id, by, erase, self.clock()
        )
        return await self.resume(tomb) if tomb.erase and tomb.state == RUNNING else tomb

    async def resume(self, tomb: Tombstone) -> Tombstone:
        """Do what is left of an erasure (nothing when another runner holds it)."""
        if not await self.store.erasures.claim(tomb, self.runner, self.clock(), LEASE_S, _dead(tomb.runner)):
            log.info("erasure held by another runner", extra={"tombstone": tomb.id})
            return tomb
        cloud_id = tomb.cloud_id
        for step in tomb.left():
            started = time.monotonic()
            counts = await self._step(step, cloud_id)
            counts["seconds"] = round(time.monotonic() - started, 3)
            await self.store.erasures.step_done(tomb, step, counts)
            self.on_step(step, counts)
            await self.store.erasures.claim(tomb, self.runner, self.clock(), LEASE_S)
            log.info("erasure step done", extra={"tombstone": tomb.id, "step": step, **_flat(counts)})
        await self.store.erasures.finish(tomb, self.clock())
        log.info("erasure finished", extra={"tombstone": tomb.id})
        return tomb

    async def resume_pending(self) -> int:
        """Finish every erasure left running (by a crash, or asked through the API)."""
        done = 0
        for tomb in await self.store.erasures.all():
            if tomb.erase and tomb.state == RUNNING:
                await self.resume(tomb)
                done += 1
        return done

    async def _step(self, step: str, cloud_id: str) -> dict[str, Any]:
        if step == "hourly":
            return await asyncio.to_thread(erase_hourly, self.archive, cloud_id)
        if step == "parquet":
            marks = await self.store.erasures.marks(self.settings.secret_key)
            compactor = Compactor(self.settings, self.archive, marks=marks)
            eraser = DayEraser(compactor, self.settings.data_dir / "tmp")
            return await asyncio.to_thread(eraser.erase, cloud_id)
        if step == "carts":
            return await self._carts(cloud_id)
        if step == "redis":
            return (await self.store.erasures.sweep(cloud_id, remove=True)).public()
        sweep = LocalSweep(self.settings, self.store, self.clock)
        removed = await sweep.once()
        return {"host": host_id(self.settings), "files": sum(removed.values())}

    async def _carts(self, cloud_id: str) -> dict[str, Any]:
        """Every cart that held the household: its files removed, itself marked erased. A cart of
        the whole fleet made after the household was registered held it too."""
        registry = CartRegistry(self.store.redis)
        record = await self.store.devices.get_device(cloud_id)
        since = record.created_at if record is not None else 0.0
        removed = 0
        for cart in await registry.all():
            devices = cart.request.devices
            held = cloud_id in devices if devices is not None else cart.created_at >= since
            if cart.status == "erased" or not held:
                continue
            await registry.mark_erased(cart, cloud_id, self.clock())
            await asyncio.to_thread(remove_files, self.settings, cart.id)
            removed += 1
        return {"carts": removed}


async def begin_withdrawal(
    settings: Settings, store: Store, study: str, participant_id: str, by: str, erase: bool, now: float
) -> Tombstone:
    """The withdrawal itself, at once: the household is no longer polled and its pushes are
    refused (pingers hear of it at once); with `erase`, its mark and a running tombstone, which
    `Erasure.resume` (the command, or the rotate process) carries out. A participant withdrawn
    before gets the tombstone it has."""
    kept = await store.erasures.get(study, participant_id)
    if kept is not None and (kept.erase or not erase):
        return kept
    cloud_id = await store.studies.participant(study, participant_id)
    record = await store.devices.get_device(cloud_id) if cloud_id else None
    if cloud_id is None or record is None or record.enrolment is None:
        raise ValidationError(f"no participant {participant_id!r} is enrolled in {study}.")
    if erase and not settings.secret_key.strip():
        raise ConfigError("erasing needs SECRET_KEY: the erasure marks are keyed from it.")
    tomb = Tombstone(study, participant_id, now, by, erase, RUNNING if erase else WITHDRAWN)
    mark = None
    if erase:
        tomb.digest, tomb.cloud_id = digests(settings.secret_key, cloud_id)[0], cloud_id
        mark = Mark(now, tomb.id)
    ended = min(record.enrolment.enrolled_until or now, now)
    await store.studies.enrol(cloud_id, replace(record.enrolment, state="withdrawn", enrolled_until=ended))
    await store.erasures.begin(tomb, mark)
    log.info(
        "participant withdrawn", extra={"study": study, "participant_id": participant_id, "erase": erase}
    )
    return tomb


def _flat(counts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in counts.items() if isinstance(v, int | float | str)}


def _dead(runner: str) -> str:
    """`runner` when it is a process of this host that no longer runs (killed half-way), else ''."""
    host, _, pid = runner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return ""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return runner
    except PermissionError:
        return ""
    return ""
