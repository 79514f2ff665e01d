"""Rotate's Prometheus metrics, in a registry of its own (served by `rotate --metrics-port`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RotateMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.files = Counter(
            "rainforest_rotate_files_total",
            "Local hourly files handled, by outcome (stored, already_archived, busy, failed)",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.bytes = Counter(
            "rainforest_rotate_bytes_total", "Bytes archived: source (.jl) and stored (.jl.gz)",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.failures = Counter(
            "rainforest_archive_failures_total",
            "Passes stopped by archive trouble, by kind "
            "(unreachable, timeout, credentials, no_bucket, integrity, error)",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.pass_seconds = Histogram(
            "rainforest_rotate_pass_duration_seconds", "Duration of rotate passes",
            registry=self.registry, buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )  # fmt: skip
        self.last_pass = Gauge(
            "rainforest_rotate_last_pass_timestamp_seconds", "When the last rotate pass ended",
            registry=self.registry,
        )  # fmt: skip
        self.last_success = Gauge(
            "rainforest_rotate_last_success_timestamp_seconds",
            "When the last pass ended with nothing left behind",
            registry=self.registry,
        )  # fmt: skip
        self.pending = Gauge(
            "rainforest_rotate_pending_files", "Closed local files still to ship after the last pass",
            registry=self.registry,
        )  # fmt: skip
