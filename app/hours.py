"""Hours and days: one type each, and every conversion between their spellings in one place.

An `Hour` is a UTC hour, held as its number (Unix seconds // 3600). It is spelled `YYYY-MM-DD-HH`
(`key`) in the hourly files' names and folders, in archive keys and in completeness rows; its
`start` and `end` are Unix seconds. A `Day` is a UTC day (Unix seconds // 86400), spelled
`YYYY-MM-DD`, as the archive's folders and the compacted days are. Everything else (rotate,
completeness, compaction, carts, charts, the pages) converts through these, never by hand.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar, Self
from zoneinfo import ZoneInfo

from app.errors import ValidationError

HOUR_S = 3600
DAY_S = 86400
DAY_FORMAT = "%Y-%m-%d"
HOUR_PATTERN = r"\d{4}-\d{2}-\d{2}-\d{2}"  # an hour's key inside a file name or a key
HOUR_RE = re.compile(rf"^{HOUR_PATTERN}$")


def hour_numbers_ms(unix_ms: Any) -> Any:
    """The hour (`Hour.number`) of each of many instants at once: a numpy array of Unix ms."""
    return unix_ms // (HOUR_S * 1000)


def hour_starts(unix_s: Any) -> Any:
    """`Hour.at(t).start` of each of many instants at once: a numpy array of Unix seconds (floor
    division as Python's, so a float a hair below the hour is in the hour before)."""
    return (unix_s // HOUR_S).astype("int64") * HOUR_S


@dataclass(frozen=True, order=True, slots=True)
class _Span:
    """A UTC hour or day, held as its number since the epoch."""

    number: int
    SECONDS: ClassVar[int]
    FORMAT: ClassVar[str]
    WHAT: ClassVar[str]
    SPELLED: ClassVar[str]

    def __init_subclass__(cls, seconds: int = 0, spelled: str = "", what: str = "") -> None:
        if seconds:  # the slots dataclass makes the class again, without keywords: keep these
            cls.SECONDS, cls.SPELLED, cls.WHAT = seconds, spelled, what
            cls.FORMAT = (
                spelled.replace("YYYY", "%Y").replace("MM", "%m").replace("DD", "%d").replace("HH", "%H")
            )

    @classmethod
    def at(cls, unix_s: float) -> Self:
        """The span an instant falls in."""
        return cls(int(unix_s // cls.SECONDS))

    @classmethod
    def parse(cls, key: str) -> Self:
        """Its key back to the span; a ValidationError naming the format otherwise."""
        return cls(_parse(key, cls.FORMAT, cls.WHAT, cls.SPELLED) // cls.SECONDS)

    @property
    def start(self) -> int:
        return self.number * self.SECONDS

    @property
    def end(self) -> int:
        return self.start + self.SECONDS

    @property
    def key(self) -> str:
        return _formatted(self.FORMAT, self.start)

    def __add__(self, n: int) -> Self:
        return type(self)(self.number + n)

    def __sub__(self, n: int) -> Self:
        return type(self)(self.number - n)

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, order=True, slots=True)
class Hour(_Span, seconds=HOUR_S, spelled="YYYY-MM-DD-HH", what="an hour"):
    """`2026-11-24-03`."""

    @property
    def iso(self) -> str:
        """`2026-11-24T03:00:00Z`: the hour's start as ISO 8601, for people and spreadsheets."""
        return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(self.start))

    @property
    def day(self) -> Day:
        return Day.at(self.start)


@dataclass(frozen=True, order=True, slots=True)
class Day(_Span, seconds=DAY_S, spelled="YYYY-MM-DD", what="a day"):
    """`2026-11-24`."""

    @property
    def path(self) -> str:
        """`2026/11/24`: the day's folders in the archive."""
        return self.key.replace("-", "/")

    def hours(self) -> list[Hour]:
        return [Hour(self.number * 24 + h) for h in range(24)]


def local_day(unix_s: float, zone: ZoneInfo) -> str:
    """The day, spelled YYYY-MM-DD, that a moment falls on in a time zone (a study's, a digest's)."""
    return datetime.fromtimestamp(unix_s, zone).strftime(DAY_FORMAT)


def spoken(seconds: float) -> str:
    """A span of time as people say it: 42 min, 3 h 5 min, 2 d 4 h."""
    s = int(max(0.0, seconds))
    if s < HOUR_S:
        return f"{s // 60} min"
    if s < DAY_S:
        return f"{s // HOUR_S} h {s % HOUR_S // 60} min"
    return f"{s // DAY_S} d {s % DAY_S // HOUR_S} h"


def hour_key(unix_s: float) -> str:
    """`2026-11-24-03` for any instant in that UTC hour."""
    return Hour.at(unix_s).key


def hours_between(start: float, end: float) -> list[Hour]:
    """Every hour overlapping [start, end)."""
    if end <= start:
        return []
    return [Hour(n) for n in range(Hour.at(start).number, Hour.at(end - 1e-6).number + 1)]


def _parse(key: str, fmt: str, what: str, spelled: str) -> int:
    if not re.fullmatch(re.sub("[YMDH]", r"\\d", spelled), key, re.ASCII):
        raise ValidationError(f"{what} is written {spelled} (UTC), got {key!r}.")
    try:
        return calendar.timegm(time.strptime(key, fmt))
    except ValueError:
        raise ValidationError(f"{key!r} is not a real {what.split()[-1]} ({spelled}, UTC).") from None


@lru_cache(maxsize=4096)
def _formatted(fmt: str, start: int) -> str:
    """A span's key, formatted once: every upload and every line names its hour."""
    return time.strftime(fmt, time.gmtime(start))
