"""When a device's summation and price are due, and what makes a line "the same" as the last.

Summation is captured every SUMMATION_INTERVAL_S and price every PRICE_INTERVAL_S. Each device
has its own offset within those intervals (from its stable phase), so a fleet's extra requests
are spread over the cycles instead of landing in one. A summation or price line is written
only when its time or value changed; a demand line only when its device time changed.
"""

from __future__ import annotations

from typing import Any

from app import lines
from app.pinger.fleet import DeviceState
from app.settings import Settings

EXTRA_KINDS = ("summation", "price")
VALUE_FIELDS = {
    "demand": (),
    "summation": ("delivered_kwh", "received_kwh"),
    "price": ("price", "currency", "tier", "rate_label"),
}
DEMAND_ONLY = frozenset(["demand"])
FIRST_CAPTURE_WITHIN_CYCLES = 5  # a new device's first summation and price come within 5 cycles


def line_key(record: dict[str, Any]) -> tuple[object, ...]:
    """What identifies a written line of its kind: device time, plus the values that count."""
    kind = lines.kind_of(record)
    return (record.get("device_time"), *(record.get(name) for name in VALUE_FIELDS.get(kind, ())))


def first_due(now: float, phase: float, interval_s: float, poll_interval_s: float) -> float:
    """The first capture of a kind: soon after start, spread by the device's phase."""
    return now + phase * min(interval_s, FIRST_CAPTURE_WITHIN_CYCLES * poll_interval_s)


def next_due(due: float, now: float, interval_s: float) -> float:
    """The capture after this one; a device that fell far behind does not catch up in a burst."""
    due += interval_s
    return due if due > now else now + interval_s


class Cadence:
    """What each poll of a device asks for: demand always, summation and price when due."""

    def __init__(self, settings: Settings) -> None:
        self.poll_interval_s = settings.poll_interval_s
        self.intervals = {"summation": settings.summation_interval_s, "price": settings.price_interval_s}

    def wanted(self, state: DeviceState, now: float) -> frozenset[str]:
        due = state.due
        if not due:
            for n, kind in enumerate(EXTRA_KINDS):
                phase = (state.phase + n / 2) % 1.0  # price half a turn after summation
                due[kind] = first_due(now, phase, self.intervals[kind], self.poll_interval_s)
        if now < due["summation"] and now < due["price"]:
            return DEMAND_ONLY
        return frozenset(["demand", *(k for k in EXTRA_KINDS if now >= due[k])])

    def captured(self, state: DeviceState, kinds: frozenset[str], now: float) -> None:
        """These kinds were asked for successfully: due again one interval on."""
        for kind in kinds:
            if kind != "demand":
                state.due[kind] = next_due(state.due[kind], now, self.intervals[kind])
