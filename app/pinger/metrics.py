"""The pinger's Prometheus metrics (served by `rainforest pinger --metrics-port`), fed once per
cycle from its summary, so the hot path pays nothing per poll."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from app.pinger.fleet import DeviceState
    from app.pinger.stats import CycleStats

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class PingerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "rainforest_polls_total",
            "Polls by outcome: ok, a failure kind (timeout, auth, unavailable, bad_reply, "
            "device_error), or skipped (previous poll still running)",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.readings = Counter(
            "rainforest_readings_written_total",
            "Distinct demand readings appended to hourly files",
            registry=self.registry,
        )
        self.lines = Counter(
            "rainforest_lines_written_total",
            "Lines appended to hourly files by kind: demand, summation, price",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "rainforest_poll_latency_seconds", "Request round trip of one poll", registry=self.registry,
            buckets=_SECONDS,
        )  # fmt: skip
        self.lateness = Histogram(
            "rainforest_schedule_lateness_seconds", "How late each poll started against its schedule",
            registry=self.registry, buckets=(0, *_SECONDS),
        )  # fmt: skip
        self.cycle = Gauge(
            "rainforest_poll_cycle_duration_seconds",
            "Duration of the last poll cycle",
            registry=self.registry,
        )
        self.devices = Gauge(
            "rainforest_pinger_devices", "Devices this pinger polls, by status (ok, failing, never)",
            ["status"], registry=self.registry,
        )  # fmt: skip
        self.held = Gauge(
            "rainforest_readings_held",
            "Readings waiting for the disk (write backlog)",
            registry=self.registry,
        )

        self.ownership = Counter(
            "rainforest_pinger_ownership_changes_total",
            "Device leases this pinger claimed, released (handed over) or lost (taken while its "
            "own lease had run out)",
            ["change"], registry=self.registry,
        )  # fmt: skip
        self.handover = Histogram(
            "rainforest_pinger_handover_seconds",
            "From a device's release (or its last owner's lease running out) to this pinger's claim",
            registry=self.registry, buckets=(0.1, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120),
        )  # fmt: skip

    def ownership_changed(self, change: str, devices: int) -> None:
        self.ownership.labels(change).inc(devices)

    def record_cycle(self, stats: CycleStats, devices: Iterable[DeviceState], held: int) -> None:
        self.polls.labels("ok").inc(stats.ok)
        self.polls.labels("skipped").inc(stats.skipped)
        for kind, n in stats.errors.items():
            self.polls.labels(kind).inc(n)
        self.readings.inc(stats.new_readings)
        self.lines.labels("demand").inc(stats.new_readings)
        self.lines.labels("summation").inc(stats.summations)
        self.lines.labels("price").inc(stats.prices)
        self.cycle.set(stats.duration_s)
        counts = {"ok": 0, "failing": 0, "never": 0}
        for state in devices:
            if state.consecutive_failures:
                counts["failing"] += 1
            elif state.last_demand is not None or state.recovered:
                counts["ok"] += 1
            else:
                counts["never"] += 1
        for status, n in counts.items():
            self.devices.labels(status).set(n)
        self.held.set(held)

    def observe(self, latency_s: list[float], lateness_s: list[float]) -> None:
        """Feed a cycle's per-poll figures to the histograms (thousands: run it off the loop)."""
        for value in latency_s:
            self.latency.observe(value)
        for value in lateness_s:
            self.lateness.observe(value)
