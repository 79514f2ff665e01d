"""What every `rainforest` subcommand shares: settings, one-line errors, running a process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from app.credentials import Vault
from app.errors import ConfigError, RainforestError
from app.settings import Settings

if TYPE_CHECKING:
    from app.store import Store

T = TypeVar("T")

check_option = click.option(
    "--check", is_flag=True, help="Exit 0 if this process is alive on this host (heartbeat), else 1."
)


def settings_from_env(**overrides: Any) -> Settings:
    """Settings from the environment and .env, with a command's flags on top; one line if bad."""
    try:
        settings = Settings.from_env()
        changes = {k: v for k, v in overrides.items() if v is not None}
        return settings.replace(**changes) if changes else settings
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def check_alive(settings: Settings, kind: str) -> None:
    """`--check`: one line, exit 0 when a `kind` process on this host has a fresh heartbeat, else 1."""
    from app.heartbeat import check

    ok, message = asyncio.run(check(settings, kind))
    click.echo(message, err=not ok)
    sys.exit(0 if ok else 1)


def serve(build: Any) -> None:
    """Run a long-lived process until SIGTERM; a port it cannot listen on is one line, exit 1."""
    from app import lifecycle

    try:
        lifecycle.run(build)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def run_async(coro: Any) -> Any:
    """Run a coroutine; a RainforestError becomes the command's one-line error."""
    try:
        return asyncio.run(coro)
    except RainforestError as exc:
        raise click.ClickException(str(exc)) from None


def with_store(action: Callable[[Store, Settings], Awaitable[T]]) -> T:
    """Run `action` with a Store on REDIS_URL (closed after) and the settings; a RainforestError
    (a refused input, Redis away) becomes the command's one-line error."""
    from app.store import Store

    settings = settings_from_env()

    async def go() -> T:
        store = Store.for_settings(settings)
        try:
            return await action(store, settings)
        finally:
            await store.close()

    return cast(T, run_async(go()))


def vault_for(settings: Settings) -> Vault:
    """The device-secret vault; a missing or bad SECRET_KEY is one line."""
    try:
        return Vault(settings.secret_key)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


class CloudId(click.ParamType[str, str]):
    """A CLOUD_ID argument: 6 hex digits, normalized; anything else is click's one-line usage error."""

    name = "cloud_id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from app.devices import normalize_cloud_id
        from app.errors import ValidationError

        try:
            return normalize_cloud_id(value)
        except ValidationError as exc:
            self.fail(str(exc), param, ctx)


CLOUD_ID = CloudId()
