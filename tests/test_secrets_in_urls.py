"""Secrets that ride in URLs never reach a log, and hostile paths get a plain 4xx: a real
`rainforest server` and real Redis, tried as a newcomer would."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import requests

from tests.api_helpers import ApiServer, make_token
from tests.test_push import JSON_DEMAND, KEY, register_push
from tests.test_push import server as server  # a rainforest server, started for each test


def test_a_push_key_or_token_in_the_url_is_never_logged(
    server: ApiServer, redis_url: str, secret_key: str
) -> None:
    register_push(redis_url, secret_key, "00ce81")
    admin = make_token(redis_url, "admin")
    body = JSON_DEMAND % (int(time.time() * 1000), "1.5")
    # the key's name percent-encoded is still the key (Tornado decodes names): it must be redacted
    sneaky = requests.post(f"{server.url}/api/push/00ce81?%6Bey={KEY}", data=body, timeout=5)
    assert sneaky.status_code == 200
    wrong = requests.post(f"{server.url}/api/push/00ce81?key={KEY}x", data=body, timeout=5)
    assert wrong.status_code == 401
    in_url = requests.get(f"{server.url}/api/users/?token={admin}", timeout=5)
    assert in_url.status_code == 400 and "Authorization" in in_url.json()["message"]
    encoded = requests.get(f"{server.url}/api/users/?%74oken={admin}", timeout=5)
    assert encoded.status_code == 400
    logs = server.logs()
    assert KEY not in logs and admin not in logs
    assert "key=***" in logs  # the access lines are there, redacted


def test_a_nul_in_a_static_path_is_a_404_not_a_traceback(server: ApiServer) -> None:
    got = requests.get(f"{server.url}/static/app.css%00.js", timeout=5)
    assert got.status_code == 404
    assert "Traceback" not in got.text and "Traceback" not in server.logs()


def test_redaction_of_tornados_uncaught_exception_line() -> None:
    """Tornado's own 'Uncaught exception' line carries the whole URI: the log filter redacts it
    by the decoded parameter name, whatever logger wrote it."""
    import io
    import logging

    from app.logs import ReadableFormatter, RedactFilter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactFilter())
    handler.setFormatter(ReadableFormatter())
    logger = logging.getLogger("tornado.application.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ValueError("HTTPServerRequest(uri='/api/push/00ce81?k%65y=s3cret-one')")
    except ValueError:
        logger.error("Uncaught exception POST /api/push/00ce81?%6Bey=s3cret-two (127.0.0.1)", exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "s3cret" not in text and "Uncaught exception" in text and "ValueError" in text


def test_a_body_past_a_megabyte_gets_the_json_413(
    server: ApiServer, redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    """Tornado's own limit answered a bare 400; every API route answers its JSON 413 instead,
    before reading the body (curl, like most clients, waits for the go-ahead of a large body:
    Expect: 100-continue), whether the body declares its length or comes in chunks."""
    register_push(redis_url, secret_key, "00ce82")
    token = make_token(redis_url, "admin")
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * (2 * 1024 * 1024))
    for path, extra in (
        ("/api/push/00ce82", []),
        (
            "/api/users/00ce83",
            ["-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json"],
        ),
        ("/api/carts/", ["-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json"]),
    ):
        for chunked in ([], ["-H", "Transfer-Encoding: chunked"]):
            got = subprocess.run(
                ["curl", "-sS", "-w", "\n%{http_code}", "--data-binary", f"@{big}", *extra, *chunked,
                 f"{server.url}{path}"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            body, _, status = got.stdout.rpartition("\n")
            assert status == "413", (path, chunked, got.stdout[-300:], got.stderr)
            answer = json.loads(body)
            assert answer["error"] == "too_large" and answer["message"].endswith("."), path
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
