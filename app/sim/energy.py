"""Each simulated meter's energy registers: demand integrated reading by reading.

Delivered Wh grows by every positive demand × the reading interval, received Wh by every
export, so summation only rises and matches the demand the simulator serves. Registers start at
an anchor (an hour before the simulator started, or 256 readings when that is fewer; history
asked before it holds the anchor's values) from a level that grows with the calendar, and
are computed forward from checkpoints every CHECKPOINT readings, so any time since the anchor
(a poll now, or a history request hours back) costs at most that many steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.sim.fleet import SimDevice
from app.sim.model import demand_w

CHECKPOINT = 128  # readings between stored register values
EPOCH_2024 = 1_704_067_200


@dataclass
class _Registers:
    checkpoints: list[tuple[float, float]] = field(default_factory=list)  # (delivered, received) Wh
    cursor: tuple[int, float, float] | None = None  # the last number asked and its registers


class EnergyMeter:
    """Delivered and received Wh of every device at any reading number since the anchor."""

    def __init__(self, seed: int, interval_s: float, anchor_s: float) -> None:
        self.seed = seed
        self.interval_s = interval_s
        self.anchor_number = int(anchor_s // interval_s)
        self._devices: dict[int, _Registers] = {}

    def registers(self, device: SimDevice, number: int) -> tuple[float, float]:
        """(delivered, received) Wh at the end of reading `number`."""
        number = max(number, self.anchor_number)
        regs = self._devices.setdefault(device.index, _Registers())
        if regs.cursor is not None and 0 <= number - regs.cursor[0] < CHECKPOINT:
            start, delivered, received = regs.cursor
        else:
            slot = (number - self.anchor_number) // CHECKPOINT
            self._extend(device, regs, slot)
            start = self.anchor_number + slot * CHECKPOINT
            delivered, received = regs.checkpoints[slot]
        delivered, received = self._step(device, start, number, delivered, received)
        regs.cursor = (number, delivered, received)
        return delivered, received

    def _extend(self, device: SimDevice, regs: _Registers, slot: int) -> None:
        if not regs.checkpoints:
            regs.checkpoints.append(self._opening(device))
        while len(regs.checkpoints) <= slot:
            j = len(regs.checkpoints) - 1
            start = self.anchor_number + j * CHECKPOINT
            regs.checkpoints.append(self._step(device, start, start + CHECKPOINT, *regs.checkpoints[j]))

    def _step(
        self, device: SimDevice, start: int, end: int, delivered: float, received: float
    ) -> tuple[float, float]:
        """Registers after readings start+1 … end (the register at `start` includes `start`)."""
        hours = self.interval_s / 3600.0
        phase = device.phase_fraction * self.interval_s
        for n in range(start + 1, end + 1):
            watts = demand_w(device, self.seed, n, phase + n * self.interval_s)
            if watts >= 0:
                delivered += watts * hours
            else:
                received -= watts * hours
        return delivered, received

    def _opening(self, device: SimDevice) -> tuple[float, float]:
        """Registers at the anchor: roughly what the home used since 2024, so a restarted
        simulator's meters carry on near where they were."""
        years_h = max(0.0, self.anchor_number * self.interval_s - EPOCH_2024) / 3600.0
        delivered = 1_000_000 + device.index * 1000 + (device.base_w * 1.5 + 250) * years_h
        received = device.solar_w * 0.2 * years_h if device.solar_w else 0.0
        return delivered, received
