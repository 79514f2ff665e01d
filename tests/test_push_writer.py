"""PushWriter on real files: one line per reading however many writers, bounded descriptors."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from app.lines import read as read_lines
from app.push.writer import PushWriter

HOUR = 1_795_500_000 // 3600 * 3600


def line(kind: str, t: int) -> tuple[str, int, bytes]:
    return kind, t, orjson.dumps({"cloud_id": "00ce69", "kind": kind, "device_time": t}) + b"\n"


def test_two_writers_on_one_file_never_write_a_reading_twice(tmp_path: Path) -> None:
    a, b = PushWriter(tmp_path, "p"), PushWriter(tmp_path, "p")  # as two server processes
    written, dups = a.write("00ce69", [line("demand", 1), line("demand", 2)], HOUR + 10)
    assert len(written) == 2 and dups == 0
    written, dups = b.write("00ce69", [line("demand", 2), line("demand", 3), line("summation", 2)], HOUR + 11)
    assert [(k, t) for k, t, _ in written] == [("demand", 3), ("summation", 2)] and dups == 1
    written, dups = a.write(
        "00ce69", [line("demand", 3), line("demand", 3)], HOUR + 12
    )  # b's, and twice in one batch
    assert written == [] and dups == 2
    (path,) = tmp_path.glob("*/*.jl")
    assert [(r["kind"], r["device_time"]) for r in read_lines(path).records] == [
        ("demand", 1), ("demand", 2), ("demand", 3), ("summation", 2),
    ]  # fmt: skip


def test_a_resend_across_the_hour_boundary_is_still_a_duplicate(tmp_path: Path) -> None:
    w = PushWriter(tmp_path, "p")
    w.write("00ce69", [line("demand", HOUR - 5)], HOUR - 1)
    fresh = PushWriter(tmp_path, "p")  # after a restart, in the next hour
    written, dups = fresh.write("00ce69", [line("demand", HOUR - 5), line("demand", HOUR + 1)], HOUR + 2)
    assert [t for _, t, _ in written] == [HOUR + 1] and dups == 1


def test_an_old_resend_after_many_newer_readings_is_found_in_the_file(tmp_path: Path) -> None:
    w = PushWriter(tmp_path, "p")
    w.write("00ce69", [line("demand", t) for t in range(1, 2001)], HOUR)
    restarted = PushWriter(tmp_path, "p")  # knows only the file's tail
    written, dups = restarted.write("00ce69", [line("demand", 3), line("demand", 2001)], HOUR + 1)
    assert [t for _, t, _ in written] == [2001] and dups == 1


def test_a_partial_last_line_is_cut_before_the_next_write(tmp_path: Path) -> None:
    w = PushWriter(tmp_path, "p")
    w.write("00ce69", [line("demand", 1)], HOUR)
    (path,) = tmp_path.glob("*/*.jl")
    with path.open("ab") as f:
        f.write(b'{"cloud_id": "00ce69", "kind": "dem')  # a crash mid-write
    PushWriter(tmp_path, "p").write("00ce69", [line("demand", 2)], HOUR + 1)
    result = read_lines(path)
    assert result.partial == 0 and [r["device_time"] for r in result.records] == [1, 2]


def test_descriptors_stay_bounded_and_a_removed_file_is_recreated(tmp_path: Path) -> None:
    w = PushWriter(tmp_path, "p", max_open=4)
    before = len(os.listdir("/proc/self/fd"))
    for round_ in range(3):
        for i in range(30):
            w.write(f"{i:06x}", [line("demand", round_)], HOUR)
            assert len(os.listdir("/proc/self/fd")) - before <= 4
    (path,) = tmp_path.glob(f"*/*-{29:06x}-*.jl")
    path.unlink()  # rotate shipped it
    written, _ = w.write(f"{29:06x}", [line("demand", 9)], HOUR)
    assert written and path.exists() and len(read_lines(path).records) == 1
    assert len(w.close()) <= 4


def test_a_write_into_an_hour_whose_folder_rotate_removed_makes_it_again(tmp_path: Path) -> None:
    w = PushWriter(tmp_path, "p")
    w.write("00ce69", [line("demand", HOUR - 7200)], HOUR - 7200)  # folder made, file kept open
    (path,) = tmp_path.glob("*/*.jl")
    w.close()
    path.unlink()
    path.parent.rmdir()  # rotate shipped the hour: its file and folder are gone
    written, _ = w.write("00ce6a", [line("demand", HOUR - 7100)], HOUR - 7100)  # a late history entry
    assert len(written) == 1 and [p.name for p in tmp_path.glob("*/*.jl")] == [
        "p-00ce6a-" + path.parent.name + ".jl"
    ]
