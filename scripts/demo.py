"""`make demo`: the whole system in simulated mode under supervisord, until Ctrl-C.

Creates .env from .env.template (with a fresh SECRET_KEY) when missing, starts redis-server,
the simulated fleet and the pinger under supervisord (deploy/supervisord.conf), imports the
simulator's users, waits for the first readings and prints where to look.

    .venv/bin/python scripts/demo.py [--devices 50] [--protocols MIX] [--redis-port 6399] [--sim-port 9445]
    .venv/bin/python scripts/demo.py --smoke   # stop once everything is up and shown: a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The relay, EAGLE-200s and EAGLE-100s on the local network, and gateways that push: the first
# four devices are one of each.
DEMO_MIX = "eagle100-cloud=35,eagle200-local=25,eagle100-local=15,eagle100-cgi=5,push=20"
KINDS = (
    ("demand", "eagle100-cloud"), ("demand", "eagle200-local"), ("demand", "eagle100-local"),
    ("demand", "push"), ("summation", None), ("price", None),
)  # fmt: skip
BIN = Path(sys.executable).parent
# Households in trouble, one of each cause the simulator makes: (protocol, which of its devices
# counting from 0; the first of each protocol stays healthy) → (the cause it shows, the fault).
# The demo's fleet comes from seed 1, so these are the same households every time.
TROUBLES = {
    ("eagle200-local", 1): ("frozen", "frozen"),
    ("eagle200-local", 2): ("meter_offline", "meter_offline"),
    ("eagle100-local", 1): ("unreachable", "offline"),
    ("eagle100-cloud", 2): ("auth", "bad_credentials"),  # the second is docs/api.md's example
    ("eagle100-cloud", 3): ("bad_reply", "malformed"),
    ("push", 1): ("push_silent", "offline"),
}
ALERTS_ENV = {
    "ALERT_EVAL_S": "5", "ALERT_EMAIL_TO": "coordinator@demo.test", "FROZEN_AFTER_S": "30",
    "SILENT_AFTER_S": "30", "METER_OFFLINE_AFTER_S": "20", "AUTH_AFTER_S": "20", "BAD_REPLY_AFTER_S": "20",
    "PUSH_STALE_S": "30",
}  # fmt: skip


def ensure_env_file() -> None:
    env, template = ROOT / ".env", ROOT / ".env.template"
    if env.exists() or os.environ.get("SECRET_KEY"):
        return
    key = subprocess.run([BIN / "rainforest", "secret-key"], capture_output=True, text=True, check=True)
    text = template.read_text().replace("SECRET_KEY=\n", f"SECRET_KEY={key.stdout.strip()}\n")
    env.write_text(text)
    env.chmod(0o600)
    print("created .env from .env.template with a new SECRET_KEY")


def troubled(users: Path) -> dict[str, tuple[str, str]]:
    """cloud_id → (cause, the simulator's fault) for the demo's households in trouble (as many of
    TROUBLES as the fleet has devices for)."""
    seen: dict[str, int] = {}
    found = {}
    for line in users.read_text().splitlines():
        user = json.loads(line)
        protocol = user.get("protocol", "eagle100-cloud")
        n = seen[protocol] = seen.get(protocol, -1) + 1
        if (protocol, n) in TROUBLES:
            found[str(user["cloud_id"])] = TROUBLES[(protocol, n)]
    return found


def uploaded(cloud_ids: list[str], logs_dir: Path) -> bool:
    hour = time.strftime("%Y-%m-%d-%H", time.gmtime())
    return all(any(logs_dir.glob(f"{hour}/*-{cid}-*.jl")) for cid in cloud_ids)


def add_faults(sim_port: int, faults: dict[str, str]) -> None:
    """Give these devices a fault now, through the simulator's control API."""
    url = f"http://127.0.0.1:{sim_port}/control/faults"
    with urllib.request.urlopen(url, timeout=5) as resp:
        current = json.load(resp)
    current["devices"].update({cid: {"error": fault} for cid, fault in faults.items()})
    body = json.dumps(current).encode()
    put = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(put, timeout=5).close()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_for(check, timeout_s: float, what: str, supervisor: subprocess.Popen[bytes]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            raise SystemExit(f"supervisord exited while waiting for {what}; see data/logs/supervisord/.")
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not happen within {timeout_s:.0f} s; see data/logs/ for each process.")


def first_reading(logs_dir: Path) -> Path | None:
    """A file the running pinger wrote (this hour's; earlier hours may be backfilled)."""
    hour = time.strftime("%Y-%m-%d-%H", time.gmtime())
    for path in sorted(logs_dir.glob(f"{hour}/*.jl")):
        if path.stat().st_size:
            return path
    return None


def samples(logs_dir: Path, wanted: list[tuple[str, str | None]]) -> dict[tuple[str, str | None], str]:
    """One line of each (kind, source) from this hour's files: what the welcome text shows."""
    hour = time.strftime("%Y-%m-%d-%H", time.gmtime())
    found: dict[tuple[str, str | None], str] = {}
    for path in sorted(logs_dir.glob(f"{hour}/*.jl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            kind, source = record.get("kind", "demand"), record.get("source")
            for key in ((kind, source), (kind, None)):
                if key in wanted and key not in found:
                    found[key] = line
        if len(found) == len(wanted):
            break
    return found


def archived(archive_dir: Path) -> list[Path]:
    return sorted(archive_dir.glob("rainforest-logs/*/????/??/??/*.jl.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument(
        "--protocols", default=DEMO_MIX, help="the simulated fleet's mix (rainforest sim --protocols)"
    )
    parser.add_argument("--redis-port", type=int, default=6399)
    parser.add_argument("--sim-port", type=int, default=9445)
    parser.add_argument("--server-port", type=int, default=8000)
    parser.add_argument("--mail-port", type=int, default=8025)
    parser.add_argument("--smoke", action="store_true", help="stop everything once readings appear")
    args = parser.parse_args()

    os.chdir(ROOT)
    ensure_env_file()
    sys.path.insert(0, str(ROOT))
    from app.settings import Settings

    data_dir = Settings.from_env().data_dir.resolve()
    ports = (
        (args.redis_port, "redis"),
        (args.sim_port, "the simulator"),
        (args.server_port, "the API server"),
        (args.mail_port, "the mail catcher"),
    )
    for port, name in ports:
        if not port_free(port):
            raise SystemExit(f"port {port} (for {name}) is in use: stop what holds it, or pick another port.")
    for sub in ("redis", "logs/redis", "logs/supervisord", "demo"):  # mail/: the catcher makes its Maildir
        (data_dir / sub).mkdir(parents=True, exist_ok=True)

    env = {
        **os.environ,
        "RF_ROOT": str(ROOT), "RF_BIN": str(BIN), "RF_DATA_DIR": str(data_dir),
        "RF_REDIS_PORT": str(args.redis_port), "RF_SIM_PORT": str(args.sim_port),
        "RF_SIM_DEVICES": str(args.devices), "RF_SERVER_PORT": str(args.server_port),
        "RF_SIM_PROTOCOLS": args.protocols,
        # simulated mode, whatever .env says about Redis and the relay
        "REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/0",
        "EAGLE_CLOUD_URL": f"http://127.0.0.1:{args.sim_port}/cgi-bin/post_manager",
        "ARCHIVE_URL": f"file://{data_dir}/archive", "RF_ROTATE_EVERY": "30",
        # the simulator serves every local gateway on 127.0.0.1: allow loopback for this demo
        "GATEWAY_ALLOW_NETWORKS": "127.0.0.0/8",
        "RF_MAIL_PORT": str(args.mail_port), "RF_SIM_FAULTS": "",
        # alerts mailed to the local catcher, after troubles that lasted seconds rather than minutes
        **{name: os.environ.get(name, value) for name, value in ALERTS_ENV.items()},
        "SMTP_URL": f"smtp://127.0.0.1:{args.mail_port}",
    }  # fmt: skip
    users = data_dir / "demo" / "users.jl"
    sim = [BIN / "rainforest", "sim", "--devices", str(args.devices), "--protocols", args.protocols,
           "--seed", "1"]  # fmt: skip
    export = [*sim, "--port", str(args.sim_port), "--export-users", str(users)]
    subprocess.run(export, check=True, env=env, stdout=subprocess.DEVNULL)
    troubles = troubled(users)
    # a push device that never uploaded is `never`, not silent: it goes quiet once it has uploaded
    at_start = {cid: t for cid, t in troubles.items() if t[0] != "push_silent"}
    env["RF_SIM_FAULTS"] = " ".join(f"--fault {fault}@{cid}" for cid, (_, fault) in at_start.items())
    # Two past hours of simulated readings, so rotate has closed hours to ship right away, and the
    # last two hours of yesterday (UTC), a closed day the rotate loop compacts to Parquet at once.
    backfill = subprocess.run(
        [*sim, "--backfill-hours", "2"], check=True, env=env, capture_output=True, text=True
    )
    print(backfill.stdout.strip())
    today = int(time.time() // 86400) * 86400
    yesterday = subprocess.run(
        [*sim, "--backfill-hours", "2", "--backfill-before", str(today)],
        check=True, env=env, capture_output=True, text=True,
    )  # fmt: skip
    print(yesterday.stdout.strip())

    conf = ROOT / "deploy" / "supervisord.conf"
    ctl_conf = data_dir / "supervisorctl.conf"  # lets supervisorctl find the demo without RF_* set
    ctl_conf.write_text(f"[supervisorctl]\nserverurl=unix://{data_dir}/supervisor.sock\n")
    supervisor = subprocess.Popen([BIN / "supervisord", "-n", "-c", str(conf)], env=env)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            print("\nstopping: every process finishes its work and exits...", flush=True)
            supervisor.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        wait_for(lambda: not port_free(args.redis_port), 20, "redis-server starting", supervisor)
        imported = subprocess.run([BIN / "rainforest", "users", "import", str(users)], env=env,
                                  capture_output=True, text=True)  # fmt: skip
        print(imported.stdout.strip() or imported.stderr.strip())
        token = demo_token(env)
        researcher = demo_studies(env, users, troubles)
        wait_for(lambda: first_reading(data_dir / "logs") is not None, 30, "the first reading", supervisor)
        path = first_reading(data_dir / "logs")
        assert path is not None
        # a demand line from each protocol and a summation; a price too, when a meter has one
        wanted = [kind for kind in KINDS[:5] if kind[1] is None or f"{kind[1]}=" in args.protocols]
        wait_for(lambda: len(samples(data_dir / "logs", wanted)) == len(wanted), 40,
                 "a line of each kind", supervisor)  # fmt: skip
        quiet = [cid for cid, (cause, _) in troubles.items() if cause == "push_silent"]
        wait_for(
            lambda: uploaded(quiet, data_dir / "logs"), 40, "the quiet push device's first upload", supervisor
        )
        add_faults(args.sim_port, {cid: troubles[cid][1] for cid in quiet})
        deadline = time.monotonic() + 35  # every meter's first price comes within five cycles
        while time.monotonic() < deadline and not samples(data_dir / "logs", [KINDS[5]]):
            time.sleep(0.5)
        cloud_id = path.name.split("-")[2]
        api = f"http://127.0.0.1:{args.server_port}"
        wait_for(
            lambda: api_answers(f"{api}/api/event/{cloud_id}?source=latest", token), 20, "the API", supervisor
        )
        wait_for(lambda: bool(archived(data_dir / "archive")), 60, "rotate's first pass", supervisor)
        day = time.strftime("%Y-%m-%d", time.gmtime(today - 86400))
        if time.time() >= today + 330:  # a day is compacted once it ended and ROTATE_GRACE_S passed
            manifests = data_dir / "archive" / "rainforest-parquet" / "_manifests" / f"date={day}"
            wait_for(lambda: bool(list(manifests.glob("*.json"))), 90, "yesterday compacted", supervisor)
        cart_id = request_cart(api, token)
        wait_for(lambda: cart_status(api, token, cart_id) == "ready", 60, "the demo cart", supervisor)
        print_welcome(path, data_dir, args, ctl_conf, token, cloud_id, cart_id, troubles, researcher)
        if args.smoke:
            stop()
        supervisor.wait()
    finally:
        if supervisor.poll() is None:
            stop()
            supervisor.wait(60)
    print("stopped.")


STUDIES = (  # (id, name, zone, which households: protocol → indices among that protocol's devices)
    ("heat-pump-2027", "Heat pump trial", "America/Chicago", {"eagle100-cloud": (0,), "eagle200-local": (0,),
                                                              "eagle100-local": (0,), "push": (0,)}),
    ("city-pilot", "City pilot", "Europe/London", {"eagle100-cloud": (4,), "eagle200-local": (3,)}),
)  # fmt: skip


def demo_studies(env: dict[str, str], users: Path, troubles: dict[str, tuple[str, str]]) -> str:
    """Two studies with a few households each (enrolled from three days ago, open-ended), and a
    read-only token for the first study's researcher; that token."""
    rainforest = str(BIN / "rainforest")
    by_protocol: dict[str, list[str]] = {}
    for line in users.read_text().splitlines():
        user = json.loads(line)
        by_protocol.setdefault(user.get("protocol", "eagle100-cloud"), []).append(str(user["cloud_id"]))
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 3 * 86400))
    for sid, name, zone, picks in STUDIES:
        subprocess.run([rainforest, "studies", "create", sid, "--name", name, "--timezone", zone],
                       env=env, check=True, capture_output=True)  # fmt: skip
        n = 0
        for protocol, indices in picks.items():
            for i in indices:
                found = by_protocol.get(protocol, [])
                if i < len(found) and found[i] not in troubles:
                    n += 1
                    enrol = [rainforest, "participants", "enrol", sid, found[i], "--from", since,
                             "--participant-id", f"{sid.split('-')[0]}-{n:03d}"]  # fmt: skip
                    subprocess.run(enrol, env=env, check=True, capture_output=True)
    subprocess.run([rainforest, "tokens", "revoke", "demo-researcher"], env=env, capture_output=True)
    scoped = [rainforest, "tokens", "create", "demo-researcher", "--read-only", "--study", STUDIES[0][0]]
    made = subprocess.run(scoped, env=env, capture_output=True, text=True)
    if made.returncode != 0:
        raise SystemExit(f"could not create the researcher's token: {made.stderr.strip()}")
    return made.stdout.strip()


def demo_token(env: dict[str, str]) -> str:
    """A fresh admin token named demo-admin (an older one is revoked first)."""
    rainforest = str(BIN / "rainforest")
    subprocess.run([rainforest, "tokens", "revoke", "demo-admin"], env=env, capture_output=True)
    made = subprocess.run(
        [rainforest, "tokens", "create", "demo-admin"], env=env, capture_output=True, text=True
    )
    if made.returncode != 0:
        raise SystemExit(f"could not create the demo token: {made.stderr.strip()}")
    return made.stdout.strip()


def request_cart(api: str, token: str) -> str:
    """Ask for the last three hours of every device, as a researcher would."""
    now = time.time()
    body = json.dumps({"devices": "all", "start": now - 3 * 3600, "end": now}).encode()
    request = urllib.request.Request(
        f"{api}/api/carts/", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(json.load(resp)["id"])


def cart_status(api: str, token: str, cart_id: str) -> str:
    request = urllib.request.Request(
        f"{api}/api/carts/{cart_id}", method="HEAD", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        status = str(resp.headers.get("X-Cart-Status", ""))
    if status == "error":
        raise SystemExit(f"the demo cart failed; see {api}/api/carts/{cart_id} and data/logs/cartd/.")
    return status


def api_answers(url: str, token: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def print_welcome(
    path: Path,
    data_dir: Path,
    args: argparse.Namespace,
    ctl_conf: Path,
    token: str,
    cloud_id: str,
    cart_id: str,
    troubles: dict[str, tuple[str, str]],
    researcher: str,
) -> None:
    lines = samples(data_dir / "logs", list(KINDS))
    sample = "\n    ".join(
        f"{kind + (' via ' + source if source else ''):<27} {lines[(kind, source)][:140]}…"
        for kind, source in KINDS
        if (kind, source) in lines
    )
    shipped = archived(data_dir / "archive")
    rotate_after = "five minutes after it ends (ROTATE_GRACE_S)"
    today_utc = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime())
    next_hour = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() + 3600))

    def rel(p: Path) -> str:
        return os.path.relpath(p) if p.is_relative_to(ROOT) else str(p)

    dark = "\n    ".join(
        f"{cid}  {cause:<14} (the simulator's {fault} fault)" for cid, (cause, fault) in troubles.items()
    )
    alerts = (
        f"""
  Alerts (docs/alerts.md): {len(troubles)} households are in trouble on purpose, one of each cause;
  within about a minute each has an alert, mailed to a local catcher:
    {dark}
    open http://127.0.0.1:{args.server_port}/alerts               what is dark, why, and what to do
    .venv/bin/rainforest alerts list --state open    the same, in the terminal
    ls {rel(data_dir / "mail" / "new")}/   one file per message (the mail catcher's Maildir)
  Stop the pinger (supervisorctl stop pinger) and after UNPOLLED_AFTER_S (2 min) every polled
  household is unpolled: one incident, one message."""
        if troubles
        else ""
    )

    print(f"""
Rainforest Logger is running in simulated mode ({args.devices} simulated EAGLE gateways:
{args.protocols}; docs/devices.md says what each protocol is).

  Readings (one .jl file per device per UTC hour; a line of each kind, from this hour):
    {rel(data_dir / "logs")}/YYYY-MM-DD-HH/iseif-rainforest-<cloud_id>-YYYY-MM-DD-HH.jl
    first one: {rel(path)}
    {sample}

  The archive (rotate ships each hour {rotate_after}; it runs every 30 s):
    {rel(data_dir / "archive")}/rainforest-logs/<cloud_id>/YYYY/MM/DD/<name of the .jl file>.gz
    shipped so far: {len(shipped)} files, e.g. {rel(shipped[0])}
    zcat that file | head -2          the same lines, compressed and verified

  The pages: open http://127.0.0.1:{args.server_port}/fleet and log in with the demo's admin token:
    {token}
  (the fleet with filters and CSV, each gateway's charts and completeness, /stats; docs/pages.md)

  The HTTP API (admin token for this demo: {token}):
    curl -s -H 'Authorization: Bearer {token}' 'http://127.0.0.1:{args.server_port}/api/event/{cloud_id}?source=latest'
    curl -s -H 'Authorization: Bearer {token}' 'http://127.0.0.1:{args.server_port}/api/users/?limit=5'
    the routes: docs/api.md, or GET /api/openapi.json with the token

  A cart (a tar of the last three hours of every device, with MANIFEST.json and SHA256SUMS) is
  ready; in another terminal, in an empty folder:
    T={token}
    A=http://127.0.0.1:{args.server_port}/api/carts/{cart_id}
    curl -sI -H "Authorization: Bearer $T" $A | grep -i x-cart
    curl -sS -O -J -H "Authorization: Bearer $T" "$A?filename=demo.tar"
    tar -xf demo.tar && sha256sum -c SHA256SUMS
  docs/carts.md shows how to ask for your own, in jl, csv or parquet.

  Studies (docs/studies.md): heat-pump-2027 (America/Chicago) and city-pilot (Europe/London)
  hold a few households each; .venv/bin/rainforest studies list, participants list heat-pump-2027.
  A researcher's read-only token sees only heat-pump-2027; its carts name households by
  participant_id (no cloud_id, e-mail or MAC address) with local time and a datapackage.json:
    R={researcher}
    curl -s -X POST -H "Authorization: Bearer $R" -H 'Content-Type: application/json' \\
         -d '{{"devices": "all", "start": "{today_utc}", "end": "{next_hour}", "format": "parquet"}}' \\
         http://127.0.0.1:{args.server_port}/api/carts/
    then HEAD and GET its status_url with the same token, as above.
{alerts}

  Look around (in another terminal, from {ROOT}):
    .venv/bin/rainforest status                      every process, the fleet, the archive, the carts
    .venv/bin/rainforest logs pinger --tree | tail   the last poll cycles, device lines beneath each
    .venv/bin/rainforest users list                  the fleet with each device's poll status
    tail -f {rel(data_dir / "logs/pinger/pinger.log")}   the pinger's JSON log, one line per cycle
    tail -f {rel(data_dir / "logs/rotate/rotate.log")}   rotate's JSON log, one summary line per pass
    .venv/bin/rainforest rotate --dry-run            what the next pass would ship
    .venv/bin/supervisorctl -c {rel(ctl_conf)} status
    curl -s localhost:{args.sim_port}/control/stats       the simulator's request counts

Ctrl-C stops everything cleanly.
""", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
