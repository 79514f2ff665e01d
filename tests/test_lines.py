"""The hourly files' lines (`app.lines`): parsing, the quick readers, a reading's identity and the
one rule for "written once" that every writer and reader keeps."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from app import lines


def line(t: int) -> bytes:
    return orjson.dumps({"kind": "demand", "device_time": t, "demand_kw": t / 10}) + b"\n"


def test_parse_skips_a_partial_tail_and_survives_a_corrupt_line() -> None:
    parsed = lines.parse(line(1) + line(2) + b'{"kind": "dem')
    assert [r["device_time"] for r in parsed.records] == [1, 2] and parsed.partial == 1
    parsed = lines.parse(line(1) + b"garbage\n" + b"[1]\n" + line(3))
    assert [r["device_time"] for r in parsed.records] == [1, 3] and parsed.partial == 2
    assert lines.parse(b"").records == [] and lines.parse(b'{"partial').partial == 1


def test_the_quick_readers_agree_with_parsing_every_line() -> None:
    from app.eagle.parse import parse_demand
    from tests.conftest import FIXTURES

    demand = parse_demand((FIXTURES / "demand_manual.xml").read_bytes())
    written = b"".join(
        lines.encode(demand.record("00ce69", float(t), "eagle100-cloud") | {"device_time": t})
        for t in (10, 20, 30)
    )
    assert lines.points(written, "demand") == {10: 0.944, 20: 0.944, 30: 0.944}
    old = b'{"cloud_id":"00ce69","polled_at":1.0,"device_time":5,"demand_kw":1.5}\n'  # before kinds
    assert lines.points(old + written, "demand") == {5: 1.5, 10: 0.944, 20: 0.944, 30: 0.944}
    reordered = b'{"kind":"demand","device_time":7,"source":"push","demand_kw":2.0}\n'
    assert lines.points(written + reordered, "demand")[7] == 2.0
    price_null = b'{"device_time":9,"kind":"price","source":"push","price":null}\n'
    assert lines.points(price_null, "price") == {}
    assert lines.points(written + b'{"partial', "demand") == {10: 0.944, 20: 0.944, 30: 0.944}
    quick = lines.identities(old + written + b'{"partial')
    assert [lines.identity(r) for r in quick.records] == [
        lines.identity(r) for r in lines.parse(old + written).records
    ]
    assert quick.partial == 1


def test_a_reading_is_its_device_kind_and_time_or_without_a_time_its_values() -> None:
    a = {
        "cloud_id": "00ce69",
        "kind": "price",
        "device_time": 100,
        "price": 0.1,
        "polled_at": 1.0,
        "source": "push",
    }
    assert lines.identity(a) == lines.identity(
        a | {"polled_at": 2.0, "source": "eagle100-cloud", "price": 0.2}
    )
    assert lines.identity(a) != lines.identity(a | {"kind": "demand"})
    assert lines.identity({"device_time": 100}) == ("demand", 100)  # a line before kinds existed
    untimed = a | {"device_time": None}
    assert lines.identity(untimed) == lines.identity(untimed | {"polled_at": 9.0})
    assert lines.identity(untimed) != lines.identity(untimed | {"price": 0.2})


def test_what_a_writer_remembers_answers_within_the_window_or_asks_the_files() -> None:
    seen = lines.Seen(recent=2)
    hour = 500_000
    assert seen.has(("demand", 10), hour) is False  # nothing written yet
    for t in (10, 20, 30):
        seen.add(("demand", t), hour)
    assert seen.has(("demand", 30), hour) is True  # A, B, A: the repeat of a remembered reading
    assert seen.has(("demand", 40), hour) is False  # newer than everything: new
    assert seen.has(("demand", 10), hour) is None  # older and forgotten: only the files can tell
    assert seen.has(("demand", 30), hour + 1) is True  # the hour before is in the window
    assert seen.has(("demand", 30), hour + 2) is None  # past the window: the files decide


def test_a_partial_tail_is_cut_and_a_whole_file_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "f.jl"
    path.write_bytes(line(1) + line(2) + b'{"kind":"dem')
    fd = os.open(path, os.O_RDWR)
    try:
        assert lines.cut_partial_tail(fd) == len(b'{"kind":"dem')
        assert lines.cut_partial_tail(fd) == 0
    finally:
        os.close(fd)
    assert path.read_bytes() == line(1) + line(2)
    assert [r["device_time"] for r in lines.tail_records(path)] == [2, 1]


def test_no_module_reads_lines_or_names_a_reading_but_this_one() -> None:
    """`.jl` bytes are split, cut and parsed, and a reading's identity is spelled, only in
    app/lines.py (the staging record of a cart is a file of its own, not an hourly file)."""
    import re

    from tests.conftest import ROOT

    patterns = re.compile(
        r'split\(b"\\n"\)|rfind\(b"\\n"\)|parse_lines|read_lines|get\("kind", "demand"\)'
        r'|\("kind", "demand"\)'
    )
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        if path.name == "lines.py" and path.parent.name == "app":
            continue
        for n, text in enumerate(path.read_text().splitlines(), 1):
            if patterns.search(text) and "args.get(" not in text:
                found.append(f"{path.relative_to(ROOT)}:{n}: {text.strip()}")
    assert not found, "\n".join(found)
