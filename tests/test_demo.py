"""`make demo`'s script, run for real on free ports: up, readings, the examples of README.md and
docs/ run as written against it, Ctrl-C, a clean stop, nothing left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from tests.conftest import ROOT, free_port


@pytest.mark.timeout(600)  # the whole stack, every doc example, and alerts that must last 20-30 s first
def test_demo_brings_the_stack_up_shows_readings_and_stops_cleanly(tmp_path: Path, secret_key: str) -> None:
    redis_port, sim_port, server_port, mail_port = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path), "SECRET_KEY": secret_key, "POLL_INTERVAL_S": "1",
           "LOCAL_REQUEST_GAP_S": "0.2", "ALERT_EVAL_S": "2", "FROZEN_AFTER_S": "10", "SILENT_AFTER_S": "10",
           "METER_OFFLINE_AFTER_S": "10", "AUTH_AFTER_S": "10", "BAD_REPLY_AFTER_S": "10",
           "PUSH_STALE_S": "10"}  # fmt: skip
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--devices", "14",
         "--redis-port", str(redis_port), "--sim-port", str(sim_port), "--server-port", str(server_port),
         "--mail-port", str(mail_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            out.append(line)
            if line.startswith("Ctrl-C stops everything cleanly"):
                ready.set()
        ready.set()  # the demo ended: let the test see why

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(300)
        assert demo.poll() is None, (
            f"the demo stopped early:\n{''.join(out)}\n{demo.stderr.read() if demo.stderr else ''}"
        )
        token = re.search(r"^    T=(rft_\S+)$", "".join(out), re.M)
        assert token, "".join(out)
        run_doc_examples(server_port, token.group(1), tmp_path, tmp_path.parent / f"{tmp_path.name}-examples")
        every_cause_alerts(server_port, token.group(1), tmp_path / "mail" / "new")
        researcher = re.search(r"^    R=(rft_\S+)$", "".join(out), re.M)
        assert researcher, "".join(out)
        a_researchers_cart(server_port, researcher.group(1), "".join(out))
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        demo.wait(120)
        reader.join(10)
    assert demo.stdout is not None and demo.stderr is not None
    with demo.stdout, demo.stderr:
        stderr = demo.stderr.read()
    result = subprocess.CompletedProcess(demo.args, demo.returncode, "".join(out), stderr)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "created 14, updated 0, unchanged 0, failed 0" in result.stdout
    assert "push key for" not in result.stdout  # the simulator's push devices come with their keys
    assert "Rainforest Logger is running in simulated mode" in result.stdout
    assert result.stdout.rstrip().endswith("stopped.")
    files = list(tmp_path.glob("logs/????-??-??-??/iseif-rainforest-*.jl"))
    assert files
    records = [orjson.loads(line) for path in files for line in path.read_bytes().splitlines()]
    assert all({"cloud_id", "polled_at", "device_time", "kind", "source"} <= r.keys() for r in records)
    kinds = {(r["kind"], r["source"]) for r in records}
    for protocol in ("eagle100-cloud", "eagle200-local", "eagle100-local", "push"):
        assert ("demand", protocol) in kinds, f"no reading from an {protocol} gateway"
        assert f"demand via {protocol}" in result.stdout
    assert "summation" in {kind for kind, _ in kinds} and "summation " in result.stdout
    supervisord_log = (tmp_path / "logs" / "supervisord" / "supervisord.log").read_text()
    assert "curl -s -H 'Authorization: Bearer rft_" in result.stdout
    assert f"http://127.0.0.1:{server_port}/fleet" in result.stdout
    shipped = list(tmp_path.glob("archive/rainforest-logs/*/????/??/??/iseif-rainforest-*.jl.gz"))
    assert shipped, "rotate shipped the backfilled closed hours"
    assert "shipped so far:" in result.stdout
    assert "sha256sum -c SHA256SUMS" in result.stdout, "the demo cart was built"
    assert list(tmp_path.glob("carts/*/cart.tar"))
    for program in ("pinger", "server", "sim", "redis", "rotate", "cartd"):
        assert f"stopped: {program} (exit status 0)" in supervisord_log
    marks = (f"--port {sim_port}", f"--port {redis_port}", f"--port {server_port}")
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(m in " ".join(p.info["cmdline"] or []) for m in marks)
    ]
    assert leftovers == [], "a process outlived the demo"


def blocks(page: str, language: str) -> list[str]:
    """The fenced code blocks of one language in a page of the repository, in order."""
    text = (ROOT / page).read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


def bash(script: str, cwd: Path, port: int, token: str) -> str:
    """A shell example as a reader would paste it: the demo's port for 8000, the token for `rft_…`."""
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("rft_…", token)
    ran = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env={**os.environ, "T": token},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert ran.returncode == 0, f"{script}\nstdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    return ran.stdout


def run_doc_examples(port: int, token: str, data_dir: Path, work: Path) -> None:
    """Every runnable example of README.md, docs/carts.md and docs/api.md, as written, against the
    running demo (a reader's folder beside the demo's `data/` and `.venv/`)."""
    work.mkdir()
    (work / "data").symlink_to(data_dir)
    (work / ".venv").symlink_to(ROOT / ".venv")
    # README: a cart of every device over yesterday and today, then the archive through DuckDB
    # (yesterday is compacted only once ROTATE_GRACE_S has passed after midnight)
    readme = blocks("README.md", "sh")[-1]
    today = int(time.time() // 86400) * 86400
    if time.time() < today + 330:
        readme = readme.split(".venv/bin/python - <<'PY'")[0]
    said = bash(readme, work, port, token)
    assert '"status_url"' in said, said
    if time.time() >= today + 330:
        assert time.strftime("%Y-%m-%d", time.gmtime(today - 86400)) in said, said

    # docs/carts.md: ask, wait, download, verify; then the same request in each format
    ask, each_format = blocks("docs/carts.md", "sh")[:2]
    said = bash(f"{ask}\n{each_format}", work, port, token)
    assert "my-study.tar" in os.listdir(work) and ": OK" in said and "FAILED" not in said, said
    answers = json_objects(said[said.index('{"id"') :])
    assert [a["request"]["format"] for a in answers] == ["jl", "csv", "parquet"], said
    unpacked = work / "parquet-cart"
    download(port, token, answers[-1]["id"], unpacked)
    (snippet,) = blocks("docs/carts.md", "python")
    ran = subprocess.run([sys.executable, "-c", snippet], cwd=unpacked, capture_output=True, text=True)
    assert ran.returncode == 0 and "demand_kw" in ran.stdout, ran.stderr
    import duckdb

    (query,) = blocks("docs/carts.md", "sql")
    os.chdir(unpacked)
    try:
        assert duckdb.sql(query).fetchall(), "the cart's DuckDB example found no rows"
    finally:
        os.chdir(ROOT)

    # docs/api.md: every curl line answers without an error
    said = bash(blocks("docs/api.md", "sh")[0], work, port, token)
    assert '{"error":"' not in said.replace(" ", ""), said[:2000]
    assert '"cloud_id":"00beef"' in said.replace(" ", "") and "# HELP" in said, said


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects curl printed one after another (no newline between them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        value, at = decoder.raw_decode(text, at)
        found.append(value)
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def download(port: int, token: str, cart_id: str, into: Path) -> None:
    """Wait for a cart, then fetch and unpack it."""
    url = f"http://127.0.0.1:{port}/api/carts/{cart_id}"
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 120
    while True:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers=headers)) as resp:
            status = resp.headers.get("X-Cart-Status")
        assert status != "error" and time.monotonic() < deadline, f"cart {cart_id}: {status}"
        if status == "ready":
            break
        time.sleep(0.5)
    into.mkdir()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as resp:
        (into / "cart.tar").write_bytes(resp.read())
    with tarfile.open(into / "cart.tar") as tar:
        tar.extractall(into, filter="data")


def every_cause_alerts(port: int, token: str, maildir: Path) -> None:
    """The demo's households in trouble on purpose each get an alert, mailed to the catcher."""
    wanted = {"frozen", "meter_offline", "unreachable", "auth", "bad_reply", "push_silent"}
    seen: set[str] = set()

    def all_there() -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/alerts?state=open", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            seen.update(a["cause"] for a in json.load(resp)["alerts"])
        return wanted <= seen

    deadline = time.monotonic() + 200  # thresholds of 10 s, polls every second, rounds every 2 s
    while not all_there():
        assert time.monotonic() < deadline, f"alerts of {sorted(wanted - seen)} never opened"
        time.sleep(1)
    deadline = time.monotonic() + 60
    mails: list[str] = []
    while len(mails) < len(wanted) and time.monotonic() < deadline:
        time.sleep(1)
        mails = [p.read_text() for p in maildir.iterdir()] if maildir.exists() else []
    subjects = [line for m in mails for line in m.splitlines() if line.startswith("Subject:")]
    for cause in wanted:
        assert any(s.endswith(f" {cause}") for s in subjects), (cause, subjects)


def a_researchers_cart(port: int, token: str, said: str) -> None:
    """The researcher's cart request the demo prints, as printed: a pseudonymous parquet cart of
    one study's households, in local time, that frictionless validates."""
    import io
    import tarfile

    request = said[said.index('    curl -s -X POST -H "Authorization: Bearer $R"') :].split("\n    then")[0]
    made = subprocess.run(["bash", "-c", request], env={**os.environ, "R": token}, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    cart = json.loads(made.stdout)
    url, h = f"http://127.0.0.1:{port}{cart['status_url']}", {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 120
    while True:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers=h), timeout=10) as r:
            status = r.headers["X-Cart-Status"]
        assert status != "error" and time.monotonic() < deadline, status
        if status == "ready":
            break
        time.sleep(0.5)
    with urllib.request.urlopen(urllib.request.Request(url, headers=h), timeout=60) as r:
        body = r.read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
        assert "participants.csv" in names and "datapackage.json" in names
        people = tar.extractfile("participants.csv").read().decode()  # type: ignore[union-attr]
    assert "heat-001" in people and "America/Chicago" in people and "city-" not in people
    assert all(n.startswith("heat-") or "/" not in n for n in names), names
