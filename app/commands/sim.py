"""The simulated EAGLE fleet."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import click
import orjson

from app import logs
from app.commands.common import settings_from_env
from app.errors import ValidationError

log = logging.getLogger("rainforest")


@click.command()
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
    "--backfill-before",
    type=float,
    default=None,
    help="With --backfill-hours: the hours before this Unix time instead of now (a closed day's last hours).",
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
    backfill_before: float | None,
    time_offset_s: float,
    timeout_hold_s: float,
) -> None:
    """Serve a simulated EAGLE fleet: the relay, EAGLE-100s and EAGLE-200s on the local network,
    all on one port (plus /control/ endpoints).

    Example: rainforest sim --devices 200 --protocols eagle100-cloud=60,eagle200-local=40
    """

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
    settings = settings_from_env()
    if backfill_hours is not None:
        from app.sim.backfill import backfill

        files, lines = backfill(
            settings, fleet, seed, hours=backfill_hours,
            now=(backfill_before if backfill_before is not None else time.time()) + time_offset_s,
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
            fleet,
            seed,
            simulator.energy,
            urls,
            reading_interval_s,
            simulator.clock,
            push_timeout_s,
            simulator.faults,
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
