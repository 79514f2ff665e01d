"""The hourly .jl writer: layout, whole lines, crash repair, bounded descriptors."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from app.errors import WriteError
from app.hourly import HourlyWriter
from app.hours import hour_key
from app.lines import read as read_lines

HOUR = 1795489200.0  # 2026-11-24T23:00:00Z is not needed: any exact hour start works
assert HOUR % 3600 == 0


def line(cid: str, ts: int) -> bytes:
    return orjson.dumps({"cloud_id": cid, "TimeStamp": ts}) + b"\n"


def test_layout_matches_the_design(tmp_path: Path) -> None:
    w = HourlyWriter(tmp_path / "logs", "iseif-rainforest", 8)
    path = w.append("002738", HOUR + 5, line("002738", 1))
    hour = hour_key(HOUR)
    assert path == tmp_path / "logs" / hour / f"iseif-rainforest-002738-{hour}.jl"
    w.append("002738", HOUR + 3599.9, line("002738", 2))
    nxt = w.append("002738", HOUR + 3600, line("002738", 3))
    assert nxt.parent.name == hour_key(HOUR + 3600) != hour
    assert [r["TimeStamp"] for r in read_lines(path).records] == [1, 2]


def test_partial_tail_is_cut_before_the_next_append(tmp_path: Path) -> None:
    w = HourlyWriter(tmp_path, "p", 8)
    path = w.append("000001", HOUR, line("000001", 1))
    with path.open("ab") as f:
        f.write(b'{"cloud_id": "000001", "TimeSt')  # what a power cut can leave
    assert read_lines(path).partial == 1
    fresh = HourlyWriter(tmp_path, "p", 8)  # a restarted process
    assert fresh.last_records("000001", HOUR)["demand"]["TimeStamp"] == 1
    fresh.append("000001", HOUR + 1, line("000001", 2))
    result = read_lines(path)
    assert result.partial == 0 and [r["TimeStamp"] for r in result.records] == [1, 2]
    assert fresh.partial_tails_repaired == 1


def test_last_records_look_back_one_hour(tmp_path: Path) -> None:
    w = HourlyWriter(tmp_path, "p", 8)
    w.append("000001", HOUR - 10, line("000001", 41))
    assert w.last_records("000001", HOUR + 5)["demand"]["TimeStamp"] == 41
    assert w.last_records("000002", HOUR + 5) == {}


def test_last_records_keep_the_last_line_of_each_kind(tmp_path: Path) -> None:
    w = HourlyWriter(tmp_path, "p", 8)
    kinds = [("demand", 1), ("summation", 2), ("demand", 3), ("price", 4), ("demand", 5)]
    for kind, t in kinds:
        w.append("000001", HOUR, orjson.dumps({"cloud_id": "000001", "kind": kind, "device_time": t}) + b"\n")
    found = w.last_records("000001", HOUR)
    assert {k: r["device_time"] for k, r in found.items()} == {"demand": 5, "summation": 2, "price": 4}


def test_open_descriptors_stay_bounded(tmp_path: Path) -> None:
    w = HourlyWriter(tmp_path, "p", 3)
    before = len(os.listdir("/proc/self/fd"))
    for round_ in range(3):
        for i in range(20):
            w.append(f"{i:06x}", HOUR, line(f"{i:06x}", round_))
            assert len(os.listdir("/proc/self/fd")) - before <= 3
    assert all(len(read_lines(p).records) == 3 for p in (tmp_path / hour_key(HOUR)).iterdir())


def test_closing_past_hours_releases_them(tmp_path: Path) -> None:
    w = HourlyWriter(tmp_path, "p", 8)
    old = w.append("000001", HOUR - 1, line("000001", 1))
    w.append("000001", HOUR + 1, line("000001", 2))
    closed = w.close_hours_before(HOUR + 2)
    assert closed == [old]
    HourlyWriter.sync(closed)
    assert w.close_hours_before(HOUR + 2) == []
    assert len(w.close()) == 1


def test_unwritable_hour_is_a_write_error(tmp_path: Path) -> None:
    (tmp_path / hour_key(HOUR)).write_text("a file where the hour folder should be")
    w = HourlyWriter(tmp_path, "p", 8)
    with pytest.raises(WriteError, match="cannot append"):
        w.append("000001", HOUR, line("000001", 1))


def test_a_file_rotate_removed_between_open_and_lock_is_opened_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rotate may ship and unlink a file between the writer's open(2) and its flock(2): the
    line must land in the file at the path, not in the unlinked inode no one will read."""
    import fcntl

    from app import hourly

    writer = HourlyWriter(tmp_path, "p", 16)
    real_flock = fcntl.flock
    raced: list[int] = []

    def rotate_wins_the_race(fd: int, op: int) -> None:
        if not raced:  # rotate: lock, ship, unlink, unlock, all before our lock is granted
            raced.append(fd)
            path = next(tmp_path.rglob("*.jl"))
            path.unlink()
        real_flock(fd, op)

    monkeypatch.setattr(hourly.fcntl, "flock", rotate_wins_the_race)
    path = writer.append("00aa01", HOUR, b'{"a":1}\n')
    writer.append("00aa01", HOUR + 6, b'{"a":2}\n')
    assert raced, "the race was not staged"
    assert path.read_bytes() == b'{"a":1}\n{"a":2}\n'
