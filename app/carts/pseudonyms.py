"""Carts that do not name a household: what a researcher can publish.

A pseudonymous cart (asked for with `"pseudonymize": true`, and always for a study's token) names
each household by its study `participant_id` (a household in no study by `anon-` and a keyed
digest of its cloud_id, the key derived from SECRET_KEY, so the same household has the same name
in every cart of a deployment and the name cannot be reversed without the key), and holds no
cloud_id, e-mail address or device or meter MAC address in any file, file name or manifest entry.
It carries `participants.csv`: each household's pseudonym, time zone, enrolment window and state,
and what the cart holds of it.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.devices import DeviceRecord
from app.studies import Enrolment, utc

SCRUBBED = frozenset({"cloud_id", "DeviceMacId", "MeterMacId", "user_email"})
PARTICIPANTS_HEADER = (
    "participant_id", "study", "timezone", "state", "enrolled_from_utc", "enrolled_until_utc",
    "demand_rows", "summation_rows", "price_rows", "hours_with_data",
)  # fmt: skip


@dataclass(frozen=True)
class Naming:
    """How a cart names its households: by cloud_id, or by pseudonym."""

    pseudonymous: bool = False
    names: dict[str, str] = field(default_factory=dict)  # cloud_id → pseudonym
    enrolments: dict[str, Enrolment] = field(default_factory=dict)

    @property
    def id_column(self) -> str:
        return "participant_id" if self.pseudonymous else "cloud_id"

    def of(self, cloud_id: str) -> str:
        return self.names.get(cloud_id, cloud_id) if self.pseudonymous else cloud_id

    def path(self, name: str, cloud_id: str) -> str:
        """A member's path with the household's name in place of its cloud_id."""
        return name.replace(cloud_id, self.of(cloud_id)) if self.pseudonymous else name

    def scrub(self, record: dict[str, Any]) -> dict[str, Any]:
        """A reading without what names its household (the pseudonym in their place)."""
        if not self.pseudonymous:
            return record
        named = {"participant_id": self.of(str(record.get("cloud_id", "")))}
        return named | {k: v for k, v in record.items() if k not in SCRUBBED}


def naming(records: Iterable[DeviceRecord], secret_key: str, pseudonymous: bool) -> Naming:
    records = list(records)
    enrolled = {r.cloud_id: r.enrolment for r in records if r.enrolment is not None}
    if not pseudonymous:
        return Naming(False, {}, enrolled)
    key = hashlib.sha256(b"rainforest-logger pseudonyms\0" + secret_key.encode()).digest()
    names = {
        r.cloud_id: r.enrolment.participant_id
        if r.enrolment is not None
        else "anon-" + hmac.new(key, r.cloud_id.encode(), hashlib.sha256).hexdigest()[:12]
        for r in records
    }
    return Naming(True, names, enrolled)


def write_participants(
    dest: Path, naming: Naming, devices: Iterable[str], counts: dict[str, dict[str, int]]
) -> None:
    """participants.csv: a row per household in the cart (the BIDS participants.tsv pattern)."""
    with dest.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(PARTICIPANTS_HEADER)
        for cid in devices:
            e = naming.enrolments.get(cid)
            c = counts.get(cid, {})
            out.writerow((
                naming.of(cid), e.study if e else "", e.timezone if e else "UTC", e.state if e else "",
                utc(e.enrolled_from) if e else "", utc(e.enrolled_until) if e and e.enrolled_until else "",
                c.get("demand_rows", 0), c.get("summation_rows", 0), c.get("price_rows", 0),
                c.get("hours_with_data", 0),
            ))  # fmt: skip
