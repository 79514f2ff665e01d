"""`rainforest alerts`: list, acknowledge, snooze, evaluate now, and test every route."""

from __future__ import annotations

import time
from typing import Any

import click
import orjson

from app.commands.common import check_alive, check_option, settings_from_env, with_store


@click.group()
def alerts() -> None:
    """Alerts: which households are dark, why, and what to do (docs/alerts.md).

    Example: rainforest alerts list --state open
    """


@alerts.command("run")
@click.option(
    "--every", "every_s", type=click.FloatRange(min=0.1), help="Seconds between rounds [ALERT_EVAL_S]."
)
@check_option
def alerts_run(every_s: float | None, check: bool) -> None:
    """Evaluate alerts and send notifications until SIGTERM (run one or more, beside the servers).

    Example: rainforest alerts run --every 15
    """
    from app import logs
    from app.alerts.service import AlertDaemon
    from app.commands.common import serve

    settings = settings_from_env(alert_eval_s=every_s)
    if check:
        check_alive(settings, "alerts")
    if not settings.alert_eval_s:
        raise click.ClickException("ALERT_EVAL_S is 0: give --every or a positive ALERT_EVAL_S.")
    logs.setup("alerts", settings)
    serve(lambda: AlertDaemon(settings))


@alerts.command("list")
@click.option("--state", type=click.Choice(["open", "acknowledged", "resolved"]), help="Only these.")
@click.option("--cause", help="Only this cause (a health state such as frozen).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def alerts_list(state: str | None, cause: str | None, limit: int, as_json: bool) -> None:
    """The latest alerts, newest first: device, cause, since when, state, what to do.

    Example: rainforest alerts list --state open --cause frozen
    """
    from app.alerts.listing import listing

    found = with_store(lambda store, _: listing(store, state, cause, limit))
    for a in found:
        if as_json:
            click.echo(orjson.dumps(a).decode())
            continue
        since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(a["since"])) if a["since"] else "?"
        ack = f" ack by {a['acknowledged']['by']}" if a["acknowledged"] else ""
        click.echo(f"{a['id']:<24} {a['cloud_id']} {a['cause']:<13} since {since} UTC  {a['state']}{ack}")
        if a["state"] != "resolved":
            click.echo(f"    {a['action']}")
    if not as_json:
        click.echo(f"{len(found)} alerts")


@alerts.command("ack")
@click.argument("alert_id")
@click.option("--note", default="", help="What you did or found.")
@click.option("--by", default="cli", show_default=True, help="Who acknowledges it.")
def alerts_ack(alert_id: str, note: str, by: str) -> None:
    """Acknowledge ALERT_ID (from `alerts list`): who, when, and a note.

    Example: rainforest alerts ack 00ab12-1796620000 --by alice --note "household away until Monday"
    """
    if not with_store(lambda store, _: store.alerts.acknowledge(alert_id, by, time.time(), note[:500])):
        raise click.ClickException(f"no alert {alert_id!r}; `rainforest alerts list` shows them.")
    click.echo(f"acknowledged {alert_id}")


@alerts.command("snooze")
@click.argument("cloud_id")
@click.argument("until", required=False)
@click.option("--off", is_flag=True, help="End the snooze.")
def alerts_snooze(cloud_id: str, until: str | None, off: bool) -> None:
    """Open no alert for CLOUD_ID until UNTIL (a date, the end of that UTC day), or --off.

    Example: rainforest alerts snooze 00ab12 2027-01-31
    """
    from app.devices import normalize_cloud_id
    from app.errors import ValidationError
    from app.web.alerts import parse_until
    from app.web.base import ApiError

    try:
        cid = normalize_cloud_id(cloud_id)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    if off:
        with_store(lambda store, _: store.alerts.unsnooze(cid))
        click.echo(f"{cid} is no longer snoozed")
        return
    try:
        moment = parse_until(until)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    with_store(lambda store, _: store.alerts.snooze(cid, moment))
    click.echo(f"{cid} opens no alert until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(moment))}")


@alerts.command("evaluate")
def alerts_evaluate() -> None:
    """Evaluate every device now (the servers do it every ALERT_EVAL_S) and send what is queued.

    Example: rainforest alerts evaluate
    """
    from app.alerts.service import AlertService

    async def go(store: Any, settings: Any) -> Any:
        service = AlertService(store, settings)
        summary = await service.evaluator.round()
        await service.sender.round()
        return summary

    s = with_store(go)
    click.echo(f"{s.devices} devices, {s.dark} dark; opened {s.opened}, resolved {s.resolved}, "
               f"incidents opened {s.incidents_opened}, over {s.incidents_resolved}")  # fmt: skip


@alerts.command("test")
def alerts_test() -> None:
    """Send a test message through every configured route now, and say how each went.

    Example: rainforest alerts test
    """
    from app.alerts.service import AlertService

    outcome = with_store(lambda store, settings: AlertService(store, settings).test())
    if not outcome:
        raise click.ClickException(
            "no route is configured: set SMTP_URL and ALERT_EMAIL_TO or ALERT_APPRISE_URLS, "
            "or give a study routes."
        )
    for route, result in outcome.items():
        click.echo(f"{route:<16} {result}")
    if any(result != "delivered" for result in outcome.values()):
        raise SystemExit(1)
