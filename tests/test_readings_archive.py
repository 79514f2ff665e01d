"""The readings route when the archive lets it down: a damaged hourly object is named in one
sentence (500 `archive_damaged`), an archive that cannot be reached is a 503 to try again, and
either is one log line without a traceback. A real file:// archive shipped by rotate, an S3
endpoint with nothing listening, the API server as a process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import requests

from app.archive.factory import open_archive
from app.hours import Hour
from app.rotate.runner import Rotator
from app.settings import Settings
from tests.api_helpers import make_token, start_api
from tests.conftest import free_port
from tests.test_rotate import PAST, register, write_hour


def readings(url: str, token: str, cid: str) -> requests.Response:
    hour = Hour.at(PAST)
    query = {"start": hour.start, "end": hour.start + 3600, "resolution": 0}
    return requests.get(
        f"{url}/api/users/{cid}/readings",
        params=query,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def test_a_damaged_object_is_named_and_an_unreachable_archive_is_a_503(
    redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    archive, cid = tmp_path / "archive", "0c0001"
    settings = Settings(
        redis_url=redis_url, data_dir=tmp_path / "data", archive_url=f"file://{archive}", rotate_grace_s=0.0
    )
    register(settings, cid)
    token = make_token(redis_url, "reader")
    write_hour(settings, cid, at=PAST)
    assert asyncio.run(Rotator(settings, open_archive(settings), None).pass_once()).stored == 1
    (obj,) = archive.rglob("*.jl.gz")
    key = obj.relative_to(archive).as_posix()

    obj.write_bytes(b"these bytes were never gzip")
    api = start_api(redis_url, secret_key, ARCHIVE_URL=f"file://{archive}")
    try:
        answer = readings(api.url, token, cid)
        assert answer.status_code == 500
        assert answer.json()["error"] == "archive_damaged"
        said = f"an archived object cannot be read: {key} is not a readable gzip object: "
        assert answer.json()["message"].startswith(said)  # then the inflater's own words
    finally:
        api.stop()
    logged = (api.log_dir / "stderr.log").read_text()
    assert "request failed: the archive" in logged and key in logged and "Traceback" not in logged

    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    api = start_api(
        redis_url, secret_key, ARCHIVE_URL="s3://rainforest/study", S3_ENDPOINT_URL=nowhere,
        AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
    )  # fmt: skip
    try:
        answer = readings(api.url, token, cid)
        assert answer.status_code == 503
        assert answer.json()["error"] == "archive_unavailable"
        assert answer.json()["message"].startswith("the archive cannot be read now; try again shortly: ")
        assert "test" not in answer.json()["message"]  # no credential in the answer
    finally:
        api.stop()
    assert "Traceback" not in (api.log_dir / "stderr.log").read_text()
