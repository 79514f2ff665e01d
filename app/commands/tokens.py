"""API bearer tokens: create (shown once), list, revoke."""

from __future__ import annotations

import time
from typing import Any

import click

from app.commands.common import run_async, settings_from_env
from app.errors import ValidationError


@click.group()
def tokens() -> None:
    """API bearer tokens: create (shown once), list, revoke. Stored only as SHA-256 digests.

    Example: rainforest tokens create ops-alice
    """


def _with_tokens(action: Any) -> Any:
    from app.store import Store
    from app.tokens import Tokens

    settings = settings_from_env()

    async def go() -> Any:
        store = Store.for_settings(settings)
        try:
            return await action(Tokens(store))
        finally:
            await store.close()

    try:
        return run_async(go())
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None


@tokens.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="May read (GET) but not change anything.")
@click.option("--study", default="", help="See only this study's households (a researcher's token).")
def tokens_create(name: str, read_only: bool, study: str) -> None:
    """Create a token called NAME and print only the token (keep it: it is not stored).

    Example: rainforest tokens create grafana --read-only   (or --study heat-pump-2027 for a researcher)
    """
    if study:
        from app.studies import study_id

        try:
            study_id(study)
        except ValidationError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(_with_tokens(lambda t: t.create(name, read_only, study)))


@tokens.command("list")
def tokens_list() -> None:
    """List token names, scopes and creation times (never the tokens).

    Example: rainforest tokens list
    """
    found = _with_tokens(lambda t: t.list())
    for token in found:
        made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.created_at))
        scope = f"{token.scope} in {token.study}" if token.study else token.scope
        click.echo(f"{token.name:<32} {scope:<24} {made}")
    click.echo(f"{len(found)} tokens")


@tokens.command("revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Revoke the token called NAME; requests using it fail at once.

    Example: rainforest tokens revoke ops-alice
    """
    if not _with_tokens(lambda t: t.revoke(name)):
        raise click.ClickException(f"no token named {name!r}; `rainforest tokens list` shows them.")
    click.echo(f"revoked {name}")
