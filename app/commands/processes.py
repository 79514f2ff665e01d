"""The long-running processes: server, pinger, rotate, cartd (and the key they need)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from app import logs
from app.commands.common import check_alive, check_option, run_async, serve, settings_from_env, vault_for
from app.credentials import new_key
from app.errors import ConfigError, ValidationError
from app.settings import Settings


@click.command("secret-key")
def secret_key() -> None:
    """Print a new SECRET_KEY (a Fernet key) for .env.

    Example: echo "SECRET_KEY=$(rainforest secret-key)" >> .env
    """
    click.echo(new_key())


@click.command()
@click.option("--host", help="Address to listen on, nginx in front [SERVER_HOST, 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on [SERVER_PORT, 8000].")
@check_option
def server(host: str | None, port: int | None, check: bool) -> None:
    """Serve the HTTP API (users, events, health, metrics, OpenAPI) until SIGTERM.

    Example: rainforest server --host 127.0.0.1 --port 8000
    """
    from app.web.server import ApiServer

    settings = settings_from_env(server_host=host, server_port=port)
    if check:
        check_alive(settings, "server")
    logs.setup("server", settings)
    vault_for(settings)
    serve(lambda: ApiServer(settings))


@click.command()
@click.option("--interval-s", type=float, help="Override POLL_INTERVAL_S for this run.")
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="Prometheus metrics port [PINGER_METRICS_PORT]."
)
@check_option
def pinger(interval_s: float | None, metrics_port: int | None, check: bool) -> None:
    """Poll every active device each interval and append readings to hourly .jl files.

    Runs until SIGTERM or Ctrl-C, then finishes in-flight polls, flushes and exits 0.

    Example: rainforest pinger --metrics-port 9101
    """
    from app.pinger import Pinger

    settings = settings_from_env(poll_interval_s=interval_s, pinger_metrics_port=metrics_port)
    if check:
        check_alive(settings, "pinger")
    logs.setup("pinger", settings)
    vault_for(settings)  # a missing or bad SECRET_KEY stops us here, with one line
    serve(lambda: Pinger.create(settings))


@click.command()
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

    Example: rainforest rotate --every 300   (or: rainforest rotate --dry-run)
    """
    from app.archive.factory import open_archive
    from app.hours import Hour
    from app.rotate.runner import RotateService, Rotator
    from app.rotate.scan import is_closed

    settings = settings_from_env(rotate_metrics_port=metrics_port)
    if check:
        check_alive(settings, "rotate")
    if hour is not None:
        if every_s is not None:
            raise click.UsageError("--hour is for a single pass; leave out --every.")
        try:
            start = Hour.parse(hour)
        except ValidationError as exc:
            raise click.BadParameter(str(exc), param_hint="--hour") from None
        if not is_closed(hour, time.time(), settings.rotate_grace_s):
            ready = time.strftime("%Y-%m-%d %H:%M", time.gmtime(start.end + settings.rotate_grace_s))
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
        serve(lambda: RotateService(settings, archive, every_s))
        return
    logs.setup("rotate", settings)
    report = run_async(_rotate_once(settings, archive, hour))
    click.echo(
        f"{report.stored} stored ({report.new_parts} as further parts), {report.already} already archived, "
        f"{report.busy} busy, {report.failed} failed, {report.left} left; "
        f"{report.source_bytes / 1e6:.1f} MB in, {report.stored_bytes / 1e6:.1f} MB stored in {archive.url}."
    )
    if report.error is not None:
        raise click.ClickException(f"archive trouble ({report.error.kind}): {report.error}")
    if not report.complete:  # busy, failed or untried files stay for the next pass
        sys.exit(1)


async def _rotate_once(settings: Settings, archive: Any, hour: str | None) -> Any:
    from app.rotate.runner import Rotator
    from app.store import Store

    store = Store.for_settings(settings, max_connections=4)
    try:
        return await Rotator(settings, archive, store, progress=sys.stderr.isatty()).pass_once(hour)
    finally:
        await store.close()


@click.command()
@click.option("--jobs", type=click.IntRange(min=1), help="Carts this process builds at once (CART_JOBS).")
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="Prometheus metrics port [CARTD_METRICS_PORT]."
)
@check_option
def cartd(jobs: int | None, metrics_port: int | None, check: bool) -> None:
    """Build carts from the Redis queue until SIGTERM; run as many of these as you like.

    Example: rainforest cartd --jobs 2
    """
    from app.carts.worker import Cartd

    settings = settings_from_env(cart_jobs=jobs, cartd_metrics_port=metrics_port)
    if check:
        check_alive(settings, "cartd")
    logs.setup("cartd", settings)
    serve(lambda: Cartd(settings))  # a bad ARCHIVE_URL or a busy port: one line, exit 1
