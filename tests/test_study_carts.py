"""Carts keep consent: a household's readings from outside its study window are in no cart, in any
format (an hour the window cuts is cut line by line), and a study's token carts only its study."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import requests

from app import keys
from app.store import Store
from app.studies import Enrolment, Study
from tests.api_helpers import make_token
from tests.test_carts import BASE, DEVICES, Stack
from tests.test_carts import stack as stack  # the carts stack, a module-scoped fixture

STUDY = Study("consent-check", "Consent check", "UTC")
WINDOW = (BASE + 1800.0, BASE + 5400.0)
EMAIL = "household-cc@example.org"  # half of the first archived hour, half of the second


def _enrol(redis_url: str) -> None:
    async def go() -> None:
        store = Store.from_url(redis_url)
        try:
            await store.studies.save(STUDY)
            await store.redis.hset(keys.device(DEVICES[2]), "user_email", EMAIL)  # as registration keeps it
            body = {"enrolled_from": WINDOW[0], "enrolled_until": WINDOW[1], "participant_id": "cc-1"}
            await store.studies.enrol(DEVICES[2], Enrolment.from_mapping(body, STUDY, DEVICES[2]))
        finally:
            await store.close()

    asyncio.run(go())


def _cart(s: Stack, body: dict[str, object], token: str | None = None) -> dict[str, bytes]:
    made = s.post(body, token=token)
    assert made.status_code == 201, made.text
    assert s.wait(made.json()["id"], token).headers["X-Cart-Status"] == "ready"
    got = requests.get(f"{s.api.url}/api/carts/{made.json()['id']}", headers=s.h(token), timeout=30)
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_no_cart_holds_a_reading_from_outside_the_window(stack: Stack) -> None:
    _enrol(stack.settings.redis_url)
    body: dict[str, object] = {"devices": [DEVICES[2]], "start": BASE - 60, "end": BASE + 4 * 3600}
    files = _cart(stack, {**body, "format": "jl"})
    times = [orjson.loads(raw)["device_time"] for name, data in files.items() if name.endswith(".jl")
             for raw in data.splitlines()]  # fmt: skip
    assert times and all(WINDOW[0] <= t < WINDOW[1] for t in times), (min(times), max(times), WINDOW)
    assert len(times) == 40 // 2 + 40 // 2, "the second half of hour one, the first half of hour two"
    sums = files["SHA256SUMS"].decode()
    assert all(f"  {name}" in sums for name in files if name.endswith(".jl")), (
        "the cut files are what is summed"
    )
    rows = list(
        csv.DictReader(io.StringIO(_cart(stack, {**body, "format": "csv"})[f"{DEVICES[2]}.csv"].decode()))
    )
    assert rows and all(WINDOW[0] <= int(r["device_time"]) < WINDOW[1] for r in rows)


def test_a_study_token_carts_only_its_households(stack: Stack) -> None:
    _enrol(stack.settings.redis_url)
    redis_url = stack.settings.redis_url
    researcher = make_token(redis_url, "consent-researcher", read_only=True)  # a read token carts too
    files = _cart(stack, {"devices": "all", "start": BASE - 60, "end": BASE + 4 * 3600}, researcher)
    assert {n for n in files if n.endswith(".jl")}, "the fleet's, for a deployment-wide token"
    scoped = asyncio.run(_scoped_token(redis_url))
    mine = _cart(stack, {"devices": "all", "start": BASE - 60, "end": BASE + 4 * 3600}, scoped)
    kept = [n for n in mine if n.endswith(".jl")]
    assert kept and all(n.startswith("cc-1/") for n in kept), "the study's household, by its pseudonym"
    other = stack.post({"devices": [DEVICES[0]], "start": BASE - 60, "end": BASE + 3600}, token=scoped)
    assert other.status_code == 400 and other.json()["error"] == "unknown_device"


async def _scoped_token(redis_url: str, name: str = "consent-analyst") -> str:
    from app.tokens import Tokens

    store = Store.from_url(redis_url)
    try:
        return await Tokens(store).create(name, read_only=True, study=STUDY.id)
    finally:
        await store.close()


def test_a_pseudonymous_cart_names_no_household_anywhere(stack: Stack, tmp_path: Path) -> None:
    import subprocess

    _enrol(stack.settings.redis_url)
    scoped = asyncio.run(_scoped_token(stack.settings.redis_url, "consent-publisher"))
    body: dict[str, object] = {"devices": "all", "start": BASE - 60, "end": BASE + 4 * 3600}
    for fmt in ("jl", "csv", "parquet"):
        files = _cart(stack, {**body, "format": fmt}, scoped)
        assert "participants.csv" in files and any("cc-1" in name for name in files), sorted(files)
        folder = tmp_path / fmt
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
        for needle in (*DEVICES, "MacId", EMAIL, "study/rainforest-logs"):
            found = subprocess.run(["grep", "-rl", needle, "."], cwd=folder, capture_output=True, text=True)
            assert found.stdout == "", f"{fmt} cart holds {needle!r} in {found.stdout}"
            names = [n for n in files if needle in n]
            assert not names, names
        people = list(csv.DictReader(io.StringIO(files["participants.csv"].decode())))
        assert [(p["participant_id"], p["study"]) for p in people] == [("cc-1", STUDY.id)]
        assert int(people[0]["demand_rows"]) == 40
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "parquet" / "cc-1" / "demand.parquet")
    assert (
        table.column_names[:3] == ["participant_id", "time", "local_time"]
        and "DeviceMacId" not in table.column_names
    )
    assert set(table.column("participant_id").to_pylist()) == {"cc-1"}
    assert table.column("local_time").to_pylist()[0].endswith("+00:00"), "the study's zone is UTC"


def test_local_time_follows_the_households_zone_across_clock_changes(tmp_path: Path) -> None:
    from app.carts.tables import build_device

    moments = {  # UTC → the local time a household in that zone lived
        ("America/Chicago", 1772956799): "2026-03-08T01:59:59-06:00",  # the last second of CST
        ("America/Chicago", 1772956800): "2026-03-08T03:00:00-05:00",  # clocks go forward
        ("America/Chicago", 1793516400): "2026-11-01T01:00:00-06:00",  # the second 1 a.m.
        ("Europe/London", 1792890000): "2026-10-25T01:00:00+00:00",  # after BST ends
        ("Europe/London", 1792889999): "2026-10-25T01:59:59+01:00",  # the last second of BST
    }
    for (zone, at), local in moments.items():
        record = {
            "cloud_id": "0e0001",
            "kind": "demand",
            "device_time": at,
            "polled_at": at + 1.0,
            "demand_kw": 1.0,
        }
        hour = at - at % 3600
        made = build_device("csv", "0e0001", [(hour, [record], 0, 0)], at - 10, at + 10, tmp_path / str(at),
                            ("participant_id", "hp-1"), zone)  # fmt: skip
        (row,) = list(csv.DictReader(io.StringIO(made.files[0].path.read_text())))
        assert row["local_time"] == local and row["participant_id"] == "hp-1", (zone, at, row)


def test_frictionless_validates_every_carts_datapackage(stack: Stack, tmp_path: Path) -> None:
    """The Data Package of a jl, a csv, a parquet and a pseudonymous cart, as `frictionless
    validate` (the Frictionless project's own command) reads it: every table's rows against its
    schema, every other file's size and SHA-256."""
    import json
    import subprocess
    import sys

    _enrol(stack.settings.redis_url)
    scoped = asyncio.run(_scoped_token(stack.settings.redis_url, "consent-packager"))
    body: dict[str, object] = {"devices": list(DEVICES), "start": BASE - 60, "end": BASE + 4 * 3600}
    carts = [({**body, "format": f}, None) for f in ("jl", "csv", "parquet")]
    carts.append(({**body, "devices": "all", "format": "csv"}, scoped))
    frictionless = str(Path(sys.executable).parent / "frictionless")
    for n, (asked, token) in enumerate(carts):
        files = _cart(stack, asked, token)
        folder = tmp_path / str(n)
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        package = json.loads(files["datapackage.json"])
        described = {r["path"] for r in package["resources"]}
        assert described == set(files) - {"datapackage.json", "MANIFEST.json", "SHA256SUMS"}, asked
        ran = subprocess.run([frictionless, "validate", "--json", "datapackage.json"], cwd=folder,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        report = json.loads(ran.stdout)
        errors = [e["message"] for t in report["tasks"] for e in t["errors"]]
        assert report["valid"] and not errors, (asked["format"], errors[:5])


def test_a_whole_studys_cart_by_local_dates_counts_its_local_days(stack: Stack) -> None:
    """`"study"` with plain dates: the study's households, from local midnight to local midnight,
    and COMPLETENESS_DAYS.csv by the household's local day."""
    chicago = Study("local-days", "Local days", "America/Chicago")

    async def enrol() -> str:
        from app.tokens import Tokens

        store = Store.from_url(stack.settings.redis_url)
        try:
            await store.studies.save(chicago)
            body = {"enrolled_from": BASE - 86400, "participant_id": "ld-1"}
            await store.studies.enrol(DEVICES[1], Enrolment.from_mapping(body, chicago, DEVICES[1]))
            return await Tokens(store).create("local-days-admin")
        finally:
            await store.close()

    token = asyncio.run(enrol())
    day = datetime.fromtimestamp(BASE, ZoneInfo("America/Chicago")).date()
    body = {
        "study": chicago.id,
        "start": day.isoformat(),
        "end": (day + timedelta(days=1)).isoformat(),
        "format": "csv",
    }
    files = _cart(stack, body, token)
    manifest = json.loads(files["MANIFEST.json"])
    local_midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo("America/Chicago"))
    assert manifest["request"]["start"] == local_midnight.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert manifest["request"]["study"] == chicago.id and manifest["request"]["devices"] == [DEVICES[1]]
    days = list(csv.DictReader(io.StringIO(files["COMPLETENESS_DAYS.csv"].decode())))
    assert {(r["cloud_id"], r["local_day"], r["timezone"]) for r in days} == {
        (DEVICES[1], day.isoformat(), "America/Chicago")
    }
    # an hour counts towards the local day its start falls on (the readings its file holds), while
    # the readings' rows are the day's by their own time: a reading that reached us just after
    # local midnight but was timed just before it is counted in the day and is not one of its rows
    hourly = csv.DictReader(io.StringIO(files["COMPLETENESS.csv"].decode()))
    chicago_zone = ZoneInfo("America/Chicago")
    in_day = sum(int(r["readings"]) for r in hourly
                 if datetime.fromisoformat(r["hour_utc"]).astimezone(chicago_zone).date() == day)  # fmt: skip
    rows = sum(1 for _ in csv.DictReader(io.StringIO(files[f"{DEVICES[1]}.csv"].decode())))
    assert sum(int(r["readings"]) for r in days) == in_day > 0 and in_day - 1 <= rows <= in_day
    unknown = stack.post({"study": "nope", "start": "2026-01-01", "end": "2026-01-02"})
    assert unknown.status_code == 400 and unknown.json()["error"] == "unknown_study"
