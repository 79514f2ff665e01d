"""Chart points of closed days come from the compacted Parquet when it holds exactly the device-day,
and equal the points of the hourly objects: repeats across parts, a late reading filed in the next
hour (and one in the next day), a refilled history line filed by its own time, a reading sent
without a time, a cut last line. A late part not yet compacted again sends that device-day back
to its hourly objects."""

from __future__ import annotations

import asyncio

import orjson

from app.archive.factory import open_archive
from app.hourly import reading_path
from app.hours import Hour
from app.research.compact import Compactor
from app.rotate.runner import Rotator
from app.series import SeriesSource
from app.settings import Settings
from tests.test_compact import DAY, DAY_START, DEVICES, summation
from tests.test_rotate import write_hour

KINDS = ("demand", "summation")


def append(
    settings: Settings, cid: str, hour_at: float, *records: dict[str, object], cut: bytes = b""
) -> None:
    path = reading_path(settings.logs_dir, settings.file_prefix, cid, Hour.at(hour_at).key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        for r in records:
            f.write(orjson.dumps(r) + b"\n")
        f.write(cut)


def ship(settings: Settings) -> None:
    asyncio.run(Rotator(settings.replace(rotate_grace_s=0.0), open_archive(settings), None).pass_once())


def fill(settings: Settings) -> None:
    """Three households' day, with the cases a chart must get right, shipped by rotate."""
    for cid in DEVICES:
        for h in range(24):
            write_hour(settings, cid, at=DAY_START + h * 3600 + 5, lines=300)
            append(
                settings,
                cid,
                DAY_START + h * 3600,
                orjson.loads(summation(cid, DAY_START + h * 3600 + 1800.5, 1000.0 + h)),
            )
    cid, late = DEVICES[0], DAY_START + 7 * 3600
    write_hour(settings, cid, at=DAY_START - 3600 + 5, lines=300)  # the day before's last hour
    yesterday = {"cloud_id": cid, "polled_at": DAY_START + 5.5, "device_time": DAY_START - 1,
                 "kind": "demand", "demand_kw": 3.5}  # fmt: skip
    append(settings, cid, DAY_START, yesterday)  # in this day's file, timed in the day before
    timed_before = {"cloud_id": cid, "polled_at": late + 3605.5, "device_time": late + 3599, "kind": "demand",
                    "demand_kw": 9.5}  # fmt: skip
    no_time = {
        "cloud_id": cid,
        "polled_at": late + 3606.5,
        "device_time": None,
        "kind": "demand",
        "demand_kw": 7.25,
    }
    append(settings, cid, late + 3600, timed_before, no_time)  # reached us in the next hour
    history = {"cloud_id": cid, "polled_at": late + 14400.5, "device_time": late + 100, "kind": "summation",
               "source": "history", "delivered_kwh": 999.5}  # fmt: skip
    append(
        settings, cid, late, history, cut=b'{"cloud_id": "0d0001", "polled_at": 1'
    )  # filed by its own time
    ship(settings)


def every_point(source: SeriesSource) -> dict[tuple[str, str, int], list[tuple[int, float]]]:
    """The whole day and more, and hour 7 alone (what hours a range reads depends on where each
    line was filed), of each household and kind."""
    ranges = ((DAY_START - 3600, DAY_START + 86400 + 7200), (DAY_START + 7 * 3600, DAY_START + 8 * 3600))
    return {(cid, kind, start): source.points(cid, kind, start, end)
            for cid in DEVICES for kind in KINDS for start, end in ranges}  # fmt: skip


def hourly_source(settings: Settings) -> SeriesSource:
    source = SeriesSource(settings, open_archive(settings))
    source.compacted = None  # the hourly objects only
    return source


def test_chart_points_of_compacted_days_equal_the_hourly_objects(archive_settings: Settings) -> None:
    settings = archive_settings
    fill(settings)
    truth = every_point(hourly_source(settings))
    whole, seventh = DAY_START - 3600, DAY_START + 7 * 3600
    assert (
        len(truth[DEVICES[0], "demand", whole]) == 25 * 300 + 2
        and len(truth[DEVICES[0], "summation", whole]) == 25
    )
    assert (DAY_START + 7 * 3600 + 100, 999.5) in truth[DEVICES[0], "summation", seventh]
    assert Compactor(settings, open_archive(settings)).compact(DAY).version == 1

    source = SeriesSource(settings, open_archive(settings))
    assert every_point(source) == truth
    assert source.compacted is not None and source.compacted.days_read == len(DEVICES) * len(KINDS)

    # A late part (50 repeats, 20 new) of one household's hour, shipped but not compacted yet: that
    # device-day is read from its hourly objects again, the others still from Parquet.
    write_hour(settings, DEVICES[1], at=DAY_START + 5 * 3600 + 5, lines=70, start=250)
    ship(settings)
    truth = every_point(hourly_source(settings))
    assert len(truth[DEVICES[1], "demand", DAY_START - 3600]) == 24 * 300 + 20
    fresh = SeriesSource(settings, open_archive(settings))
    assert every_point(fresh) == truth
    assert fresh.compacted is not None and fresh.compacted.days_read == (len(DEVICES) - 1) * len(KINDS)
