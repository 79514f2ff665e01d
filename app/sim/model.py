"""Household demand as a pure function of (seed, device, reading number): replayable truth.

Load = base + fridge cycling + evening/morning peaks + HVAC bursts + noise, minus solar
generation for the homes that have panels (so those export, i.e. negative demand, at midday).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.eagle.readings import Y2K_EPOCH
from app.sim.fleet import SimDevice


@dataclass(frozen=True, slots=True)
class SimReading:
    """One meter reading: its number, device TimeStamp (Y2K seconds) and demand in watts."""

    number: int
    timestamp: int
    demand_w: int


def _unit(*parts: int) -> float:
    """A deterministic pseudo-random number in [0, 1) (int tuples hash the same in every run)."""
    return (hash(parts) & 0xFFFFFFFF) / 4294967296.0


def reading_at(device: SimDevice, seed: int, now: float, interval_s: float) -> SimReading:
    """The reading the meter holds at `now`: a new one every `interval_s`, at its own phase."""
    phase = device.phase_fraction * interval_s
    number = math.floor((now - phase) / interval_s)
    made_at = phase + number * interval_s
    return SimReading(number, int(made_at) - Y2K_EPOCH, demand_w(device, seed, number, made_at))


def demand_w(device: SimDevice, seed: int, number: int, at: float) -> int:
    """Net demand in watts at Unix time `at` (negative when exporting)."""
    hour = ((at / 3600.0) + device.tz_offset_h) % 24.0
    shape = 1.0 + 0.9 * math.exp(-((hour - 19.0) ** 2) / 6.0) + 0.5 * math.exp(-((hour - 7.5) ** 2) / 3.0)
    load = device.base_w * shape
    fridge_cycle = (at + device.index * 97.0) % 2700.0
    if fridge_cycle < 1000.0:
        load += 140.0
    slot = int(at // 1200)
    if _unit(seed, device.index, slot, 1) < 0.12 * shape:
        load += 1800.0 + 1200.0 * _unit(seed, device.index, slot, 2)
    load *= 0.95 + 0.1 * _unit(seed, device.index, number, 3)
    if device.solar_w and 6.0 < hour < 18.0:
        load -= device.solar_w * math.sin(math.pi * (hour - 6.0) / 12.0)
    return round(load)
