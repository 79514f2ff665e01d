"""What one poll cycle did: counted by the loop, logged as one line, fed to the metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from app.pinger.schedule import percentile


@dataclass
class CycleStats:
    """What one cycle did; logged as one line when its last poll finishes."""

    cycle_start: float
    devices: int = 0
    ok: int = 0  # polls that returned a reading
    new_readings: int = 0  # distinct demand readings appended to files
    summations: int = 0  # summation lines appended
    prices: int = 0  # price lines appended
    extra_failed: int = 0  # summation or price commands that failed (retried at the next poll)
    implausible: int = 0  # readings not written: their own time is before 2000 or a day ahead
    failed: int = 0
    skipped: int = 0  # previous poll still in flight: an overrun
    backoff: int = 0  # waiting out a backoff after failures
    held: int = 0  # not polled: readings are waiting for the disk
    outside: int = 0  # not polled: outside the household's consent window (app.studies)
    errors: Counter[str] = field(default_factory=Counter)
    protocols: Counter[str] = field(default_factory=Counter)  # polls sent, by protocol
    lateness_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)  # request round trips
    duration_s: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "cycle_start": self.cycle_start,
            "devices": self.devices,
            "ok": self.ok,
            "new_readings": self.new_readings,
            "summations": self.summations,
            "prices": self.prices,
            "extra_failed": self.extra_failed,
            "implausible": self.implausible,
            "failed": self.failed,
            "skipped": self.skipped,
            "backoff": self.backoff,
            "held": self.held,
            "outside": self.outside,
            "errors": dict(self.errors),
            "protocols": dict(self.protocols),
            "duration_s": round(self.duration_s, 3),
            "lateness_p50_s": round(percentile(self.lateness_s, 0.5), 4),
            "lateness_p99_s": round(percentile(self.lateness_s, 0.99), 4),
            "latency_p50_s": round(percentile(self.latency_s, 0.5), 4),
            "latency_p99_s": round(percentile(self.latency_s, 0.99), 4),
        }
