"""Seeing how it runs: status, logs, completeness, and crawling the gateways."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from app.commands.common import run_async, settings_from_env, vault_for
from app.errors import ValidationError
from app.hours import Hour, hours_between


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def status(as_json: bool) -> None:
    """The whole system at a glance: processes alive, devices ok/failing, last archive pass, carts.

    Example: rainforest status --json
    """
    from app.status import gather, render

    settings = settings_from_env()
    report = run_async(gather(settings))
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else render(report))
    if not report["healthy"]:
        sys.exit(1)


@click.command("logs")
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
    """Read the processes' JSON logs (DATA_DIR/logs/<process>/), filtered, as text or trees.

    Example: rainforest logs pinger --tree --since 10m
    """
    from rich.console import Console
    from rich.text import Text

    from app import logview
    from app.carts.retention import parse_age
    from app.devices import normalize_cloud_id

    settings = settings_from_env()
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


@click.command()
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

    settings = settings_from_env()
    try:
        age = parse_age(since)
        only = normalize_cloud_id(device) if device else None
    except (ValueError, ValidationError) as exc:
        raise click.BadParameter(str(exc)) from None
    now = time.time()
    hours = [h.number for h in hours_between(now - age, Hour.at(now).end)]

    async def go() -> tuple[list[dict[str, Any]], dict[str, float | None]]:
        store = Store.for_settings(settings)
        try:
            rows = []
            for hour in hours:
                ids = [only] if only else await store.completeness.completeness_devices(hour)
                rows += await store.completeness.completeness(ids, [hour])
            records = await store.devices.load_devices(sorted({r["cloud_id"] for r in rows}))
            return rows, {r.cloud_id: r.clock_offset_s for r in records}
        finally:
            await store.close()

    found, clocks = run_async(go())
    rows = [
        {"cloud_id": r["cloud_id"], **public_row(r), "clock_offset_s": clocks.get(r["cloud_id"])}
        for r in found
    ]
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
            + clock_words(row["clock_offset_s"])
        )
    if not as_json:
        click.echo(f"{min(len(rows), limit)} of {len(rows)} device-hours in the last {since}")


@click.command("crawl")
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

    settings = settings_from_env()
    vault = vault_for(settings)
    try:
        only = {normalize_cloud_id(d) for d in devices}
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None

    async def go() -> dict[str, int]:
        store = Store.for_settings(settings)
        session = new_session(50, settings.eagle_tls_verify)
        try:
            records = await store.devices.load_devices(
                sorted(only) if only else sorted(await store.devices.active_ids())
            )
            gateways = [
                gateway_for(
                    r, vault.decrypt(r.encrypted_secret), settings.eagle_cloud_url, settings.eagle_tls_verify
                )
                for r in records
                if r.protocol != PUSH
            ]
            clients = Clients(session, settings.poll_timeout_s, settings.local_request_gap_s)
            return await crawl(store, clients, gateways, settings.crawl_history)
        finally:
            await session.close()
            await store.close()

    counts = run_async(go())
    click.echo(f"crawled {counts['ok']} ok, {counts['failed']} failed, {counts['changed']} changed")


@click.command("rescue")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--keep", is_flag=True, help="Keep the rescue files after putting their lines back.")
def rescue_cmd(files: tuple[Path, ...], keep: bool) -> None:
    """Put readings a pinger saved to DATA_DIR/unwritten-*.jl (its disk failed until it stopped)
    back into their hourly files, each once, filed as the pinger would have (history lines by
    their own time); then remove the rescue file. Running it again writes nothing twice.

    Example: rainforest rescue data/unwritten-1796600000-4242.jl
    """
    from app.rescue import put_back

    settings = settings_from_env()
    for path in files:
        counts = put_back(settings, path)
        click.echo(
            f"{path}: {counts['written']} lines put back, {counts['already']} already there, "
            f"{counts['unreadable']} unreadable."
        )
        if not keep and not counts["unreadable"]:
            path.unlink()


def clock_words(offset_s: float | None) -> str:
    """A gateway clock a minute or more off ours, as the completeness table says it."""
    if offset_s is None or abs(offset_s) < 60:
        return ""
    return f"  gateway clock {abs(offset_s) / 60:.0f} min {'behind' if offset_s > 0 else 'ahead'}"
