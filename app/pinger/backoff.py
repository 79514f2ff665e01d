"""How long a failing device waits before its next poll."""

from __future__ import annotations

import random

from app.errors import DeviceAuthError, DeviceError


class Backoff:
    """Capped exponential backoff with jitter; refused credentials wait much longer.

    Real relay accounts lock after repeated bad logins, so an auth failure is not retried
    for `auth_backoff_s`. Other failures retry at the next cycle, then back off doubling up to
    `max_s`, with jitter so a fleet that failed together does not retry together.
    """

    def __init__(
        self, interval_s: float, max_s: float, auth_s: float, rng: random.Random | None = None
    ) -> None:
        self.interval_s = interval_s
        self.max_s = max(max_s, interval_s)
        self.auth_s = auth_s
        self._rng = rng or random.Random()

    def delay_s(self, failures: int, exc: DeviceError) -> float:
        """Seconds to wait after the `failures`-th consecutive failure."""
        if isinstance(exc, DeviceAuthError):
            return self.auth_s * (0.9 + 0.2 * self._rng.random())
        if failures <= 1:
            return 0.0
        ceiling = min(self.max_s, self.interval_s * 2 ** (failures - 1))
        return float(ceiling / 2 + self._rng.random() * ceiling / 2)
