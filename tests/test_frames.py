"""The columnar reader (`app.research.frames`) against reading line by line (`DeviceLines` and
`Columns`, what compaction did before): the same rows in the same order, the same release points,
repeats, cut lines and late rows, on a corpus of every line kind and on seeded random ones; and
every kind of line it does not take is named in a sentence, not misread."""

from __future__ import annotations

import random
from typing import Any, TypeVar

import numpy as np
import orjson
import pyarrow as pa
import pytest

from app.eagle.readings import (
    Y2K_EPOCH,
    DemandReading,
    MeterDemand,
    MeterPrice,
    MeterSummation,
    PriceReading,
    SummationReading,
)
from app.research import frames
from app.research.schema import KINDS

V = TypeVar("V")
H0 = 1_790_000_000 // 3600 * 3600  # an hour's start
MAC, METER = 0xD8D5B9000000ABCD, 0xF0AD4E0000012345  # both above 2**63, as real ones are


def line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record) + b"\n"


def demand(t: int, polled: float, kw_w: int = 500, source: str = "eagle100-cloud") -> bytes:
    reading = DemandReading(MAC, METER, t - Y2K_EPOCH, kw_w, 1, 1000, 3, 6, "Y")
    return line(reading.record("0c0001", polled, source))


def summation(t: int, polled: float) -> bytes:
    return line(SummationReading(MAC, METER, t - Y2K_EPOCH, 12_345_678, 0, 1, 1000).record("0c0001", polled))


def price(t: int, polled: float) -> bytes:
    return line(PriceReading(MAC, METER, t - Y2K_EPOCH, 0.1275, 840, 2, "Peak").record("0c0001", polled))


def eagle200(t: int, polled: float) -> bytes:
    return b"".join(
        line(r.record("0c0001", polled))
        for r in (
            MeterDemand(t, -1.25, METER),
            MeterSummation(t, 5012.5, None, METER),
            MeterPrice(t, 0.09, "EUR", None, "", METER),
        )
    )


def corpus() -> list[tuple[int, bytes]]:
    """Four hours read (one missing between), with what the field sends and what crashes leave."""
    h1, h2, h4, h5 = H0, H0 + 3600, H0 + 3 * 3600, H0 + 4 * 3600
    first = b"".join(demand(h1 + 6 * i, h1 + 6 * i + 2.5) for i in range(20))
    first += summation(h1 + 60, h1 + 61.25) + price(h1 + 60, h1 + 61.5)
    first += eagle200(h1 + 90, h1 + 91)  # its demand repeats one read before it
    first += demand(h1 + 3601, h2 + 1.5)  # timed in the next hour, filed here (a clock ahead)
    part2 = demand(h1 + 12, h1 + 900.0)  # a repeat in the hour's second part (a restarted pinger)
    part2 += demand(h1 + 30, h1 + 30.5, 600)  # same time, other value: the first one read is kept
    part2 += b'{"cloud_id":"0c0001","polled_at":%d,"device_time":%d,"demand_kw":0.7}\n' % (h1 + 40, h1 + 40)
    part2 += b'{"cloud_id":"0c0001","device_time":%d,"kind":"weather","temp":3}\n' % (h1 + 50)  # unknown
    part2 += b'{"cloud_id":"0c0001","polled_at":17900'  # cut by a crash
    second = b"".join(demand(h2 + 6 * i, h2 + 6 * i + 0.5) for i in range(10))
    second += demand(h1 + 6, h2 + 5.0)  # a repeat of the hour before: dropped
    second += demand(h1 - 7200, h2 + 7.0, source="history")  # refilled history: late
    second += demand(h2 + 100, h2 + 101.0) + demand(h2 + 100, h2 + 101.0)  # twice in one hour
    second += demand(h2 + 200, h2 + 300.0) + demand(h2 + 200, h2 + 250.0)  # polled twice: the first is kept
    fourth = demand(h1 + 6, h4 + 1.0)  # three hours later: not a repeat (the window is an hour)
    fourth += demand(h2 + 100, h4 + 2.0)  # the hour read before was h2: still a repeat
    fourth += demand(h4 + 3595, h4 + 3599.0) + demand(h4 + 3590, h4 + 3599.5)
    fourth += demand(h4 + 3610, h4 + 3599.9)  # a device clock ahead: released by the next hour
    fifth = demand(h2 + 100, h5 + 1.0)  # kept: the one in the hour before was a dropped repeat
    fifth += b"".join(demand(h5 + 6 * i, h5 + 6 * i + 1.0) for i in range(5)) + b'{"kind":"dem'
    return [(h1, first), (h1, part2), (h2, second), (h4, fourth), (h5, fifth), (h5 + 3600, b"")]


def assert_same(got: frames.Merged, want: frames.Merged) -> None:
    for kind in KINDS:
        assert got.tables[kind].equals(want.tables[kind]), (
            kind,
            got.tables[kind].to_pylist()[:5],
            want.tables[kind].to_pylist()[:5],
        )
        assert np.array_equal(got.steps[kind], want.steps[kind]), kind
        assert np.array_equal(got.times[kind], want.times[kind]), kind
    assert (got.hours, got.duplicates, got.partial, got.lines, got.late, got.gaps) == (
        want.hours, want.duplicates, want.partial, want.lines, want.late, want.gaps,
    )  # fmt: skip


def test_the_columnar_reader_equals_reading_line_by_line() -> None:
    objects = corpus()
    want = frames.by_lines(objects)
    got = frames.merge(frames.parse(objects))
    assert_same(got, want)
    # the corpus holds what it says it does, so the comparison is not of two empty results
    assert want.duplicates == {H0: 3, H0 + 3600: 3, H0 + 3 * 3600: 1}
    assert want.partial == {H0: 1, H0 + 4 * 3600: 1} and want.late >= 2
    assert {k: t.num_rows for k, t in want.tables.items()} == {"demand": 45, "summation": 2, "price": 2}
    assert want.lines[H0]["weather"] == 1 and len(set(want.steps["demand"].tolist())) == 4
    assert want.gaps == {H0: 3487.0, H0 + 3600: 100.0, H0 + 3 * 3600: 10590.0, H0 + 4 * 3600: 6.0}
    units = got.units("demand")
    assert sum(u.num_rows for u in units) == 45 and len(units) == 4


@pytest.mark.parametrize("seed", range(150))
def test_random_hours_read_alike(seed: int) -> None:
    objects = random_objects(seed)
    assert_same(frames.merge(frames.parse(objects)), frames.by_lines(objects))


def random_objects(seed: int) -> list[tuple[int, bytes]]:
    """Hours (some missing) of parts with repeats near and far, times on and off the hour,
    fractional times and polls, no poll time, lines without a kind or of an unknown one, cut lines."""
    rng = random.Random(seed)
    objects, times = [], []
    for h in sorted(rng.sample(range(8), rng.randint(1, 6))):
        start = H0 + h * 3600
        for _ in range(rng.randint(1, 3)):
            data = b""
            for _ in range(rng.randint(0, 15)):
                if times and rng.random() < 0.3:
                    t = rng.choice(times)
                else:
                    t = start + rng.choice([-3700, -5, 0, 3, 100, 3599, 3605, 7300]) + rng.choice([0, 0, 0.5])
                    times.append(t)
                polled = rng.choice([start + rng.randint(0, 3599) + 0.25, None, start + 10])
                record: dict[str, Any] = {"cloud_id": "0c0001", "polled_at": polled, "device_time": t}
                kind = rng.choice(["demand", "summation", "price", None, "weather"])
                if kind is not None:
                    record["kind"] = kind
                record["source"] = rng.choice(["eagle200-local", "history", "push"])
                record["demand_kw" if kind in (None, "demand") else "price"] = rng.choice([1.5, -2, None])
                data += line(record)
            if rng.random() < 0.2:
                data += b'{"cloud_id": "0c0001", "device_ti'
            objects.append((start, data))
    return objects


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\n" + demand(H0, H0), "a blank line"),
        (demand(H0, H0) + b"\n" + demand(H0 + 6, H0 + 6), "a blank line"),
        (b'{"device_time":%d,"demand_kw":NaN}\n' % H0, "NaN or Infinity"),
        (b'{"device_time":%d,"rate_label":"\xc3\xa9t\xc3\xa9"}\n' % H0, "not plain ASCII"),
        (b'{"device_time":%d,"kind":null}\n' % H0, "kind is null"),
        (b'{"polled_at":%d,"kind":"price","price":0.1}\n' % H0, "without a device time"),
        (b'{"device_time":null}\n', "without a device time"),
        (b"[1, 2]\n", "Arrow's reader refused"),
        (b"not json\n", "Arrow's reader refused"),
        (b'{"device_time":%d} {"device_time":%d}\n' % (H0, H0 + 1), "more or less than one JSON object"),
        (b'{"device_time":%d,"SuppressLeadingZero":1}\n' % H0, "Arrow's reader refused"),
        (b'{"device_time":%d,"Demand":1.5}\n' % H0, "Arrow's reader refused"),
        (b'{"device_time":true}\n', "Arrow's reader refused"),
    ],
)
def test_lines_it_does_not_take_are_named_and_read_line_by_line(data: bytes, why: str) -> None:
    with pytest.raises(frames.Unusual, match=why):
        frames.parse([(H0, demand(H0 - 6, H0 - 5) + data)])
    with pytest.raises(frames.Unusual, match=why):  # the same as an object of its own, begun by it
        frames.parse([(H0 - 3600, demand(H0 - 6, H0 - 5)), (H0, data)])
    frames.by_lines([(H0, data)])  # the line-by-line reader reads them (or counts them unreadable)


def test_a_kind_spelled_with_a_space_still_fills_its_columns() -> None:
    """Arrow's reader is asked only for the columns of the kinds the bytes name as this version
    writes them; a kind written otherwise is found in the table and the lines read again whole."""
    spaced = b'{"cloud_id":"0c0001","device_time":%d,"kind": "summation","delivered_kwh":7.5}\n' % (H0 + 9)
    objects = [(H0, demand(H0, H0 + 1) + spaced + demand(H0 + 6, H0 + 7))]
    got = frames.merge(frames.parse(objects))
    assert_same(got, frames.by_lines(objects))
    assert got.tables["summation"].column("delivered_kwh").to_pylist() == [7.5]


def test_a_field_typed_two_ways_across_kinds_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """One column per line field: schema.py must give a field one type in every kind."""
    from app.research.schema import SCHEMAS

    clash = dict(SCHEMAS)
    clash["price"] = SCHEMAS["price"].set(
        SCHEMAS["price"].get_field_index("TimeStamp"), pa.field("TimeStamp", pa.string())
    )
    monkeypatch.setattr(frames, "SCHEMAS", clash)
    with pytest.raises(TypeError, match="TimeStamp has two types across line kinds"):
        frames._line_fields()


@pytest.mark.parametrize("seed", range(20))
def test_lines_read_a_few_objects_at_a_time_read_alike(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long range is parsed in blocks of objects (memory holds one block of lines, not the
    range): cut between any two objects, the rows, order and counts are those of one reading."""
    monkeypatch.setattr(frames, "_BLOCK", 1 + seed * 97)
    for objects in (corpus(), random_objects(seed)):
        assert_same(frames.merge(frames.parse(iter(objects))), frames.by_lines(objects))
    with pytest.raises(frames.Unusual, match="more or less than one JSON object"):
        frames.parse([(H0, demand(H0, H0)), (H0, b'{"device_time":%d} {"device_time":1}\n' % H0)])


def in_pieces(objects: list[tuple[int, bytes]], cuts: set[int]) -> frames.Merged:
    """The objects merged a piece at a time (a new piece at each hour in `cuts`), carrying from
    one piece to the next, and the pieces' releases put end to end."""
    pieces: list[list[tuple[int, bytes]]] = []
    for hour, data in objects:
        if not pieces or (hour in cuts and pieces[-1][-1][0] != hour):
            pieces.append([])
        pieces[-1].append((hour, data))
    whole = frames.Merged({}, {}, [])
    tables: dict[str, list[Any]] = {k: [] for k in KINDS}
    times: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    carry = None
    for n, piece in enumerate(pieces):
        got = frames.merge(frames.parse(piece), carry, final=n == len(pieces) - 1)
        carry = got.carry
        assert (carry is None) == (n == len(pieces) - 1)
        for kind in KINDS:
            tables[kind].append(got.tables[kind])
            times[kind].append(got.times[kind])
        whole.hours += got.hours
        whole.late += got.late
        _join(whole.duplicates, got.duplicates)
        _join(whole.partial, got.partial)
        _join(whole.lines, got.lines)
        _join(whole.gaps, got.gaps)
    whole.tables = {k: pa.concat_tables(tables[k]) for k in KINDS}
    whole.times = {k: np.concatenate(times[k]) for k in KINDS}
    return whole


def _join(mine: dict[int, V], theirs: dict[int, V]) -> None:
    assert not set(mine) & set(theirs), "an hour counted in two pieces"
    mine.update(theirs)


@pytest.mark.parametrize("seed", range(120))
def test_a_range_merged_in_pieces_reads_as_one(seed: int) -> None:
    """Cut anywhere between hours, the pieces release the rows one reading of the range releases,
    in the same order, with the same repeats, late rows, cut lines and waits."""
    rng = random.Random(seed)
    objects = corpus() if seed % 10 == 0 else random_objects(seed)
    hours = sorted({h for h, _ in objects})
    cuts = set(rng.sample(hours, rng.randint(0, len(hours))))
    got, want = in_pieces(objects, cuts), frames.by_lines(objects)
    for kind in KINDS:
        assert got.tables[kind].equals(want.tables[kind]), (kind, cuts)
        assert np.array_equal(got.times[kind], want.times[kind]), kind
    assert (got.hours, got.duplicates, got.partial, got.lines, got.late, got.gaps) == (
        want.hours, want.duplicates, want.partial, want.lines, want.late, want.gaps,
    ), cuts  # fmt: skip
