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


@dataclass
class ImportReport:
    """Counts by outcome and one message per bad line, by line number."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[int, str]] = field(default_factory=list)
    push_keys: list[tuple[str, str]] = field(default_factory=list)  # (cloud_id, key) made now: shown once

    @property
    def failed(self) -> int:
        return len(self.problems)


def parse_line(raw: bytes) -> DeviceInput:
    """One users-file line → a validated DeviceInput, or ValidationError saying what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationError("not valid JSON (each line must be one JSON object).") from None
    return DeviceInput.from_mapping(data)


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
                inp = parse_line(raw)
                if reach is not None and inp.address and inp.protocol != CLOUD:
                    reach.check(inp.address)
            except ValidationError as exc:
                report.problems.append((number, str(exc)))
                continue
            saved = await store.devices.register(inp, vault)
            report.counts[saved.outcome] += 1
            if saved.push_key:
                report.push_keys.append((inp.cloud_id, saved.push_key))
    return report
