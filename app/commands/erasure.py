"""`rainforest participants withdraw` and `rainforest participants erasure-report` (app.erasure)."""

from __future__ import annotations

import getpass
import socket
from typing import Any

import click
import orjson

from app.commands.common import with_store
from app.commands.studies import participants


def _by() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (command line)"


@participants.command("withdraw")
@click.argument("study_id")
@click.argument("participant_id")
@click.option("--erase", is_flag=True, help="Erase every reading of the household, everywhere.")
@click.option("--yes", is_flag=True, help="Do not ask before erasing.")
def participants_withdraw(study_id: str, participant_id: str, erase: bool, yes: bool) -> None:
    """Withdraw PARTICIPANT_ID from STUDY_ID: it is no longer polled and its pushes are refused, at
    once. With --erase, its readings are erased from the archive, the compacted days, carts, every
    host's hourly files and Redis; the study keeps a tombstone (docs/studies.md). Run again, it
    finishes an erasure that stopped half-way.

    Example: rainforest participants withdraw heat-pump-2027 hp-001 --erase
    """
    from app.archive.factory import open_archive
    from app.erasure.run import Erasure

    if erase and not yes:
        click.confirm(
            f"Erase every reading of {participant_id} in {study_id}? This cannot be undone", abort=True
        )

    def said(step: str, counts: dict[str, Any]) -> None:
        click.echo(f"  {step:<8} {orjson.dumps(counts).decode()}")

    async def go(store: Any, settings: Any) -> Any:
        erasure = Erasure(settings, store, open_archive(settings), on_step=said)
        return await erasure.withdraw(study_id, participant_id, _by(), erase)

    if erase:
        click.echo(f"erasing {participant_id} of {study_id}, place by place:")
    tomb = with_store(go)
    if not erase:
        click.echo(f"{participant_id} withdrawn from {study_id}: no longer polled; its readings are kept.")
        return
    click.echo(f"{participant_id} withdrawn from {study_id}: {tomb.state}.")
    if tomb.left():
        click.echo(f"  still to do: {', '.join(tomb.left())} (another runner holds it; run again later)")
    click.echo(
        f"`rainforest participants erasure-report {study_id} {participant_id}` checks every place again."
    )


@participants.command("erasure-report")
@click.argument("study_id")
@click.argument("participant_id")
def participants_erasure_report(study_id: str, participant_id: str) -> None:
    """The receipt of an erasure: its tombstone, and every place looked at again now (archive,
    compacted days, carts, this host's files, Redis), as JSON; exits 1 when anything is left.

    Example: rainforest participants erasure-report heat-pump-2027 hp-001
    """
    from app.archive.factory import open_archive
    from app.erasure.report import Recheck

    async def go(store: Any, settings: Any) -> Any:
        tomb = await store.erasures.get(study_id, participant_id)
        if tomb is None:
            raise click.ClickException(f"no erasure of {participant_id} in {study_id} is recorded.")
        if not tomb.erase:
            return {"tombstone": tomb.public(), "erased": False, "left": "withdrawn without erasure"}
        return await Recheck(settings, store, open_archive(settings), tomb).run()

    found = with_store(go)
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    if not found["erased"]:
        raise SystemExit(1)
