"""How many polls a failing device sits out before it is polled again.

A gateway that fails now and then (a busy relay, a flaky Wi-Fi link) must not lose more polls to
the backoff than to its failures: within a streak of failures, the polls skipped never
outnumber the polls that failed. The skips grow 1, 2, 4, … while that budget allows, then settle
at one skip per failure (a dead gateway is asked every other cycle), and never wait past
`max_s`. The first failure is retried at the next cycle, and any answer ends the streak: the
device is polled on its schedule at once.

Refused credentials are different: real relay accounts lock after repeated bad logins, so an
auth failure waits `auth_s` (with jitter, so a fleet whose password changed does not retry in
step).
"""

from __future__ import annotations

import random

from app.errors import DeviceAuthError, DeviceError


class Backoff:
    """Skips by the streak's failure budget; refused credentials wait much longer."""

    def __init__(
        self, interval_s: float, max_s: float, auth_s: float, rng: random.Random | None = None
    ) -> None:
        self.interval_s = interval_s
        self.max_skips = max(1, int(max(max_s, interval_s) // interval_s))
        self.auth_s = auth_s
        self._rng = rng or random.Random()

    def skips(self, failures: int, skipped: int) -> int:
        """Polls to sit out after the `failures`-th consecutive failure, `skipped` polls having
        been sat out already in this streak: doubling, but never past the streak's failures."""
        if failures <= 1:
            return 0
        budget = failures - skipped
        return max(0, min(1 << min(failures - 2, 30), budget, self.max_skips))

    def delay_s(self, failures: int, skipped: int, exc: DeviceError) -> float:
        """Seconds from this failure to the earliest next poll (0: the next cycle)."""
        if isinstance(exc, DeviceAuthError):
            return self.auth_s * (0.9 + 0.2 * self._rng.random())
        # the failure came within this cycle's slot: a delay of `n` intervals lets the next n
        # slots go by and polls at the one after
        return self.skips(failures, skipped) * self.interval_s
