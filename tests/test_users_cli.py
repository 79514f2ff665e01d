"""`rainforest users import|list` as an operator runs them, against a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def rainforest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an operator would, outside the repository so no .env is read."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=env.get("DATA_DIR", "/"),
        env={**os.environ, "GATEWAY_ALLOW_NETWORKS": "127.0.0.0/8", **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_import_reports_bad_lines_goes_on_and_is_idempotent(
    tmp_path: Path, redis_url: str, secret_key: str
) -> None:
    users = tmp_path / "users.jl"
    users.write_text(
        '{"cloud_id": "002738", "user_email": "a@example.com", "user_pw": "pw-one"}\n'
        "not json\n"
        '{"cloud_id": "27", "user_email": "b@example.com", "user_pw": "pw-two"}\n'
        "\n"
        '{"cloud_id": "00ce69", "user_email": "c@example.com", "user_pw": "pw-three", "active": false}\n'
    )
    env = {"REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path)}
    first = rainforest("users", "import", str(users), env=env)
    assert first.returncode == 1
    assert "created 2, updated 0, unchanged 0, failed 2" in first.stdout
    assert f"{users}:2: not valid JSON" in first.stderr
    assert f"{users}:3: cloud_id must be 6 hex digits" in first.stderr
    second = rainforest("users", "import", str(users), env=env)
    assert "created 0, updated 0, unchanged 2, failed 2" in second.stdout

    listing = rainforest("users", "list", env=env)
    assert listing.returncode == 0
    assert "002738" in listing.stdout and "00ce69" in listing.stdout and "2 devices" in listing.stdout
    assert "pw-one" not in listing.stdout + listing.stderr
    active = rainforest("users", "list", "--active", "--json", env=env)
    assert active.stdout.count("\n") == 1 and '"status":"never"' in active.stdout


def test_missing_secret_key_is_one_clear_line(tmp_path: Path, redis_url: str) -> None:
    users = tmp_path / "users.jl"
    users.write_text('{"cloud_id": "002738", "user_email": "a@example.com", "user_pw": "x"}\n')
    result = rainforest(
        "users",
        "import",
        str(users),
        env={"REDIS_URL": redis_url, "SECRET_KEY": "", "DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "SECRET_KEY is not set" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_redis_is_one_clear_line(tmp_path: Path, secret_key: str) -> None:
    result = rainforest(
        "users", "list",
        env={"REDIS_URL": "redis://127.0.0.1:1/0", "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "Redis is unreachable" in result.stderr or "Redis failed" in result.stderr
    assert "Traceback" not in result.stderr
