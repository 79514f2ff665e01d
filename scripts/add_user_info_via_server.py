#!/usr/bin/env python3
"""Add or update devices through the HTTP API from a users file (one JSON object per line).

    scripts/add_user_info_via_server.py USERS.jl --server http://host:8000 --token TOKEN

Each line needs cloud_id and either user_email and user_pw (eagle100-cloud, the default) or
protocol, address and install_code (a gateway on the household's network; docs/devices.md),
optionally tls_verify, tls_fingerprint, active. Lines are POSTed to /api/users/{cloud_id}. A line
with a study (and enrolled_from, optionally participant_id, enrolled_until, timezone) also enrols
the household in that study (POST /api/studies/{study}/participants/{cloud_id}; docs/studies.md).
Failures are reported by line number with the server's message and the rest go on. It ends with
counts of created / updated / unchanged / failed and exits 1 if any line failed. Running it
again is harmless: unchanged devices stay as they are.
The token may also come from the RAINFOREST_TOKEN environment variable (kept out of `ps`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import requests

TIMEOUT_S = 30
ENROLMENT_KEYS = frozenset({"study", "participant_id", "enrolled_from", "enrolled_until", "timezone"})


def _message(resp: requests.Response) -> str:
    try:
        return str(resp.json()["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code} {resp.reason}"


class TokenRefused(Exception):
    """401/403: every line would fail the same way, so stop at once."""


def post_line(session: requests.Session, server: str, raw: str) -> tuple[str, str]:
    """(outcome, message) for one line: outcome is created/updated/unchanged/failed."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return "failed", "not valid JSON (each line must be one JSON object)."
    if not isinstance(data, dict) or not isinstance(data.get("cloud_id"), str):
        return "failed", 'each line needs a "cloud_id" string (6 hex digits).'
    cloud_id = data["cloud_id"].strip()
    if not (len(cloud_id) == 6 and all(c in "0123456789abcdefABCDEF" for c in cloud_id)):
        return "failed", f"cloud_id must be 6 hex digits such as 002738, got {cloud_id!r}."
    enrolment = {k: data.pop(k) for k in list(data) if k in ENROLMENT_KEYS}
    try:
        resp = session.post(f"{server}/api/users/{cloud_id}", json=data, timeout=TIMEOUT_S)
        if resp.status_code in (200, 201) and enrolment:
            study = enrolment.pop("study", "")
            if not study:
                return "failed", "saved, but not enrolled: enrolment fields need a study."
            url = f"{server}/api/studies/{study}/participants/{cloud_id}"
            enrolled = session.post(url, json=enrolment, timeout=TIMEOUT_S)
            if enrolled.status_code != 201:
                return "failed", f"saved, but not enrolled: {_message(enrolled)}"
    except requests.RequestException as exc:
        return "failed", f"could not reach the server: {exc}"
    if resp.status_code in (200, 201):
        return resp.json().get("outcome", "updated"), ""
    try:
        message = resp.json()["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {resp.status_code} {resp.reason}"
    if resp.status_code in (401, 403):
        raise TokenRefused(message)
    return "failed", message


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("users", type=Path, help="the users file (.jl)")
    parser.add_argument(
        "--server", required=True, help="base URL of `rainforest server`, e.g. http://127.0.0.1:8000"
    )
    parser.add_argument("--token", default=os.environ.get("RAINFOREST_TOKEN"), help="an admin API token")
    args = parser.parse_args()
    if not args.token:
        parser.error(
            "give an admin token with --token or RAINFOREST_TOKEN (make one: rainforest tokens create NAME)."
        )
    if not args.users.is_file():
        parser.error(f"{args.users} is not a file.")
    server = args.server.rstrip("/")
    lines = args.users.read_text(encoding="utf-8").splitlines()
    counts: Counter[str] = Counter()
    show_progress = sys.stderr.isatty()
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {args.token}"
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                try:
                    outcome, message = post_line(session, server, raw)
                except TokenRefused as exc:
                    print(f"stopped at line {number}: the server refused the token: {exc}", file=sys.stderr)
                    return 1
                counts[outcome] += 1
                if outcome == "failed":
                    print(f"{args.users}:{number}: {message}", file=sys.stderr)
            if show_progress:
                print(f"\r{number}/{len(lines)} lines", end="", file=sys.stderr, flush=True)
    if show_progress:
        print(file=sys.stderr)
    print(f"created {counts['created']}, updated {counts['updated']}, unchanged {counts['unchanged']}, "
          f"failed {counts['failed']}")  # fmt: skip
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
