"""Hours and days (`app.hours`): their spellings, across boundaries, leap days and far dates; and
no hour or day converted by hand anywhere else."""

from __future__ import annotations

import calendar
import re

import pytest

from app.errors import ValidationError
from app.hours import Day, Hour, hour_key, hours_between


def test_an_hour_is_spelled_one_way_and_read_back() -> None:
    h = Hour.at(calendar.timegm((2026, 11, 24, 3, 59, 59)))
    assert (h.key, h.iso, str(h.day)) == ("2026-11-24-03", "2026-11-24T03:00:00Z", "2026-11-24")
    assert Hour.parse("2026-11-24-03") == h and h.end == (h + 1).start and (h + 1) - 1 == h
    assert hour_key(h.end - 0.001) == "2026-11-24-03" and hour_key(h.end) == "2026-11-24-04"


@pytest.mark.parametrize(
    ("key", "day", "next_key"),
    [
        ("2024-02-28-23", "2024-02-28", "2024-02-29-00"),  # a leap day
        ("2025-02-28-23", "2025-02-28", "2025-03-01-00"),  # no leap day
        ("2026-12-31-23", "2026-12-31", "2027-01-01-00"),  # a new year
        ("1999-12-31-23", "1999-12-31", "2000-01-01-00"),  # the EAGLE epoch
        ("2099-12-31-23", "2099-12-31", "2100-01-01-00"),  # far ahead (2100 is no leap year)
        ("2100-02-28-23", "2100-02-28", "2100-03-01-00"),
    ],
)
def test_hours_and_days_across_boundaries(key: str, day: str, next_key: str) -> None:
    h = Hour.parse(key)
    assert h.key == key and h.day.key == day and (h + 1).key == next_key
    assert Day.parse(day).hours()[-1] == h and len(Day.parse(day).hours()) == 24
    assert Day.parse(day).path == day.replace("-", "/") and (Day.parse(day) + 1).start == (h + 1).start


def test_a_range_covers_every_hour_it_touches() -> None:
    start = Hour.parse("2026-11-24-03").start
    assert [h.key for h in hours_between(start + 10, start + 7200)] == ["2026-11-24-03", "2026-11-24-04"]
    assert [h.key for h in hours_between(start, start + 7201)][-1] == "2026-11-24-05"
    assert hours_between(start, start) == []


@pytest.mark.parametrize("bad", ["2026-11-24", "2026-11-24-24", "2026-02-30-01", "yesterday", "2026-11-24-3"])
def test_a_bad_hour_gets_one_sentence(bad: str) -> None:
    with pytest.raises(ValidationError, match="YYYY-MM-DD-HH"):
        Hour.parse(bad)


def test_no_module_converts_hours_or_days_by_hand() -> None:
    """Hour numbers, starts, keys and days are converted only in app/hours.py (the simulator
    makes up its own times and is left out)."""
    from tests.conftest import ROOT

    by_hand = re.compile(r'// 3600|// 86400|strptime|timegm|"%Y-%m-%d"|"%Y-%m-%d-%H"|\[:10\]|hour \* 3600')
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        if path.name == "hours.py" or "sim" in path.relative_to(ROOT).parts:
            continue
        for n, text in enumerate(path.read_text().splitlines(), 1):
            if by_hand.search(text.split("#", 1)[0]):
                found.append(f"{path.relative_to(ROOT)}:{n}: {text.strip()}")
    assert not found, "\n".join(found)


def test_a_local_day_follows_its_zone_across_daylight_saving() -> None:
    from zoneinfo import ZoneInfo

    from app.hours import local_day, spoken

    chicago = ZoneInfo("America/Chicago")
    spring = 1772949600  # 2026-03-08 06:00 UTC: midnight in Chicago (CST, UTC-6), the day clocks go forward
    assert local_day(spring - 1, chicago) == "2026-03-07" and local_day(spring, chicago) == "2026-03-08"
    assert local_day(spring + 86400 - 3600 - 1, chicago) == "2026-03-08", "that day has 23 hours"
    assert local_day(spring + 86400 - 3600, chicago) == "2026-03-09"
    london = ZoneInfo("Europe/London")  # clocks go back at 01:00 UTC on 2026-10-25
    assert local_day(1792889999, london) == "2026-10-25" and local_day(1792886399, london) == "2026-10-25"
    assert local_day(1792882799, london) == "2026-10-24", "23:59:59 BST, 22:59:59 UTC"
    assert (spoken(59), spoken(3 * 3600 + 300), spoken(2 * 86400 + 4 * 3600)) == (
        "0 min",
        "3 h 5 min",
        "2 d 4 h",
    )
