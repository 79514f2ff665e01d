"""Faults the simulator injects, fleet-wide or per device, set at start or at runtime.

A fault is an optional error kind plus added latency, applied to a share (`rate`) of requests.
Command-line form: `KIND[=VALUE][@TARGET]`, e.g. `timeout@10%`, `latency_ms=300`,
`http_503@00ab12,00cd34`. TARGET is `all` (default), `relay` (every device behind the relay: a
relay-wide outage), `push` (every pushing gateway), a share of the fleet, or cloud_ids. A push
device with `offline` goes quiet; with `bad_credentials` it uploads with a wrong key.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from app.errors import ValidationError
from app.sim.fleet import SimDevice

ERRORS = (
    "timeout",
    "http_503",
    "http_500",
    "malformed",
    "offline",
    "bad_credentials",
    "no_time",
    "future_time",
    "replay",
    "frozen",
    "meter_offline",
)
# faults of a reply that is well formed but carries another reading than the meter's current one:
# TimeStamp 0xffffffff (what EAGLEs send for "none"), ten days ahead (a gateway clock gone wrong),
# the reading before the current one (a gateway answering from a stale cache: A, B, A), the
# reading of the moment the fault began, again and again (a frozen gateway, LastContact and all),
# or a meter that left the gateway (an EAGLE-200 lists it "Rejoining"; an EAGLE-100 keeps
# answering its last reading while get_network_info says "Rejoining")
TIME_FAULTS = ("no_time", "future_time", "replay", "frozen", "meter_offline")


@dataclass(frozen=True, slots=True)
class Fault:
    """What goes wrong with a request: an error kind and/or latency, for a share of requests."""

    error: str | None = None
    latency_ms: int = 0
    rate: float = 1.0

    @classmethod
    def from_json(cls, data: object) -> Fault:
        if not isinstance(data, dict):
            raise ValidationError('a fault is an object such as {"error": "timeout", "rate": 0.5}.')
        unknown = set(data) - {"error", "latency_ms", "rate"}
        if unknown:
            raise ValidationError(f"unknown fault field {sorted(unknown)[0]!r}; use error, latency_ms, rate.")
        error = data.get("error")
        if error is not None and error not in ERRORS:
            raise ValidationError(f"fault error must be one of {', '.join(ERRORS)}, got {error!r}.")
        latency = data.get("latency_ms", 0)
        rate = data.get("rate", 1.0)
        if not isinstance(latency, int) or latency < 0:
            raise ValidationError("latency_ms must be a whole number of milliseconds, 0 or more.")
        if not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValidationError("rate must be a number from 0 to 1.")
        return cls(error, latency, float(rate))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """Fleet-wide and per-device faults; a device's own fault wins over the fleet's."""

    def __init__(self, seed: int = 0) -> None:
        self.fleet: Fault | None = None
        self.devices: dict[str, Fault] = {}
        self._rng = random.Random(seed)

    def for_request(self, cloud_id: str) -> Fault | None:
        """The fault that applies to this request, if any (rolls the dice on `rate`)."""
        fault = self.devices.get(cloud_id, self.fleet)
        if fault is None or (fault.rate < 1.0 and self._rng.random() >= fault.rate):
            return None
        return fault

    def replace(self, data: object) -> None:
        """Set everything from `{"fleet": {...} | null, "devices": {cid: {...}}}`."""
        if not isinstance(data, dict) or set(data) - {"fleet", "devices"}:
            raise ValidationError('faults are {"fleet": FAULT or null, "devices": {cloud_id: FAULT}}.')
        fleet = data.get("fleet")
        devices = data.get("devices") or {}
        if not isinstance(devices, dict):
            raise ValidationError("devices must map cloud_ids to faults.")
        self.fleet = None if fleet is None else Fault.from_json(fleet)
        self.devices = {str(cid).lower(): Fault.from_json(f) for cid, f in devices.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet.to_json() if self.fleet else None,
            "devices": {cid: f.to_json() for cid, f in sorted(self.devices.items())},
        }

    def apply_spec(self, spec: str, fleet: list[SimDevice]) -> None:
        """Apply one command-line spec such as `http_503@10%`."""
        what, _, target = spec.partition("@")
        kind, _, value = what.partition("=")
        if kind == "latency_ms":
            if not value.isdigit():
                raise ValidationError(f"fault {spec!r}: latency_ms needs a value, e.g. latency_ms=300.")
            fault = Fault(latency_ms=int(value))
        elif kind in ERRORS:
            try:
                fault = Fault(error=kind, rate=float(value) if value else 1.0)
            except ValueError:
                raise ValidationError(f"fault {spec!r}: the rate after '=' must be a number.") from None
        else:
            raise ValidationError(f"fault {spec!r}: kind must be latency_ms or one of {', '.join(ERRORS)}.")
        for cid in _targets(target or "all", fleet, spec):
            if cid is None:
                self.fleet = fault
            else:
                self.devices[cid] = fault


def _targets(target: str, fleet: list[SimDevice], spec: str) -> list[str | None]:
    if target == "all":
        return [None]
    if target in ("relay", "push"):  # every device of the relay (a relay-wide outage), or every pusher
        protocol = "eagle100-cloud" if target == "relay" else "push"
        return [d.cloud_id for d in fleet if d.protocol == protocol]
    if target.endswith("%"):
        try:
            share = float(target[:-1]) / 100.0
        except ValueError:
            raise ValidationError(f"fault {spec!r}: a share is written like 10%.") from None
        # Take devices from the end of the fleet, so device 0 (with the leading zeros) stays healthy.
        count = round(len(fleet) * share)
        return [d.cloud_id for d in fleet[len(fleet) - count :]]
    return [cid.strip().lower() for cid in target.split(",") if cid.strip()]
