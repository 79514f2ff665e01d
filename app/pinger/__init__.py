"""The pinger: poll every owned, active device once per interval and keep each reading once."""

from app.pinger.loop import Pinger
from app.pinger.stats import CycleStats

__all__ = ["CycleStats", "Pinger"]
