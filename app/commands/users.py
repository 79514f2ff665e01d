"""The device registry: import, list, and a push device's uploader settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from app.commands.common import CLOUD_ID, run_async, settings_from_env, vault_for
from app.errors import ValidationError


@click.group()
def users() -> None:
    """Manage the device registry in Redis directly (works inside a container too).

    Example: rainforest users list --status failing
    """


@users.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--check", "then_check", is_flag=True, help="Then ask each polled gateway once (as `users check`)."
)
def users_import(file: Path, then_check: bool) -> None:
    """Create or update devices from FILE: one JSON object per line with cloud_id and either
    user_email and user_pw (eagle100-cloud, the default) or protocol, address and install_code
    (eagle100-local, eagle200-local); optional tls_verify, tls_fingerprint, active. Bad lines
    are reported by number and skipped; running it again changes nothing.

    Example: rainforest users import fleet.jl
    """
    from app.devices_file import import_users
    from app.eagle.reach import ReachPolicy
    from app.store import Store

    settings = settings_from_env()
    vault = vault_for(settings)

    async def go() -> Any:
        store = Store.for_settings(settings)
        try:
            found = await import_users(file, store, vault, ReachPolicy.from_settings(settings))
            if then_check:
                for checked in await check_devices(store, settings, vault, found.saved):
                    click.echo(checked.sentence)
            return found
        finally:
            await store.close()

    report = run_async(go())
    for number, message in report.problems:
        click.echo(f"{file}:{number}: {message}", err=True)
    c = report.counts
    enrolled = f", enrolled {c['enrolled']}" if c["enrolled"] else ""
    click.echo(
        f"created {c['created']}, updated {c['updated']}, unchanged {c['unchanged']}, failed {report.failed}"
        + enrolled
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

    settings = settings_from_env()
    try:
        cid = normalize_cloud_id(cloud_id)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="CLOUD_ID") from None

    async def go() -> str | None:
        store = Store.for_settings(settings)
        try:
            record = await store.devices.get_device(cid)
            if record is None or record.protocol != PUSH:
                raise click.ClickException(
                    f'{cid} is not a push device; register it with protocol "push" (rainforest users import).'
                )
            if not new_key:
                return None
            key = new_push_key()
            inp = DeviceInput(cid, record.user_email, protocol=PUSH, active=record.active, push_key=key)
            await store.devices.upsert_device(inp, vault_for(settings))
            return key
        finally:
            await store.close()

    key = run_async(go())
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
    """Print the fleet with each device's poll status and counters (passwords never shown).

    Example: rainforest users list --inactive --json
    """
    from app.store import Store

    settings = settings_from_env()

    async def go() -> list[Any]:
        store = Store.for_settings(settings)
        try:
            return await store.devices.all_devices()
        finally:
            await store.close()

    records = [
        r
        for r in run_async(go())
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


@users.command("check")
@click.argument("cid", metavar="CLOUD_ID", type=CLOUD_ID)
@click.option("--json", "as_json", is_flag=True, help="What was found as JSON, beside the sentence.")
def users_check(cid: str, as_json: bool) -> None:
    """Ask the gateway CLOUD_ID once with its stored credentials and say what came back: reachable,
    credentials accepted, model and firmware, which API, the meter and its link, a reading.
    Exits 1 when it could not be read.

    Example: rainforest users check 00ce69
    """
    from app.store import Store

    settings = settings_from_env()
    vault = vault_for(settings)

    async def go() -> Any:
        store = Store.for_settings(settings)
        try:
            if await store.devices.get_device(cid) is None:
                raise click.ClickException(
                    f"no device {cid} is registered; `rainforest users list` shows them."
                )
            (checked,) = await check_devices(store, settings, vault, [cid])
            return checked
        finally:
            await store.close()

    checked = run_async(go())
    click.echo(checked.sentence)
    if as_json:
        click.echo(orjson.dumps(checked.public()).decode())
    if not checked.ok:
        raise SystemExit(1)


async def check_devices(store: Any, settings: Any, vault: Any, cloud_ids: list[str]) -> list[Any]:
    """Each polled gateway asked once (app.check), eight at a time; an API a check found is kept."""
    import asyncio

    from app.check import check
    from app.devices import PUSH
    from app.eagle.client import Clients, new_session

    records = [
        r for r in await store.devices.load_devices(cloud_ids) if r.protocol != PUSH or len(cloud_ids) == 1
    ]
    session = new_session(16, settings.eagle_tls_verify)
    clients = Clients(session, settings.poll_timeout_s * 3, settings.local_request_gap_s)
    slots = asyncio.Semaphore(8)

    async def one(record: Any) -> Any:
        async with slots:
            secret = vault.decrypt(record.encrypted_secret) if record.encrypted_secret else ""
            checked = await check(record, secret, clients, settings)
            if checked.found.get("detected_api"):  # no REST API, and cgi_manager answered: kept
                await store.devices.set_api(record.cloud_id, checked.found["detected_api"])
            return checked

    try:
        return list(await asyncio.gather(*(one(r) for r in records)))
    finally:
        await session.close()
