"""Operations: heartbeats and --check, `rainforest status`, `rainforest logs` (filters and --tree on a
real poll cycle), log rolling, and the container files."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import psutil
import pytest
import requests
import yaml

from app import health, logs
from app.settings import Settings
from tests.conftest import ROOT, RedisServer, Sim, free_port, wait_until
from tests.test_pinger_process import fleet_env, start_pinger
from tests.test_users_cli import rainforest


def test_check_status_and_logs_follow_a_real_pinger(
    start_sim: Callable[..., Sim], redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    sim = start_sim(20, "--fault", "http_503@20%")
    env = fleet_env(sim, redis_url, secret_key, tmp_path)
    data = Path(env["DATA_DIR"])
    assert rainforest("pinger", "--check", env=env).returncode == 1, "nothing runs yet"

    pinger = start_pinger(env, tmp_path)
    try:
        wait_until(lambda: rainforest("pinger", "--check", env=env).returncode == 0, 20, what="the heartbeat")
        ok = rainforest("pinger", "--check", env=env)
        assert "pinger: alive" in ok.stdout
        log = data / "logs" / "pinger" / "pinger.log"
        wait_until(lambda: log.exists() and log.read_bytes().count(b'"poll cycle"') >= 3, 20, what="cycles")
        status = rainforest("status", "--json", env=env)
        report = orjson.loads(status.stdout)
        assert [p["host"] for p in report["processes"]["pinger"]] and report["devices"]["active"] == 20
        assert sum(report["devices"][state] for state in health.STATES if state != "inactive") == 20
        assert status.returncode == 1 and not report["healthy"], "server, rotate and cartd are not running"
        text = rainforest("status", env=env).stdout
        assert "pinger  up" in text and "server  DOWN" in text and "devices   20 active" in text
    finally:
        pinger.send_signal(signal.SIGTERM)
        assert pinger.wait(15) == 0
    gone = rainforest("pinger", "--check", env=env)
    assert gone.returncode == 1 and "no heartbeat" in gone.stderr, "a clean stop removes the heartbeat"

    tree = rainforest("logs", "pinger", "--tree", env=env)
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    roots = [n for n, line in enumerate(lines) if line.startswith("poll_cycle ")]
    assert roots and "poll cycle" in lines[roots[0]]
    failing = [n for n, line in enumerate(lines) if "device poll failed" in line]
    assert failing, "the 503 fault shows up as device lines"
    assert all(lines[n].startswith(("├─ ", "└─ ")) for n in failing), "device lines sit under their cycle"
    cycle_ids = {line.split()[1] for line in lines if line.startswith("poll_cycle ")}
    records = [
        orjson.loads(raw) for raw in (data / "logs" / "pinger" / "pinger.log").read_bytes().splitlines()
    ]
    failed = [r for r in records if r["message"] == "device poll failed"]
    assert {r["action_id"] for r in failed} <= cycle_ids

    device = failed[0]["cloud_id"]
    only = rainforest("logs", "pinger", "--device", device, "--level", "warning", "--since", "10m", env=env)
    assert only.returncode == 0 and only.stdout.strip()
    assert all(f"cloud_id={device}" in line and " WARNING " in line for line in only.stdout.splitlines())
    bad = rainforest("logs", "--since", "soon", env=env)
    assert bad.returncode == 2 and "60d, 12h, 30m or 90s" in bad.stderr


def test_the_production_supervisord_config_runs_every_process_and_stops_them_cleanly(
    start_sim: Callable[..., Sim], redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    """deploy/supervisord-production.conf (the container's default command) on this machine."""
    sim = start_sim(5)
    env = fleet_env(sim, redis_url, secret_key, tmp_path)
    ports = {name: free_port() for name in ("SERVER_PORT", "PINGER_METRICS_PORT", "ROTATE_METRICS_PORT",
                                            "CARTD_METRICS_PORT")}  # fmt: skip
    env.update({name: str(port) for name, port in ports.items()})
    bin_dir = Path(sys.executable).parent  # the virtualenv's bin: rainforest, supervisord
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    # the file's only host-wide names (its socket and pid file in /tmp) move to this test's folder
    conf = tmp_path / "supervisord.conf"
    text = (ROOT / "deploy" / "supervisord-production.conf").read_text()
    assert text.count("/tmp/rainforest-supervisor") == 3
    conf.write_text(text.replace("/tmp/rainforest-supervisor", str(tmp_path / "rainforest-supervisor")))
    out = tmp_path / "supervisord.out"
    with out.open("wb") as sink:
        supervisord = subprocess.Popen(
            [str(bin_dir / "supervisord"), "-c", str(conf)],
            cwd=tmp_path, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: rainforest("status", env=env).returncode == 0, 40, what="every process up")
        assert requests.get(f"http://127.0.0.1:{ports['SERVER_PORT']}/healthz", timeout=5).status_code == 200
        for name, metric in (("PINGER", "rainforest_polls_total"), ("ROTATE", "rainforest_rotate_pass"),
                             ("CARTD", "rainforest_cart_builds_total")):  # fmt: skip
            page = requests.get(f"http://127.0.0.1:{ports[f'{name}_METRICS_PORT']}/metrics", timeout=5).text
            assert metric in page, name

        def running() -> list[str]:
            ctl = subprocess.run([str(bin_dir / "supervisorctl"), "-c", str(conf), "status"],
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
            return sorted(line.split()[0] for line in ctl.stdout.splitlines() if " RUNNING " in line)

        wait_until(
            lambda: running() == ["alerts", "cartd", "pinger", "rotate", "server"],
            20,
            what="supervisorctl: RUNNING",
        )
        children = psutil.Process(supervisord.pid).children(recursive=True)
        assert len(children) == 5  # server, pinger, rotate, cartd, alerts
        metrics_ports = {ports[f"{n}_METRICS_PORT"] for n in ("PINGER", "ROTATE", "CARTD")}
        listening = {
            (c.laddr.ip, c.laddr.port)
            for child in children
            for c in child.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in metrics_ports
        }
        assert {port for _, port in listening} == metrics_ports
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, "metrics listen on loopback unless opened"
    finally:
        supervisord.send_signal(signal.SIGTERM)
        assert supervisord.wait(150) == 0
    said = out.read_text()
    for program in ("server", "pinger", "rotate", "cartd"):
        assert f"stopped: {program} (exit status 0)" in said, said
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert "poll cycle" in said and "cartd stopped" in said, "the programs' readable lines reach stdout"
    assert "did not finish within the shutdown grace period" not in said, "a clean stop warns of nothing"


@pytest.mark.parametrize(
    ("args", "setting"),
    [(["server", "--port"], "SERVER_PORT"), (["pinger", "--metrics-port"], "PINGER_METRICS_PORT"),
     (["rotate", "--every", "60", "--metrics-port"], "ROTATE_METRICS_PORT"),
     (["cartd", "--metrics-port"], "CARTD_METRICS_PORT")],
)  # fmt: skip
def test_a_busy_port_stops_a_process_with_one_sentence(
    args: list[str], setting: str, redis_url: str, secret_key: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path)}
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = rainforest(*args, str(port), env=env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: cannot listen on port {port}") and setting in last, result.stderr
    assert "Traceback" not in result.stderr


def test_cartd_waits_out_a_redis_that_refuses_it_with_one_sentence(
    own_redis: RedisServer, secret_key: str, tmp_path: Path
) -> None:
    own_redis.stop()  # refused from the start
    env = {"REDIS_URL": own_redis.url, "SECRET_KEY": secret_key, "DATA_DIR": str(tmp_path)}
    err = tmp_path / "cartd.stderr"
    with err.open("wb") as out:
        cartd = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "cartd"], cwd=tmp_path, env={**os.environ, **env},
            stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    try:
        wait_until(lambda: b"cannot reach Redis" in err.read_bytes(), 20, what="cartd's sentence")
        assert cartd.poll() is None, "cartd must wait for Redis, not exit"
        own_redis.start()
        wait_until(
            lambda: rainforest("cartd", "--check", env=env).returncode == 0, 20, what="cartd's heartbeat"
        )
        own_redis.stop()  # and once more while it runs
        wait_until(lambda: b"Redis unreachable" in err.read_bytes(), 20, what="the queue's sentence")
        own_redis.start()
        wait_until(lambda: rainforest("cartd", "--check", env=env).returncode == 0, 30, what="cartd again")
    finally:
        cartd.send_signal(signal.SIGTERM)
        assert cartd.wait(20) == 0
    said = err.read_text()
    assert "Traceback" not in said, said


def test_log_files_roll_and_keep_the_bound(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, log_max_bytes=4000, log_backups=2)
    try:
        path = logs.setup("roller", settings)
        assert path is not None
        for n in range(400):
            logging.getLogger("roller").info("line", extra={"n": n, "padding": "x" * 40})
        kept = sorted(p.name for p in path.parent.iterdir())
        assert kept == ["roller.log", "roller.log.1", "roller.log.2"]
        assert all(p.stat().st_size <= 4000 for p in path.parent.iterdir())
        newest = [orjson.loads(raw) for raw in path.read_bytes().splitlines()]
        assert newest[-1]["n"] == 399 and newest[-1]["process"] == "roller"
    finally:
        for handler in logging.getLogger().handlers:
            handler.close()
        logging.getLogger().handlers.clear()


def test_compose_file_runs_every_process_with_health_checks() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "server", "pinger", "rotate", "cartd", "nginx", "minio"} <= services.keys()
    for name in ("redis", "server", "pinger", "rotate", "cartd", "nginx", "minio"):
        assert "healthcheck" in services[name], name
        assert services[name].get("restart") == "unless-stopped", name
    for name in ("server", "pinger", "rotate", "cartd"):
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"rainforest {name} --check" in check or (name == "server" and "/healthz" in check), name
        assert any(str(v).startswith("data:") for v in services[name].get("volumes", [])), name
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    for name in ("server", "pinger", "rotate", "cartd"):  # one process per container, not the image's default
        assert services[name]["command"][:2] == ["rainforest", name], name
    dockerfile = (ROOT / "docker" / "app" / "Dockerfile").read_text()
    default = 'CMD ["supervisord", "-c", "/srv/rainforest/deploy/supervisord-production.conf"]'
    assert default in dockerfile and "COPY deploy/supervisord-production.conf" in dockerfile
    assert (ROOT / "docker" / "base" / "Dockerfile").exists() and (
        ROOT / "docker" / "nginx" / "nginx.conf"
    ).exists()
    # Both compose generations build it: a plain FROM with a build argument, no additional_contexts
    assert "ARG BASE_IMAGE=rainforest/base:latest" in dockerfile and "FROM ${BASE_IMAGE}" in dockerfile
    assert all("additional_contexts" not in str(services[n].get("build", {})) for n in services)
    nginx = "\n".join(
        line.split("#")[0] for line in (ROOT / "docker" / "nginx" / "nginx.conf").read_text().splitlines()
    )
    assert "listen 443 ssl http2;" in nginx and "http2 on;" not in nginx, "nginx 1.22 knows no 'http2 on'"
    sim = yaml.safe_load((ROOT / "docker" / "compose.sim.yml").read_text())["services"]
    assert "sim" in sim and {"server", "pinger", "rotate", "cartd"} <= sim.keys()
    clients = [
        cmd for cmd in (["docker", "compose"], ["docker-compose"])
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0
    ]  # fmt: skip
    if not clients:
        pytest.skip("no docker compose client here; the file was checked structurally")
    env_file = ROOT / "data" / "compose-check.env"
    env_file.parent.mkdir(exist_ok=True)
    env_file.write_text((ROOT / ".env.template").read_text())
    try:
        for client in clients:
            for files in (
                ["-f", "docker-compose.yml"],
                ["-f", "docker-compose.yml", "-f", "docker/compose.sim.yml"],
            ):
                checked = subprocess.run(
                    [*client, *files, "config", "-q"], cwd=ROOT, capture_output=True, text=True,
                    env={**os.environ, "RAINFOREST_ENV_FILE": str(env_file)},
                )  # fmt: skip
                assert checked.returncode == 0, f"{' '.join(client)}: {checked.stderr}"
    finally:
        env_file.unlink()


def test_the_grafana_dashboard_uses_only_metrics_we_export() -> None:
    import re

    from app.carts.worker import CartdMetrics
    from app.pinger.metrics import PingerMetrics
    from app.rotate.metrics import RotateMetrics
    from app.web.context import Metrics

    exported: set[str] = set()
    for metrics in (PingerMetrics(), RotateMetrics(), CartdMetrics(), Metrics()):
        for family in metrics.registry.collect():
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(
                family.type, ("",)
            )
            exported |= {family.name + suffix for suffix in suffixes}
    dashboard = orjson.loads((ROOT / "deploy" / "grafana" / "rainforest-logger.json").read_bytes())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"rainforest_[a-z_]+", target["expr"])
    }
    assert used and used <= exported, used - exported
