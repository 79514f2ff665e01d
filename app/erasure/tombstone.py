"""What a study keeps of an erased household: who (the participant_id, a pseudonym), when, by whom,
and what was erased where (object counts and bytes per place, Parquet versions rewritten, carts
removed, each host's local files), never a reading, a cloud_id or an address.

An erasure goes through STEPS in order; each one done is written down with its counts, so a run
that died half-way is finished by the next, and running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from app.studies import utc

# hourly first: once its objects are gone no compaction can bring the household back into a day
STEPS = ("hourly", "parquet", "carts", "redis", "local")
STEP_WORDS = {
    "hourly": "archived hourly objects and their further parts",
    "parquet": "compacted Parquet days (rewritten without the household, old versions removed)",
    "carts": "carts that held the household",
    "redis": "the device's record, secrets, counters, completeness, crawls, failures and alerts",
    "local": "hourly files on the host that ran the erasure",
}
RUNNING, DONE, WITHDRAWN = "running", "done", "withdrawn"


@dataclass
class Tombstone:
    study: str
    participant_id: str
    requested_at: float
    by: str
    erase: bool
    state: str = RUNNING  # withdrawn (no erasure asked), running, done
    digest: str = ""  # the marks' name for the household (app.erasure.marks)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # step → what it removed
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # host → its local files removed
    finished_at: float | None = None
    cloud_id: str = field(default="", repr=False)  # kept only while the erasure runs
    runner: str = ""  # host:pid of the process erasing now

    @property
    def id(self) -> str:
        return f"{self.study}/{self.participant_id}"

    def left(self) -> list[str]:
        return [s for s in STEPS if s not in self.steps] if self.erase else []

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Tombstone:
        steps = {k[5:]: orjson.loads(v) for k, v in h.items() if k.startswith("step:")}
        hosts = {k[5:]: orjson.loads(v) for k, v in h.items() if k.startswith("host:")}
        return cls(
            h["study"], h["participant_id"], float(h["requested_at"]), h.get("by", ""), h.get("erase") == "1",
            h.get("state", RUNNING), h.get("digest", ""), steps, hosts,
            float(h["finished_at"]) if h.get("finished_at") else None, h.get("cloud_id", ""),
            h.get("runner", ""),
        )  # fmt: skip

    def fields(self) -> dict[str, str]:
        return {
            "study": self.study, "participant_id": self.participant_id,
            "requested_at": repr(self.requested_at), "by": self.by, "erase": "1" if self.erase else "0",
            "state": self.state, "digest": self.digest, "cloud_id": self.cloud_id,
        }  # fmt: skip

    def public(self) -> dict[str, Any]:
        """The receipt's record: everything but the cloud_id."""
        return {
            "study": self.study,
            "participant_id": self.participant_id,
            "state": self.state,
            "erase": self.erase,
            "requested_at": utc(self.requested_at),
            "by": self.by,
            "finished_at": utc(self.finished_at) if self.finished_at else None,
            "erased": {s: self.steps[s] for s in STEPS if s in self.steps},
            "left": self.left(),
            "hosts": self.hosts,
        }
