"""`make test-containers`: the container deployment started for real, checked end to end.

Runs docker-compose.yml with docker/compose.sim.yml (a simulated fleet as a service) under its own
project name, three pingers, and checks what an operator would: every service healthy, the
simulator's users imported, readings in the data volume, the API through nginx over TLS, rotate
shipping to the S3 service, the three pingers sharing the fleet with no device polled twice, a
killed pinger's devices polled again, `rainforest status` from inside, and `docker-compose stop`
exiting 0 everywhere. Prints one line per check and a summary; exits 1 on the first failure.

    .venv/bin/python scripts/test_containers.py [--keep]   # --keep: leave the stack running
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "rftest"
PINGERS = 3
DEVICES = 300
CERTS = ROOT / "docker" / "nginx" / "certs"
# Run inside the server container, where the settings point at the stack's S3 service and Redis.
COUNT_OBJECTS = """python -c "
import boto3, os
s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT_URL'], region_name='us-east-1')
bucket = os.environ['ARCHIVE_URL'][5:].split('/')[0]
print(sum(len(p.get('Contents', [])) for p in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket)))
" """
OWNERS = """python -c "
import json, os, redis
print(json.dumps(redis.Redis.from_url(os.environ['REDIS_URL'], decode_responses=True).hgetall('rf:owners')))
" """


class Failed(Exception):
    pass


def compose_cmd() -> list[str]:
    """docker-compose 1.29, or docker compose v2 where that is what is installed."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    raise Failed("neither docker-compose nor docker compose is installed")


class Stack:
    def __init__(self, env_file: Path) -> None:
        self.base = [
            *compose_cmd(),
            "-p",
            PROJECT,
            "-f",
            "docker-compose.yml",
            "-f",
            "docker/compose.sim.yml",
        ]
        self.env = {**os.environ, "RAINFOREST_ENV_FILE": str(env_file)}

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        done = subprocess.run(
            [*self.base, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise Failed(f"{' '.join(args[:3])} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def exec(self, service: str, command: str, timeout: float = 120) -> str:
        return self.run("exec", "-T", service, "sh", "-c", command, timeout=timeout)

    def containers(self) -> dict[str, str]:
        """container name → id, every container of the project (running or not)."""
        out = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
             "--format", "{{.Names}} {{.ID}}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return dict(line.split() for line in out.splitlines() if line.strip())

    def inspect(self, container: str, template: str) -> str:
        return subprocess.run(
            ["docker", "inspect", "--format", template, container], capture_output=True, text=True
        ).stdout.strip()

    def json_from(self, service: str, command: str) -> object:
        return json.loads(self.exec(service, command))


def wait(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if check():
                return time.monotonic() - started
        except (Failed, ValueError, KeyError, OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(2)
    raise Failed(f"timed out after {timeout_s:.0f} s waiting for {what}")


def say(line: str) -> None:
    print(line, flush=True)


def env_file(tmp: Path) -> Path:
    key = subprocess.run(
        [sys.executable, "-m", "app.cli", "secret-key"], capture_output=True, text=True, check=True
    )
    path = tmp / "containers.env"
    text = (ROOT / ".env.template").read_text().replace("SECRET_KEY=\n", f"SECRET_KEY={key.stdout.strip()}\n")
    path.write_text(text + "MINIO_ROOT_PASSWORD=container-test-secret\nAPI_TOKENS=\n")
    return path


def self_signed_certs() -> bool:
    """A self-signed pair for nginx when none is there (docs/deploying.md's command); True if made."""
    if (CERTS / "fullchain.pem").exists() and (CERTS / "privkey.pem").exists():
        return False
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=rainforest.test", "-keyout", str(CERTS / "privkey.pem"),
         "-out", str(CERTS / "fullchain.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    (CERTS / "privkey.pem").chmod(0o644)  # nginx's workers read it inside the container
    return True


def healthy(stack: Stack) -> bool:
    states = {}
    for name, cid in stack.containers().items():
        if "minio-init" in name:
            states[name] = "done" if stack.inspect(cid, "{{.State.ExitCode}}") == "0" else "running"
        else:
            states[name] = stack.inspect(
                cid, "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
            )
    return len(states) >= 8 + PINGERS - 1 and all(s in ("healthy", "done") for s in states.values())


def https(path: str, token: str | None = None) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # our self-signed test pair
    req = urllib.request.Request(f"https://127.0.0.1{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, context=context, timeout=10) as resp:
        return resp.status, resp.read()


def pollers(stack: Stack) -> dict[str, list[list[object]]]:
    return stack.json_from("server", "curl -fs http://sim:9445/control/pollers")  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Leave the stack running afterwards.")
    args = parser.parse_args()
    summary: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="rf-containers-"))
    made_certs = self_signed_certs()
    stack = Stack(env_file(tmp))
    started = time.monotonic()
    try:
        stack.run("down", "-v", "--remove-orphans", check=False)
        stack.run("up", "-d", "--scale", f"pinger={PINGERS}")
        took = wait(lambda: healthy(stack), 240, "every service to turn healthy")
        summary.append(
            f"up: {len(stack.containers())} containers healthy in {took:.0f} s (redis, minio, "
            f"minio-init done, server, {PINGERS} pingers, rotate, cartd, nginx, sim)"
        )
        say(summary[-1])

        out = stack.exec("server", "curl -fs http://sim:9445/control/users.jl > /tmp/users.jl && "
                                   "rainforest users import /tmp/users.jl")  # fmt: skip
        summary.append(f"users import: {out.strip().splitlines()[-1]}")
        users = [json.loads(line) for line in stack.exec("server", "cat /tmp/users.jl").splitlines()]
        polled = sum(u["protocol"] != "push" for u in users)  # push devices upload; no pinger holds them
        say(summary[-1])

        def readings() -> bool:
            n = int(stack.exec("server", "find /data/logs -name '*.jl' | wc -l").strip())
            return n >= DEVICES * 0.9

        took = wait(readings, 120, "hourly files for the fleet in the data volume")
        files = stack.exec("server", "find /data/logs -name '*.jl' | wc -l").strip()
        summary.append(f"readings: {files} hourly .jl files in the data volume {took:.0f} s after the import")
        say(summary[-1])

        token = stack.exec("server", "rainforest tokens create container-test").strip()
        status, _ = https("/healthz")
        code, users = https("/api/users/?limit=2", token)
        if status != 200 or code != 200 or len(json.loads(users)["users"]) != 2:
            raise Failed(f"the API through nginx answered {status} and {code}: {users[:200]!r}")
        first = json.loads(users)["users"][0]["cloud_id"]
        _, one = https(f"/api/users/{first}", token)
        owner = json.loads(one).get("owner")
        # HTTP/2 negotiated for real (ALPN), as a client no one here wrote sees it
        version = subprocess.run(
            ["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}", "https://127.0.0.1/healthz"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        if version != "2":
            raise Failed(f"nginx did not negotiate HTTP/2 with curl (it answered HTTP/{version or '?'})")
        summary.append(
            f"nginx TLS: /healthz 200 over HTTP/{version} (curl, ALPN), /api/users/ 200, "
            f"{first} is polled by {owner and owner['pinger']}"
        )
        say(summary[-1])

        stack.exec("server", "rainforest sim --devices 20 --seed 3 --backfill-hours 2 > /dev/null")
        listing = COUNT_OBJECTS
        took = wait(
            lambda: int(stack.exec("server", listing).strip()) >= 40, 120, "rotate to ship to the S3 service"
        )
        summary.append(f"rotate: {stack.exec('server', listing).strip()} objects in the S3 service "
                       f"(MinIO's stand-in) {took:.0f} s after two past hours were written")  # fmt: skip
        say(summary[-1])

        report = stack.json_from("server", "rainforest status --json")
        live = [p for p in report["pingers"] if p["lease"] == "ok"]  # type: ignore[index]
        if len(live) != PINGERS or sum(p["devices"] for p in live) != polled:
            raise Failed(f"the pingers do not share the {polled} polled devices: {report['pingers']}")  # type: ignore[index]
        stack.exec("server", "curl -fs -X DELETE http://sim:9445/control/pollers > /dev/null")
        time.sleep(14)
        seen = pollers(stack)
        twice = [cid for cid, runs in seen.items() if len({run[0] for run in runs}) > 1]
        if twice or len(seen) != polled:
            raise Failed(f"{len(twice)} devices polled by two pingers; {len(seen)} polled in all")
        shares = sorted(p["devices"] for p in live)
        summary.append(f"{PINGERS} pingers: {shares} devices each, {len(seen)} devices polled, none by two")
        say(summary[-1])

        victim_name = next(name for name in stack.containers() if "pinger" in name)
        victim = stack.containers()[victim_name]
        host = stack.inspect(victim, "{{.Config.Hostname}}")
        theirs = next(p for p in live if p["id"].startswith(host + ":"))
        owners = stack.json_from("server", OWNERS)
        dead = [cid for cid, pinger in owners.items() if pinger == theirs["id"]]  # type: ignore[union-attr]
        subprocess.run(["docker", "kill", "--signal", "KILL", victim], check=True, capture_output=True)
        killed_at = time.time()

        def taken_over() -> bool:
            seen = pollers(stack)
            return all(seen.get(cid) and float(seen[cid][-1][2]) > killed_at for cid in dead)  # type: ignore[arg-type]

        took = wait(taken_over, 60, "the killed pinger's devices to be polled again")
        seen = pollers(stack)
        by = {str(seen[cid][-1][0]).rsplit("/", 1)[-1].split(":")[0] for cid in dead}
        how = "by the other pingers" if host not in by else "including its restarted container"
        summary.append(
            f"kill -9 of {victim_name}: its {len(dead)} devices polled again within {took:.0f} s, {how}"
        )
        say(summary[-1])

        text = stack.exec("server", "rainforest status")
        say("rainforest status (inside the server container):\n" + text)
        summary.append("docker-compose exec server rainforest status: " + text.splitlines()[0])

        stack.run("stop", timeout=300)
        codes = {name: stack.inspect(cid, "{{.State.ExitCode}}") for name, cid in stack.containers().items()}
        bad = {n: c for n, c in codes.items() if c != "0" and stack.containers()[n] != victim}
        if bad:
            raise Failed(f"docker-compose stop: these exited non-zero: {bad}")
        killed = codes[victim_name]
        summary.append(
            f"docker-compose stop: {len(codes) - 1} containers exited 0 (the killed one: {killed})"
        )
        say(summary[-1])
    except Failed as exc:
        say(f"FAILED: {exc}")
        say(stack.run("ps", check=False))
        say(stack.run("logs", "--tail", "30", check=False)[-6000:])
        return 1
    finally:
        if not args.keep:
            stack.run("down", "-v", "--remove-orphans", check=False)
        if made_certs:
            for name in ("fullchain.pem", "privkey.pem"):
                (CERTS / name).unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"\nmake test-containers passed in {time.monotonic() - started:.0f} s:")
    for line in summary:
        say(f"  - {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
