"""The pinger: poll every owned, active device once per interval and keep each reading once."""

from app.pinger.loop import CycleStats, Pinger

__all__ = ["CycleStats", "Pinger"]
