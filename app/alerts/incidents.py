"""Fleet-wide incidents: many devices of one path in trouble together are one incident about the
path (the relay down, our network, a pinger's host), not an alert per household. Pure functions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.devices import CLOUD, PUSH, DeviceRecord

CAUSES = {
    "relay": "the Rainforest relay (or our connection to it) is failing",
    "push": "uploads are not reaching us: check the server and what is in front of it",
    "pinger": "one pinger's host or its network is failing",
    "pingers": "no pinger is polling: check that the pingers run",
}


@dataclass(frozen=True, slots=True)
class Trouble:
    """A device in trouble now: past its threshold (`past`) or not yet."""

    cloud_id: str
    path: str
    cause: str
    since: float
    past: bool


@dataclass(frozen=True)
class Rules:
    share: float = 0.2
    min_devices: int = 10
    window_s: float = 300.0

    def enough(self, n: int, size: int) -> bool:
        return n >= self.min_devices and n >= self.share * size


def path_of(record: DeviceRecord, owners: Mapping[str, str], unpolled: bool = False) -> str:
    """The way a device's readings reach us: the relay, the push endpoint, or a pinger (an
    unpolled device's path is the pingers, whatever its protocol)."""
    if unpolled:
        return "pingers"
    if record.protocol == PUSH:
        return "push"
    if record.protocol == CLOUD:
        return "relay"
    owner = owners.get(record.cloud_id)
    return f"pinger {owner}" if owner else "pingers"


def what_failed(path: str) -> str:
    return CAUSES[path.split(" ", 1)[0]]


def sizes(paths: Iterable[str]) -> Counter[str]:
    return Counter(paths)


def clusters(troubles: Iterable[Trouble], size: Mapping[str, int], rules: Rules) -> dict[str, list[Trouble]]:
    """Per path, the devices whose trouble began together (within the window of one another),
    when they are enough of the path to be one incident and one of them is past its threshold."""
    by_path: dict[str, list[Trouble]] = {}
    for t in troubles:
        by_path.setdefault(t.path, []).append(t)
    found = {}
    for path, items in by_path.items():
        if not rules.enough(len(items), size.get(path, 0)):
            continue
        items.sort(key=lambda t: t.since)
        best, start = (0, 0), 0
        for end in range(len(items)):  # the densest window of `window_s`
            while items[end].since - items[start].since > rules.window_s:
                start += 1
            if end + 1 - start > best[1] - best[0]:
                best = (start, end + 1)
        group = items[best[0] : best[1]]
        if rules.enough(len(group), size.get(path, 0)) and any(t.past for t in group):
            found[path] = group
    return found


def cause_of(group: Iterable[Trouble]) -> str:
    """The most common cause among an incident's devices."""
    return Counter(t.cause for t in group).most_common(1)[0][0]
