"""Which households were erased, as every process checks it: a rotate about to ship a file, a
pinger host sweeping its folder, a compaction listing a day, a cart planning its parts.

A mark names a household by a digest of its cloud_id keyed from SECRET_KEY (so the list of
erasures does not itself name anyone) and holds the cutoff: the moment of the erasure. Readings
of that gateway from before the cutoff must never be kept, shipped or served again; a gateway
registered again later is a new participant, and its readings from then on are its own.

SECRET_KEY may list several keys (rotation): a mark is written under the first and recognised
under any, so keep a retired key in the list for as long as a host that was down may return.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

DIGEST_HEX = 24


def _keys(secret_key: str) -> list[bytes]:
    return [
        hashlib.sha256(b"rainforest-logger erasure\0" + k.strip().encode()).digest()
        for k in secret_key.split(",")
        if k.strip()
    ]


def digests(secret_key: str, cloud_id: str) -> list[str]:
    """The household's digest under every key of SECRET_KEY, the current key's first."""
    return [
        "e-" + hmac.new(k, cloud_id.encode(), hashlib.sha256).hexdigest()[:DIGEST_HEX]
        for k in _keys(secret_key)
    ]


@dataclass(frozen=True)
class Mark:
    cutoff: float  # nothing of the household from before this moment is kept
    tombstone: str  # "<study>/<participant_id>"


class Marks:
    """The erased households, looked up by cloud_id."""

    def __init__(self, secret_key: str, marks: dict[str, Mark]) -> None:
        self.secret_key, self.marks = secret_key, marks
        self._seen: dict[str, Mark | None] = {}

    def __bool__(self) -> bool:
        return bool(self.marks)

    def of(self, cloud_id: str) -> Mark | None:
        if not self.marks:
            return None
        if cloud_id not in self._seen:
            found = [self.marks[d] for d in digests(self.secret_key, cloud_id) if d in self.marks]
            self._seen[cloud_id] = max(found, key=lambda m: m.cutoff) if found else None
        return self._seen[cloud_id]

    def erased(self, cloud_id: str, at: float) -> bool:
        """Whether a reading (or an hour starting) at `at` belongs to an erased household."""
        mark = self.of(cloud_id)
        return mark is not None and at < mark.cutoff


NONE = Marks("", {})
