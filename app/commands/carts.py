"""Carts on disk: list them, purge old ones, rebuild one; and compacting days for researchers."""

from __future__ import annotations

from typing import Any

import click
import orjson

from app import logs
from app.commands.common import run_async, settings_from_env, with_store
from app.errors import ArchiveError, ConfigError, ValidationError
from app.settings import Settings


@click.group()
def carts() -> None:
    """Carts (data bundles): list them, purge old ones, rebuild a broken one.

    Example: rainforest carts list
    """


def _with_carts(action: Any) -> Any:
    from app.carts.registry import CartRegistry
    from app.store import Store

    settings = settings_from_env()

    async def go() -> Any:
        store = Store.for_settings(settings, max_connections=4)
        try:
            return await action(settings, CartRegistry(store.redis))
        finally:
            await store.close()

    return run_async(go())


@carts.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
def carts_list(as_json: bool) -> None:
    """Every cart, least recently used first: status, size, owner, progress.

    Example: rainforest carts list --json
    """
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
    """Remove finished carts not downloaded (or made) within AGE; building or downloading carts stay.

    Example: rainforest carts purge --older-than 60d --dry-run
    """
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
    """Rebuild CART_ID from scratch, reusing staged files that still verify.

    Example: rainforest carts fixit 6f1c0e2a-9b3d-4e55-8a1f-2c3d4e5f6a7b
    """
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


@click.command()
@click.option("--day", "day", required=True, metavar="YYYY-MM-DD", help="The UTC day to compact.")
@click.option("--force", is_flag=True, help="Even if this host still has hourly files of that day.")
def compact(day: str, force: bool) -> None:
    """Write a closed, shipped UTC day as Parquet in the archive (rainforest-parquet/kind=/date=),
    beside its hourly objects; again after a late part; nothing when already done.

    Example: rainforest compact --day 2026-11-30"""
    from app.archive.factory import open_archive
    from app.research.compact import Compactor

    settings = settings_from_env()
    logs.setup("rotate", settings)
    try:
        archive = open_archive(settings)
        marks = with_store(lambda store, s: store.erasures.marks(s.secret_key))  # erased: never back
        done = Compactor(settings, archive, marks=marks).compact(day, check=not force)
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
