"""The simulated tariff: time-of-use tiers by the household's local hour."""

from __future__ import annotations

from dataclasses import dataclass

from app.sim.fleet import SimDevice


@dataclass(frozen=True, slots=True)
class Tariff:
    tier: int
    label: str
    price: float  # USD per kWh
    start: int  # Unix seconds the tier began


def tariff_at(device: SimDevice, at: float) -> Tariff:
    """Peak 16:00-21:00 local, off-peak otherwise; each home pays a little differently."""
    local_h = ((at / 3600.0) + device.tz_offset_h) % 24.0
    peak = 16.0 <= local_h < 21.0
    base = 0.1142 + (device.index % 7) * 0.01
    start_h = 16.0 if peak else (21.0 if local_h >= 21.0 else -3.0)
    start = int(at - (local_h - start_h) * 3600)
    if peak:
        return Tariff(2, "Peak", round(base * 2.1, 4), start)
    return Tariff(1, "Off-peak", round(base, 4), start)
