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


def demand_line(cid: str, device_time: int, polled_at: float, source: str) -> bytes:
    record = {"cloud_id": cid, "polled_at": polled_at, "device_time": device_time, "kind": "demand"}
    return lines.encode(record | {"source": source, "demand_kw": 1.5})


def test_a_resend_after_its_hour_shipped_is_written_again_and_dropped_by_the_readers(tmp_path: Path) -> None:
    """The push writer looks for a reading in the hour's file and the one before; once rotate has
    shipped and removed that file, a late re-send is written again (the rule's window), and the
    readers that merge hours (carts, compaction) drop it and count it, by the same rule."""
    from app.hours import Hour
    from app.push.writer import PushWriter
    from app.research.merge import DeviceLines

    hour = Hour.parse("2026-11-24-03")
    writer = PushWriter(tmp_path / "logs", "p")
    t = hour.start + 10
    line = demand_line("00ce69", t, hour.start + 12.0, "push")
    assert writer.write("00ce69", [("demand", t, line)], hour.start + 12.0)[1] == 0
    assert writer.write("00ce69", [("demand", t, line)], hour.start + 30.0)[1] == 1  # a re-send: dropped
    first = writer.close()[0]
    shipped = lines.read(first).records
    first.unlink()  # rotate shipped the hour and removed the file
    writer = PushWriter(tmp_path / "logs", "p")
    resent = demand_line("00ce69", t, (hour + 1).start + 5.0, "push")  # the same reading, received later
    written, duplicates = writer.write("00ce69", [("demand", t, resent)], (hour + 1).start + 5.0)
    assert (len(written), duplicates) == (1, 0), "past the window the writer cannot know: written again"
    later = lines.read(writer.close()[0]).records
    merged = DeviceLines()
    rows = [r for counted in (merged.add_hour(hour.start, shipped), merged.add_hour((hour + 1).start, later))
            for r in counted[1].get("demand", [])] + merged.finish().get("demand", [])  # fmt: skip
    assert [r["device_time"] for r in rows] == [t] and merged.duplicates == 1


def test_two_hosts_writing_one_device_hour_give_the_readers_one_reading(tmp_path: Path) -> None:
    """Two pingers that both polled a device in one hour (a handover cut off from Redis) leave two
    files; rotate ships the second as a further part, and the readers keep the reading once."""
    from app.hourly import HourlyWriter
    from app.hours import Hour
    from app.research.merge import DeviceLines

    hour = Hour.parse("2026-11-24-03")
    files = []
    for host, late in (("a", 0.0), ("b", 0.4)):  # each host polled at its own moment
        writer = HourlyWriter(tmp_path / host, "p", 4)
        for t, at in ((100, 6.0 + late), (106, 12.0 + late)):
            writer.append(
                "00ce69", hour.start + at, demand_line("00ce69", t, hour.start + at, "eagle100-cloud")
            )
        files.append(writer.close()[0])
    merged = DeviceLines()
    count, released = merged.add_hour(hour.start, lines.read_parts(files).records)
    rows = released.get("demand", []) + merged.finish().get("demand", [])
    assert [r["device_time"] for r in rows] == [100, 106] and count.duplicates == 2
