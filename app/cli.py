"""The `rainforest` command: one entry point, a subcommand per process or chore."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from app import logs
from app.credentials import Vault, new_key
from app.errors import ArchiveError, ConfigError, RainforestError, ValidationError
from app.settings import Settings

log = logging.getLogger("rainforest")


check_option = click.option(
    "--check", is_flag=True, help="Exit 0 if this process is alive on this host (heartbeat), else 1."
)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = Settings.from_env()
        changes = {k: v for k, v in overrides.items() if v is not None}
        return settings.replace(**changes) if changes else settings
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _check(settings: Settings, kind: str) -> None:
    """`--check`: one line, exit 0 when a `kind` process on this host has a fresh heartbeat, else 1."""
    from app.heartbeat import check

    ok, message = asyncio.run(check(settings, kind))
    click.echo(message, err=not ok)
    sys.exit(0 if ok else 1)


def _serve(build: Any) -> None:
    """Run a long-lived process until SIGTERM; a port it cannot listen on is one line, exit 1."""
    from app import lifecycle

    try:
        lifecycle.run(build)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _run_async(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except RainforestError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Rainforest Logger: poll EAGLE gateways every few seconds and keep every reading.

    Settings come from the environment and a .env file (see .env.template).
    """


@main.command("secret-key")
def secret_key() -> None:
    """Print a new SECRET_KEY (a Fernet key) for .env."""
    click.echo(new_key())


# --- pinger --------------------------------------------------------------------------------


@main.command()
@click.option("--interval-s", type=float, help="Override POLL_INTERVAL_S for this run.")
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="Prometheus metrics port [PINGER_METRICS_PORT]."
)
@check_option
def pinger(interval_s: float | None, metrics_port: int | None, check: bool) -> None:
    """Poll every active device each interval and append readings to hourly .jl files.

    Runs until SIGTERM or Ctrl-C, then finishes in-flight polls, flushes and exits 0.
    """
    from app.pinger import Pinger

    settings = _settings(poll_interval_s=interval_s, pinger_metrics_port=metrics_port)
    if check:
        _check(settings, "pinger")
    logs.setup("pinger", settings)
    _vault(settings)  # a missing or bad SECRET_KEY stops us here, with one line
    _serve(lambda: Pinger.create(settings))


# --- server --------------------------------------------------------------------------------


@main.command()
@click.option("--host", help="Address to listen on, nginx in front [SERVER_HOST, 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on [SERVER_PORT, 8000].")
@check_option
def server(host: str | None, port: int | None, check: bool) -> None:
    """Serve the HTTP API (users, events, health, metrics, OpenAPI) until SIGTERM."""
    from app.web.server import ApiServer

    settings = _settings(server_host=host, server_port=port)
    if check:
        _check(settings, "server")
    logs.setup("server", settings)
    _vault(settings)
    _serve(lambda: ApiServer(settings))


# --- rotate --------------------------------------------------------------------------------


@main.command()
@click.option(
    "--every", "every_s", type=click.FloatRange(min=1), help="Repeat a pass every SECONDS until SIGTERM."
)
@click.option("--dry-run", is_flag=True, help="List what a pass would ship, touching nothing.")
@click.option("--hour", metavar="YYYY-MM-DD-HH", help="Ship only this (closed) UTC hour.")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="With --every: serve Prometheus metrics here [ROTATE_METRICS_PORT].",
)
@check_option
def rotate(
    every_s: float | None, dry_run: bool, hour: str | None, metrics_port: int | None, check: bool
) -> None:
    """Ship closed hours to ARCHIVE_URL: gzip, store, confirm, then delete the local files.

    One pass by default; exits 1 when anything was left behind (the next pass retries it).
    """
    from app.archive.backend import open_archive
    from app.rotate.runner import RotateService, Rotator
    from app.rotate.scan import hour_start, is_closed

    settings = _settings(rotate_metrics_port=metrics_port)
    if check:
        _check(settings, "rotate")
    if hour is not None:
        if every_s is not None:
            raise click.UsageError("--hour is for a single pass; leave out --every.")
        try:
            start = hour_start(hour)
        except ValidationError as exc:
            raise click.BadParameter(str(exc), param_hint="--hour") from None
        if not is_closed(hour, time.time(), settings.rotate_grace_s):
            ready = time.strftime("%Y-%m-%d %H:%M", time.gmtime(start + 3600 + settings.rotate_grace_s))
            raise click.ClickException(
                f"hour {hour} is still open: it can be shipped from {ready} UTC "
                "(hour end plus ROTATE_GRACE_S)."
            )
    try:
        archive = open_archive(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if dry_run:
        files = Rotator(settings, archive, None).plan(hour)
        total = 0
        for item in files:
            size = item.path.stat().st_size
            total += size
            click.echo(f"{item.path}  ->  {archive.url}/{item.device_hour.key()}  ({size} bytes)")
        click.echo(f"{len(files)} files, {total / 1e6:.1f} MB would be shipped to {archive.url} (dry run).")
        return
    if every_s is not None:
        logs.setup("rotate", settings)
        _serve(lambda: RotateService(settings, archive, every_s))
        return
    logs.setup("rotate", settings)
    report = _run_async(_rotate_once(settings, archive, hour))
    click.echo(
        f"{report.stored} stored ({report.new_parts} as further parts), {report.already} already archived, "
        f"{report.busy} busy, {report.failed} failed, {report.left} left; "
        f"{report.source_bytes / 1e6:.1f} MB in, {report.stored_bytes / 1e6:.1f} MB stored in {archive.url}."
    )
    if report.error is not None:
        raise click.ClickException(f"archive trouble ({report.error.kind}): {report.error}")
    if not report.ok:
        sys.exit(1)


async def _rotate_once(settings: Settings, archive: Any, hour: str | None) -> Any:
    from app.rotate.runner import Rotator
    from app.store import Store

    store = Store.from_url(settings.redis_url, max_connections=4)
    try:
        return await Rotator(settings, archive, store, progress=sys.stderr.isatty()).pass_once(hour)
    finally:
        await store.close()


@main.command()
@click.option("--day", "day", required=True, metavar="YYYY-MM-DD", help="The UTC day to compact.")
@click.option("--force", is_flag=True, help="Even if this host still has hourly files of that day.")
def compact(day: str, force: bool) -> None:
    """Write a closed, shipped UTC day as Parquet in the archive (rainforest-parquet/kind=/date=),
    beside its hourly objects; again after a late part; nothing when already done.

    Example: rainforest compact --day 2026-11-30"""
    from app.archive.backend import open_archive
    from app.research.compact import Compactor

    settings = _settings()
    logs.setup("rotate", settings)
    try:
        archive = open_archive(settings)
        done = Compactor(settings, archive).compact(day, check=not force)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    except (ArchiveError, ConfigError) as exc:
        raise click.ClickException(f"archive trouble: {exc}") from None
    if done.version is None:
        click.echo(f"{day}: nothing to do: {done.note}.")
        return
    rows = ", ".join(f"{n} {kind}" for kind, n in done.rows.items() if n)
    click.echo(
        f"{day}: version {done.version}: {rows} rows of {done.devices} devices in {done.files} files "
        f"({done.bytes / 1e6:.1f} MB), {done.duplicates} duplicates dropped, verified, "
        f"in {done.seconds:.1f} s{'; ' + done.note if done.note else ''}."
    )


# --- carts -------------------------------------------------------------------------------


@main.command()
@click.option("--jobs", type=click.IntRange(min=1), help="Carts this process builds at once (CART_JOBS).")
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="Prometheus metrics port [CARTD_METRICS_PORT]."
)
@check_option
def cartd(jobs: int | None, metrics_port: int | None, check: bool) -> None:
    """Build carts from the Redis queue until SIGTERM; run as many of these as you like."""
    from app.carts.worker import Cartd

    settings = _settings(cart_jobs=jobs, cartd_metrics_port=metrics_port)
    if check:
        _check(settings, "cartd")
    logs.setup("cartd", settings)
    _serve(lambda: Cartd(settings))  # a bad ARCHIVE_URL or a busy port: one line, exit 1


@main.group()
def carts() -> None:
    """Carts (data bundles): list them, purge old ones, rebuild a broken one."""


def _with_carts(action: Any) -> Any:
    from app.carts.registry import CartRegistry
    from app.store import Store

    settings = _settings()

    async def go() -> Any:
        store = Store.from_url(settings.redis_url, max_connections=4)
        try:
            return await action(settings, CartRegistry(store.redis))
        finally:
            await store.close()

    return _run_async(go())


@carts.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
def carts_list(as_json: bool) -> None:
    """Every cart, least recently used first: status, size, owner, progress."""
    found = _with_carts(lambda settings, registry: registry.all())
    for cart in found:
        if as_json:
            click.echo(orjson.dumps(cart.public()).decode())
            continue
        status = f"{cart.status}:{cart.reason}" if cart.reason else cart.status
        size = f"{cart.size / 1e6:.1f} MB" if cart.size else "-"
        click.echo(
            f"{cart.id}  {status:<22} {size:>10}  {cart.owner:<20} {cart.progress()}  "
            f"last access {cart.public()['last_access']}"
        )
    if not as_json:
        click.echo(f"{len(found)} carts")


@carts.command("purge")
@click.option(
    "--older-than", "older_than", required=True, metavar="AGE", help="Idle this long: 60d, 12h, 30m."
)
@click.option("--dry-run", is_flag=True, help="List what would be removed, removing nothing.")
def carts_purge(older_than: str, dry_run: bool) -> None:
    """Remove finished carts not downloaded (or made) within AGE; building or downloading carts stay."""
    from app.carts.retention import evict_idle, parse_age

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    removed = _with_carts(lambda settings, registry: evict_idle(registry, settings, age, dry_run=dry_run))
    for cart in removed:
        click.echo(
            f"{'would remove' if dry_run else 'removed'} {cart.id}  {cart.status}  {cart.size / 1e6:.1f} MB"
        )
    click.echo(f"{len(removed)} carts {'would be ' if dry_run else ''}removed")


@carts.command("fixit")
@click.argument("cart_id")
def carts_fixit(cart_id: str) -> None:
    """Rebuild CART_ID from scratch, reusing staged files that still verify."""
    from app.carts import jobs
    from app.carts.build import tar_path
    from app.carts.model import BUILDING
    from app.carts.model import cart_id as parse_cart_id

    try:
        cid = parse_cart_id(cart_id)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="CART_ID") from None

    async def fix(settings: Settings, registry: Any) -> int:
        cart = await registry.get(cid)
        if cart is None:
            raise click.ClickException(f"no cart {cid}; `rainforest carts list` shows them.")
        if cart.status in BUILDING:
            raise click.ClickException(f"cart {cid} is {cart.status}; wait for it to finish, or DELETE it.")
        tar_path(settings, cid).unlink(missing_ok=True)
        attempt = int(await registry.requeue(cid, "waiting: rebuilding (carts fixit)"))
        queue = jobs.open_queue(settings)
        try:
            await jobs.submit(queue, settings, cid, attempt)
        finally:
            await queue.disconnect()
        return attempt

    attempt = _with_carts(fix)
    click.echo(
        f"cart {cid} queued for rebuild (attempt {attempt}); staged files that still verify are reused."
    )


# --- logs --------------------------------------------------------------------------------


@main.command("logs")
@click.argument("process", required=False, type=click.Choice(["pinger", "server", "rotate", "cartd", "sim"]))
@click.option("--level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Only lines at this level or above.")  # fmt: skip
@click.option("--device", metavar="CLOUD_ID", help="Only lines about this device.")
@click.option("--since", metavar="AGE", help="Only lines from the last AGE: 90s, 10m, 2h, 1d.")
@click.option(
    "--tree", is_flag=True, help="Each action (poll cycle, rotate pass, cart build) with its lines beneath."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines as they are written.")
def logs_cmd(
    process: str | None, level: str | None, device: str | None, since: str | None, tree: bool, follow: bool
) -> None:
    """Read the processes' JSON logs (DATA_DIR/logs/<process>/), filtered, as text or trees."""
    from rich.console import Console
    from rich.text import Text

    from app import logview
    from app.carts.retention import parse_age
    from app.devices import normalize_cloud_id

    settings = _settings()
    try:
        filters = logview.Filters(
            level=logview.LEVELS[level.upper()] if level else 0,
            device=normalize_cloud_id(device) if device else None,
            since=time.time() - parse_age(since) if since else None,
        )
    except (ValueError, ValidationError) as exc:
        raise click.BadParameter(str(exc)) from None
    chosen = [process] if process else list(logview.PROCESSES)
    paths = {p: logview.files(settings.logs_dir, p) for p in chosen}
    if not any(paths.values()):
        raise click.ClickException(f"no log files under {settings.logs_dir}/ for {', '.join(chosen)}.")
    console = Console(highlight=False, soft_wrap=True)
    colour = console.is_terminal

    def show(text: str, style: str) -> None:
        console.print(Text(text, style=style or ""))

    def emit(records: list[logview.Record]) -> None:
        top, loose = logview.actions(records) if tree else ([], records)
        for found in top:
            if any(filters.keep(r) for r in found.lines):
                for text, style in logview.tree_text(found, colour):
                    show(text, style)
        for record in loose:
            if filters.keep(record):
                show(logview.line(record), logview.style(record, colour))

    everything = sorted(
        (r for p in chosen for r in logview.read(paths[p])), key=lambda r: str(r.get("timestamp", ""))
    )
    emit(everything)
    if not follow:
        return
    live = [
        settings.logs_dir / p / f"{p}.log" for p in chosen if (settings.logs_dir / p / f"{p}.log").exists()
    ]
    pending: dict[str, list[logview.Record]] = {}
    try:
        for record in _follow_all(live):
            if tree and record.get("action_id"):
                group = pending.setdefault(str(record["action_id"]), [])
                group.append(record)
                if record.get("message") in ("poll cycle", "rotate pass", "cart build"):
                    emit(pending.pop(str(record["action_id"])))
                continue
            emit([record])
    except KeyboardInterrupt:
        return


def _follow_all(paths: list[Path]) -> Any:
    """New records from several live files, as they arrive (one thread per file)."""
    import queue
    import threading

    from app import logview

    inbox: queue.Queue[logview.Record] = queue.Queue()

    def pump(path: Path) -> None:
        for record in logview.follow(path, lambda: False):
            inbox.put(record)

    for path in paths:
        threading.Thread(target=pump, args=(path,), daemon=True).start()
    while True:
        yield inbox.get()


# --- status ------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def status(as_json: bool) -> None:
    """The whole system at a glance: processes alive, devices ok/failing, last archive pass, carts."""
    from app.status import gather, render

    settings = _settings()
    report = _run_async(gather(settings))
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else render(report))
    if not report["healthy"]:
        sys.exit(1)


# --- crawl ------------------------------------------------------------------------------------


@main.command("crawl")
@click.option(
    "--device", "devices", multiple=True, metavar="CLOUD_ID", help="Only these devices (repeatable)."
)
def crawl_cmd(devices: tuple[str, ...]) -> None:
    """Ask every active polled gateway what it is (model, firmware, meter, link) and keep the answer
    with its time; the pinger also does this every CRAWL_INTERVAL_S.

    Example: rainforest crawl --device 00ce69"""
    from app.crawl import crawl
    from app.devices import PUSH, normalize_cloud_id
    from app.eagle.client import Clients, new_session
    from app.eagle.gateway import gateway_for
    from app.store import Store

    settings = _settings()
    vault = _vault(settings)
    try:
        only = {normalize_cloud_id(d) for d in devices}
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None

    async def go() -> dict[str, int]:
        store = Store.from_url(settings.redis_url)
        session = new_session(50, settings.eagle_tls_verify)
        try:
            records = await store.load_devices(sorted(only) if only else sorted(await store.active_ids()))
            gateways = [
                gateway_for(
                    r, vault.decrypt(r.secret_token), settings.eagle_cloud_url, settings.eagle_tls_verify
                )
                for r in records
                if r.protocol != PUSH
            ]
            clients = Clients(session, settings.poll_timeout_s, settings.local_request_gap_s)
            return await crawl(store, clients, gateways, settings.crawl_history)
        finally:
            await session.close()
            await store.close()

    counts = _run_async(go())
    click.echo(f"crawled {counts['ok']} ok, {counts['failed']} failed, {counts['changed']} changed")


# --- completeness ---------------------------------------------------------------------------


@main.command()
@click.option(
    "--since", default="1d", show_default=True, metavar="AGE", help="Hours from the last AGE: 6h, 1d, 7d."
)
@click.option(
    "--below", type=click.FloatRange(0, 100), help="Only device-hours under this percent of polls ok."
)
@click.option("--device", metavar="CLOUD_ID", help="Only this device.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Print at most this many."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
def completeness(since: str, below: float | None, device: str | None, limit: int, as_json: bool) -> None:
    """The worst device-hours: polls scheduled and ok, distinct readings, longest gap, duplicates.

    Example: rainforest completeness --since 7d --below 95"""
    from app.carts.retention import parse_age
    from app.completeness import public_row
    from app.devices import normalize_cloud_id
    from app.store import Store

    settings = _settings()
    try:
        age = parse_age(since)
        only = normalize_cloud_id(device) if device else None
    except (ValueError, ValidationError) as exc:
        raise click.BadParameter(str(exc)) from None
    now = time.time()
    hours = list(range(int((now - age) // 3600), int(now // 3600) + 1))

    async def go() -> list[dict[str, Any]]:
        store = Store.from_url(settings.redis_url)
        try:
            rows = []
            for hour in hours:
                ids = [only] if only else await store.completeness_devices(hour)
                rows += await store.completeness(ids, [hour])
            return rows
        finally:
            await store.close()

    rows = [{"cloud_id": r["cloud_id"], **public_row(r)} for r in _run_async(go())]
    if below is not None:
        rows = [r for r in rows if r["percent"] is not None and r["percent"] < below]
    rows.sort(key=lambda r: (r["percent"] if r["percent"] is not None else 101.0, r["readings"]))
    for row in rows[:limit]:
        if as_json:
            click.echo(orjson.dumps(row).decode())
            continue
        pct = f"{row['percent']:.1f} %" if row["percent"] is not None else "unpolled"
        click.echo(
            f"{row['hour']}  {row['cloud_id']}  {pct:>8}  ok {row['ok']:>4}/{row['scheduled']:<4}  "
            f"readings {row['readings']:>4}  longest gap {row['longest_gap_s']:>6.0f} s"
            + (f"  duplicates {row['duplicates']}" if row["duplicates"] else "")
        )
    if not as_json:
        click.echo(f"{min(len(rows), limit)} of {len(rows)} device-hours in the last {since}")


# --- tokens --------------------------------------------------------------------------------


@main.group()
def tokens() -> None:
    """API bearer tokens: create (shown once), list, revoke. Stored only as SHA-256 digests."""


def _with_tokens(action: Any) -> Any:
    from app.store import Store
    from app.tokens import Tokens

    settings = _settings()

    async def go() -> Any:
        store = Store.from_url(settings.redis_url)
        try:
            return await action(Tokens(store))
        finally:
            await store.close()

    try:
        return _run_async(go())
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None


@tokens.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="May read (GET) but not change anything.")
def tokens_create(name: str, read_only: bool) -> None:
    """Create a token called NAME and print only the token (keep it: it is not stored)."""
    click.echo(_with_tokens(lambda t: t.create(name, read_only)))


@tokens.command("list")
def tokens_list() -> None:
    """List token names, scopes and creation times (never the tokens)."""
    found = _with_tokens(lambda t: t.list())
    for token in found:
        made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.created_at))
        click.echo(f"{token.name:<32} {token.scope:<6} {made}")
    click.echo(f"{len(found)} tokens")


@tokens.command("revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Revoke the token called NAME; requests using it fail at once."""
    if not _with_tokens(lambda t: t.revoke(name)):
        raise click.ClickException(f"no token named {name!r}; `rainforest tokens list` shows them.")
    click.echo(f"revoked {name}")


# --- simulator -----------------------------------------------------------------------------


@main.command()
@click.option("--devices", default=50, show_default=True, help="How many simulated gateways.")
@click.option(
    "--protocols",
    default="eagle100-cloud=100",
    show_default=True,
    metavar="MIX",
    help="Shares of each protocol, e.g. eagle100-cloud=60,eagle200-local=30,eagle100-local=10.",
)
@click.option("--port", default=9445, show_default=True, help="Port to serve every protocol on.")
@click.option(
    "--push-to",
    metavar="URL[,URL]",
    help="Make the push devices upload to these servers (e.g. http://127.0.0.1:8000), as gateways do.",
)
@click.option(
    "--push-timeout-s",
    default=5.0,
    show_default=True,
    help="How long an uploading gateway waits for an answer.",
)
@click.option(
    "--https-port",
    type=click.IntRange(1, 65535),
    help="Also serve over HTTPS here, with a self-signed certificate (as an EAGLE-3 does).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--seed", default=1, show_default=True, help="Same seed, same fleet and readings.")
@click.option(
    "--reading-interval-s",
    default=8.0,
    show_default=True,
    help="How often each meter makes a new reading.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="SPEC",
    help="KIND[=VALUE][@TARGET]: e.g. timeout@10%, http_503@00ab12, latency_ms=300. Repeatable.",
)
@click.option("--record", is_flag=True, help="Keep every distinct reading served (GET /control/served).")
@click.option(
    "--record-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also append every distinct reading served to this JSON-lines file.",
)
@click.option(
    "--export-users",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the fleet as a users file for `rainforest users import` and exit.",
)
@click.option(
    "--backfill-hours",
    type=click.IntRange(min=1, max=24 * 366),
    help="Write this many past hours of readings into DATA_DIR/logs (as the pinger would) and exit.",
)
@click.option(
    "--time-offset-s", default=0.0, help="Shift the simulated clock (e.g. to local noon for solar homes)."
)
@click.option(
    "--timeout-hold-s",
    default=30.0,
    show_default=True,
    help="How long a 'timeout' fault holds a request.",
)
def sim(
    devices: int,
    protocols: str,
    port: int,
    push_to: str | None,
    push_timeout_s: float,
    https_port: int | None,
    host: str,
    seed: int,
    reading_interval_s: float,
    faults: tuple[str, ...],
    record: bool,
    record_file: Path | None,
    export_users: Path | None,
    backfill_hours: int | None,
    time_offset_s: float,
    timeout_hold_s: float,
) -> None:
    """Serve a simulated EAGLE fleet: the relay, EAGLE-100s and EAGLE-200s on the local network,
    all on one port (plus /control/ endpoints)."""

    from app.sim.fleet import build_fleet, parse_mix
    from app.sim.server import Simulator

    if devices < 1 or reading_interval_s < 1:
        raise click.BadParameter("--devices must be at least 1 and --reading-interval-s at least 1 s.")
    try:
        fleet = build_fleet(devices, seed, parse_mix(protocols))
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--protocols") from None
    if export_users is not None:
        export_users.parent.mkdir(parents=True, exist_ok=True)
        address = f"{host}:{port}"  # local gateways are reached at the simulator itself
        export_users.write_bytes(b"".join(orjson.dumps(d.users_line(address)) + b"\n" for d in fleet))
        click.echo(f"wrote {devices} users to {export_users}")
        return
    settings = _settings()
    if backfill_hours is not None:
        from app.sim.backfill import backfill

        files, lines = backfill(
            settings, fleet, seed, hours=backfill_hours, now=time.time() + time_offset_s,
            reading_interval_s=reading_interval_s,
        )  # fmt: skip
        click.echo(f"wrote {lines} readings in {files} hourly files under {settings.logs_dir}")
        return
    logs.setup("sim", settings)
    simulator = Simulator(
        fleet,
        seed,
        reading_interval_s,
        record,
        record_file,
        timeout_hold_s,
        clock=lambda: time.time() + time_offset_s,
    )
    try:
        for spec in faults:
            simulator.faults.apply_spec(spec, fleet)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    log.info("simulator serving", extra={"devices": devices, "host": host, "port": port, "seed": seed})
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    if push_to:
        from app.sim.uploader import Uploaders

        urls = [u.strip() for u in push_to.split(",") if u.strip()]
        simulator.uploaders = Uploaders(
            fleet, seed, simulator.energy, urls, reading_interval_s, simulator.clock, push_timeout_s
        )
    asyncio.run(_serve_sim(simulator, host, port, https_port))
    simulator.close()


async def _serve_sim(simulator: Any, host: str, port: int, https_port: int | None) -> None:
    """Serve the simulator (and its HTTPS twin, and its uploading gateways) until SIGTERM."""
    import signal

    from aiohttp import web

    from app.sim.server import make_app
    from app.sim.tls import self_signed_context

    runner = web.AppRunner(make_app(simulator), access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    if https_port is not None:
        await web.TCPSite(runner, host, https_port, ssl_context=self_signed_context()).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    uploading = asyncio.create_task(simulator.uploaders.run(stop)) if simulator.uploaders else None
    try:
        await stop.wait()
    finally:
        if uploading is not None:
            await uploading
        await runner.cleanup()


# --- users ---------------------------------------------------------------------------------


@main.group()
def users() -> None:
    """Manage the device registry in Redis directly (works inside a container too)."""


@users.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def users_import(file: Path) -> None:
    """Create or update devices from FILE: one JSON object per line with cloud_id and either
    user_email and user_pw (eagle100-cloud, the default) or protocol, address and install_code
    (eagle100-local, eagle200-local); optional tls_verify, tls_fingerprint, active. Bad lines
    are reported by number and skipped; running it again changes nothing."""
    from app.store import Store
    from app.users import import_users

    settings = _settings()
    vault = _vault(settings)

    async def go() -> Any:
        store = Store.from_url(settings.redis_url)
        try:
            return await import_users(file, store, vault)
        finally:
            await store.close()

    report = _run_async(go())
    for number, message in report.problems:
        click.echo(f"{file}:{number}: {message}", err=True)
    c = report.counts
    click.echo(
        f"created {c['created']}, updated {c['updated']}, unchanged {c['unchanged']}, failed {report.failed}"
    )
    for cloud_id, key in report.push_keys:
        click.echo(f"push key for {cloud_id} (shown once; `rainforest users push-url {cloud_id}`): {key}")
    if report.failed:
        sys.exit(1)


@users.command("push-url")
@click.argument("cloud_id")
@click.option(
    "--base", metavar="URL", help="How gateways reach this server, e.g. https://logger.example.org."
)
@click.option("--new-key", is_flag=True, help="Make a new push key (the old one stops working) and show it.")
def users_push_url(cloud_id: str, base: str | None, new_key: bool) -> None:
    """Print what to type into a push device's uploader page (EAGLE-100 and EAGLE-200).

    Example: rainforest users push-url 00ce69 --base https://logger.example.org --new-key"""
    from app.devices import PUSH, DeviceInput, new_push_key, normalize_cloud_id
    from app.push.setup import uploader_settings
    from app.store import Store

    settings = _settings()
    try:
        cid = normalize_cloud_id(cloud_id)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="CLOUD_ID") from None

    async def go() -> str | None:
        store = Store.from_url(settings.redis_url)
        try:
            record = await store.get_device(cid)
            if record is None or record.protocol != PUSH:
                raise click.ClickException(
                    f'{cid} is not a push device; register it with protocol "push" (rainforest users import).'
                )
            if not new_key:
                return None
            key = new_push_key()
            inp = DeviceInput(cid, record.user_email, protocol=PUSH, active=record.active, push_key=key)
            await store.upsert_device(inp, _vault(settings))
            return key
        finally:
            await store.close()

    key = _run_async(go())
    click.echo(uploader_settings(cid, base or f"http://{settings.server_host}:{settings.server_port}", key))


@users.command("list")
@click.option("--active/--inactive", default=None, help="Only active (or only inactive) devices.")
@click.option(
    "--status",
    type=click.Choice(["ok", "failing", "never"]),
    help="Only devices in this poll status.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
def users_list(active: bool | None, status: str | None, as_json: bool) -> None:
    """Print the fleet with each device's poll status and counters (passwords never shown)."""
    from app.store import Store

    settings = _settings()

    async def go() -> list[Any]:
        store = Store.from_url(settings.redis_url)
        try:
            return await store.all_devices()
        finally:
            await store.close()

    records = [
        r
        for r in _run_async(go())
        if (active is None or r.active == active) and (status is None or r.status == status)
    ]
    if as_json:
        for r in records:
            click.echo(orjson.dumps(r.public()).decode())
        return
    click.echo(
        f"{'cloud_id':<8} {'protocol':<14} {'active':<6} {'status':<7} {'events':>8}  {'failures':>8}  "
        f"{'email':<32} last_error"
    )
    for r in records:
        click.echo(
            f"{r.cloud_id:<8} {r.protocol:<14} {'yes' if r.active else 'no':<6} {r.status:<7} "
            f"{r.total_events_logged:>8}  {r.consecutive_failures:>8}  {r.user_email:<32} {r.last_error}"
        )
    click.echo(f"{len(records)} devices")


def _vault(settings: Settings) -> Vault:
    try:
        return Vault(settings.secret_key)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
