"""Operators' direct path into the registry: a devices file (the "users file" of `rainforest users
import` and the add-users script, names kept as the contract), one JSON object per device."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from app.credentials import Vault
from app.devices import CLOUD, DeviceInput
from app.eagle.reach import ReachPolicy
from app.errors import ValidationError
from app.store import Store
from app.studies import Enrolment, Study, study_id


@dataclass
class ImportReport:
    """Counts by outcome and one message per bad line, by line number."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[int, str]] = field(default_factory=list)
    push_keys: list[tuple[str, str]] = field(default_factory=list)  # (cloud_id, key) made now: shown once
    saved: list[str] = field(default_factory=list)  # every cloud_id created, updated or unchanged

    @property
    def failed(self) -> int:
        return len(self.problems)


ENROLMENT_KEYS = frozenset({"study", "participant_id", "enrolled_from", "enrolled_until", "timezone"})


def parse_line(raw: bytes) -> tuple[DeviceInput, dict[str, object]]:
    """One users-file line → a validated DeviceInput and its enrolment fields (a `study`, with
    `enrolled_from` and optionally `participant_id`, `enrolled_until`, `timezone`), or
    ValidationError saying what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationError("not valid JSON (each line must be one JSON object).") from None
    if not isinstance(data, dict):
        return DeviceInput.from_mapping(data), {}
    enrolment = {k: data.pop(k) for k in list(data) if k in ENROLMENT_KEYS}
    if enrolment and "study" not in enrolment:
        raise ValidationError("enrolment fields need a study (the id of a study created first).")
    return DeviceInput.from_mapping(data), enrolment


async def import_users(
    path: Path, store: Store, vault: Vault, reach: ReachPolicy | None = None
) -> ImportReport:
    """Create or update every valid line; bad lines are reported and skipped; safe to re-run.
    With `reach`, a local gateway's address must be one the deployment may poll."""
    report = ImportReport()
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                inp, enrolment = parse_line(raw)
                if reach is not None and inp.address and inp.protocol != CLOUD:
                    reach.check(inp.address)
                study = await _study(store, enrolment)
            except ValidationError as exc:
                report.problems.append((number, str(exc)))
                continue
            saved = await store.devices.register(inp, vault)
            report.counts[saved.outcome] += 1
            report.saved.append(inp.cloud_id)
            if saved.push_key:
                report.push_keys.append((inp.cloud_id, saved.push_key))
            if study is not None:
                try:
                    await _enrol(store, study, inp.cloud_id, enrolment)
                except ValidationError as exc:
                    report.problems.append((number, f"saved, but not enrolled: {exc}"))
                    continue
                report.counts["enrolled"] += 1
    return report


async def _study(store: Store, enrolment: dict[str, object]) -> Study | None:
    if not enrolment:
        return None
    sid = study_id(enrolment["study"])
    found = await store.studies.get(sid)
    if found is None:
        raise ValidationError(f"no study {sid!r}: create it first (rainforest studies create {sid}).")
    return found


async def _enrol(store: Store, study: Study, cloud_id: str, fields: dict[str, object]) -> None:
    """Enrol (again): a line without participant_id keeps the pseudonym the household has."""
    body = {k: v for k, v in fields.items() if k != "study"}
    record = await store.devices.get_device(cloud_id)
    current = record.enrolment if record is not None else None
    await store.studies.enrol(cloud_id, Enrolment.from_mapping(body, study, cloud_id, current))
