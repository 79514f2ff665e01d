"""COMPLETENESS.csv and README.txt, in every cart whatever its format.

COMPLETENESS.csv has a row per requested device and UTC hour in the range of which something is
known: polls scheduled and ok (as the pingers counted them, kept COMPLETENESS_DAYS; empty when
no longer known), and from the cart's own files the distinct demand readings, the longest wait
for one (the whole hour when it had none), and the repeats dropped. An hour of which nothing is
known (no polls counted, no line in the cart: before a device was registered, or long ago) has
no row, so a long range over a small fleet stays small.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from app.carts.pseudonyms import Naming
from app.completeness import longest_gap_s
from app.hours import Hour, local_day
from app.research.merge import HourCount
from app.research.schema import SCHEMAS, UNITS, cart_schema

COMPLETENESS_HEADER = (
    "cloud_id", "hour_utc", "polls_scheduled", "polls_ok", "readings", "longest_gap_s", "duplicates_dropped",
)  # fmt: skip


def write_completeness(
    dest: Path,
    devices: Iterable[str],
    hours: list[int],
    counted: dict[str, list[HourCount]],
    polls: dict[tuple[str, int], tuple[int, int]],
    naming: Naming | None = None,
) -> None:
    """A row per device and hour (Unix s of its start) in `hours` of which anything is known,
    devices in order."""
    now = time.time()
    with dest.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        named = naming or Naming()
        out.writerow((named.id_column, *COMPLETENESS_HEADER[1:]))
        for cid in devices:
            by_hour = {c.hour: c for c in counted.get(cid, [])}
            for hour in hours:
                polled = polls.get((cid, Hour.at(hour).number))
                c = by_hour.get(hour)
                if polled is None and (c is None or not (c.readings or c.duplicates)):
                    continue  # nothing known of this hour
                c = c or HourCount(hour)
                scheduled, ok = polled if polled is not None else ("", "")
                gap = longest_gap_s(c.readings, round(c.longest_gap_s, 3), hour, now)
                out.writerow((named.of(cid), Hour.at(hour).iso, scheduled, ok,
                              c.readings, gap, c.duplicates))  # fmt: skip


DAYS_HEADER = ("local_day", "timezone", "polls_scheduled", "polls_ok", "readings", "duplicates_dropped")


def write_completeness_days(
    dest: Path,
    devices: Iterable[str],
    hours: list[int],
    counted: dict[str, list[HourCount]],
    polls: dict[tuple[str, int], tuple[int, int]],
    naming: Naming,
) -> None:
    """COMPLETENESS_DAYS.csv: the hourly counts summed by the household's local day (an hour
    belongs to the local day its start falls on), devices in order."""
    with dest.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow((naming.id_column, *DAYS_HEADER))
        for cid in devices:
            enrolment = naming.enrolments.get(cid)
            tz = enrolment.timezone if enrolment is not None else "UTC"
            zone = ZoneInfo(tz)
            by_hour = {c.hour: c for c in counted.get(cid, [])}
            days: dict[str, list[int]] = {}
            for hour in hours:
                polled = polls.get((cid, Hour.at(hour).number))
                c = by_hour.get(hour)
                if polled is None and (c is None or not (c.readings or c.duplicates)):
                    continue
                day = days.setdefault(local_day(hour, zone), [0, 0, 0, 0, 0])
                if polled is not None:
                    day[0], day[1], day[4] = day[0] + polled[0], day[1] + polled[1], 1
                if c is not None:
                    day[2], day[3] = day[2] + c.readings, day[3] + c.duplicates
            for key, (scheduled, ok, readings, duplicates, known) in days.items():
                out.writerow((naming.of(cid), key, tz, scheduled if known else "", ok if known else "",
                              readings, duplicates))  # fmt: skip


_FILES = {
    "jl": """\
<cloud_id>/YYYY/MM/DD/<prefix>-<cloud_id>-YYYY-MM-DD-HH.jl
    The hourly files exactly as the pingers wrote them: one JSON object per line, UTF-8, every
    part of an hour (a second file for the same hour, `.part2.jl`, comes from a pinger restart
    on another host or a late write; read them all, and drop a line whose cloud_id, kind and
    device_time an earlier line had). A line without `kind` is a demand line. A last line cut
    by a crash may be there; skip a line that does not parse.""",
    "csv": """\
<cloud_id>.csv
    One device's demand readings, a header row, then one row per distinct reading in time
    order, parts merged and repeats dropped. Columns: time_utc (ISO 8601, UTC, the reading's
    own time), demand_kw, cloud_id, device_time (Unix seconds), polled_at (Unix seconds, when
    it reached us), the gateway's raw TimeStamp, Demand, Multiplier, Divisor (EAGLE-100s
    only: empty for other gateways), and local_time (the reading's time in the household's own
    time zone, ISO 8601 with its offset: UTC for a household in no study). Summation and price
    are in the jl and parquet formats.""",
    "parquet": """\
<cloud_id>/demand.parquet, <cloud_id>/summation.parquet, <cloud_id>/price.parquet
    One file per device and line kind (a kind the device never sent has no file), written by
    pyarrow: zstd, row groups of 131,072 rows, one row per distinct reading in time order,
    parts merged and repeats dropped. Load one with pandas.read_parquet, polars.read_parquet,
    pyarrow.parquet.read_table or DuckDB (SELECT * FROM '*/demand.parquet').""",
}


def _columns(pseudonymous: bool = False) -> str:
    out = []
    for kind in SCHEMAS:
        schema = cart_schema(kind, pseudonymous)
        out.append(f"  {kind}:")
        for f in schema:
            note = UNITS.get(f.name, "")
            if f.name == "time":
                note = "the reading's own time (the gateway's clock), UTC, milliseconds"
            elif f.name == "local_time":
                note = "the reading's time in the household's zone, ISO 8601 with its offset"
            elif f.name == "participant_id":
                note = "the household's pseudonym in its study"
            elif f.name == "polled_at":
                note = "when it reached us, UTC, milliseconds"
            elif f.name == "source":
                note = "how: eagle100-cloud, eagle100-local, eagle200-local, push, history"
            elif f.name[0].isupper():
                note = "the gateway's raw field, decoded from hex (null when it did not send it)"
            out.append(f"    {f.name:<20} {f.type!s:<24} {note}")
    return "\n".join(out)


PSEUDONYMOUS = """
Pseudonymous
Households are named by their study participant_id (one in no study by "anon-" and a keyed digest
of its device id: the same name in every cart of this deployment, not reversible without the
deployment's key). No file, file name or manifest entry holds a device id, an e-mail address or
a device or meter MAC address; read "participant_id" wherever this text says cloud_id.
participants.csv
    One row per household: participant_id, study, timezone, state (enrolled, completed,
    withdrawn), enrolled_from_utc and enrolled_until_utc (its consent window: nothing from
    outside it is in this cart), and its rows of each kind and hours with data in this cart
"""


def readme_text(
    fmt: str, cart_id: str, start: float, end: float, devices: int, pseudonymous: bool = False
) -> str:
    """What every file and column of a cart is, the units, the time base, gaps, verification."""
    span = f"{_iso(start)} to {_iso(end)} (UTC; the end excluded)"
    columns = f"\nColumns of the Parquet files\n{_columns(pseudonymous)}\n" if fmt == "parquet" else ""
    return f"""\
Rainforest Logger cart {cart_id}
{devices} device(s), readings from {span}, format {fmt}.

Files
MANIFEST.json
    The request, every file with its size and SHA-256, where each came from, and counts per
    device (devices.<cloud_id>): rows of each kind, hours with data, duplicates_dropped
    (repeats of a reading in another part or the next hour), late_rows (rows that reached us
    more than an hour after their own time, placed where they arrived), partial_lines.
SHA256SUMS
    Verify the cart with: sha256sum -c SHA256SUMS   (every line must say OK)
COMPLETENESS.csv
    One row per device and UTC hour in the range of which anything is known (polls counted, or
    lines in this cart; an hour with no row had neither): polls_scheduled and polls_ok (what the
    pingers counted; empty once older than the server keeps them, and for devices that push),
    readings (distinct demand readings in that hour's files), longest_gap_s (the longest wait
    for a demand reading that ended in that hour, from the previous reading in this cart; the
    whole hour, or as much of it as had passed, when the hour had no reading), and
    duplicates_dropped.
COMPLETENESS_DAYS.csv
    The same counts summed by the household's local day (local_day, in its timezone: UTC for a
    household in no study); an hour counts toward the local day its start falls on.
datapackage.json
    This cart as a Frictionless Data Package: each table's fields, types, units and missing
    values, each other file's size and SHA-256 (check it with: frictionless validate
    datapackage.json).
README.txt
    This file.
{_FILES[fmt]}
{columns}
Time base and units
    Times are UTC. A reading's own time comes from the gateway's clock (EAGLE-100: seconds since
    2000-01-01, converted; EAGLE-200: the meter's LastContact); polled_at is our clock. Demand is
    in kW (negative: power sent to the grid), summations in kWh, prices per kWh in the ISO 4217
    currency given.

Gaps
    A gap is a gap: no row is made up for a time without a reading, and no value is ever zero
    because it is missing. A device polled every 6 s has about 600 demand readings an hour when
    its gateway makes a new reading each poll (EAGLE-100s every 8 s or so: about 450). Compare
    readings with polls_ok in COMPLETENESS.csv to tell a silent gateway from a missed poll.
""" + (PSEUDONYMOUS if pseudonymous else "")


def _iso(unix_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))
