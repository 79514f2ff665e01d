"""Past hours of readings for the simulated fleet, written as the pinger would have written them.

`make demo` uses it so rotate has closed hours to ship at once, and the carts benchmark uses it
for a realistic device-month. Each poll's reply is rendered by the simulator and decoded by the
pinger's own parser, so the lines are the real format, byte for byte.
"""

from __future__ import annotations

import orjson

from app.eagle.parse import parse_demand
from app.eagle.readings import Y2K_EPOCH, MeterDemand
from app.hourly import HourlyWriter, reading_path
from app.hours import hour_key
from app.settings import Settings
from app.sim.eagle100 import demand_fields
from app.sim.fleet import SimDevice
from app.sim.model import reading_at


def backfill(
    settings: Settings,
    fleet: list[SimDevice],
    seed: int,
    *,
    hours: int,
    now: float,
    reading_interval_s: float = 8.0,
) -> tuple[int, int]:
    """Write the `hours` whole UTC hours before `now`'s hour; returns (files, lines).

    A device-hour whose file already exists is left alone, and a second run writes the same
    bytes, so running it again never doubles a reading.
    """
    interval = settings.poll_interval_s
    end = int(now // 3600) * 3600
    writer = HourlyWriter(settings.logs_dir, settings.file_prefix, 64)
    files = lines = 0
    try:
        for device in fleet:
            for hour_start in range(end - hours * 3600, end, 3600):
                hour = hour_key(hour_start)
                if reading_path(settings.logs_dir, settings.file_prefix, device.cloud_id, hour).exists():
                    continue
                files += 1
                lines += _device_hour(writer, device, seed, hour_start, interval, reading_interval_s)
    finally:
        HourlyWriter.sync(writer.close())
    return files, lines


def _device_hour(
    writer: HourlyWriter, device: SimDevice, seed: int, start: int, interval: float, reading_interval_s: float
) -> int:
    written = 0
    last = None
    polled = start + device.phase_fraction * interval
    while polled < start + 3600:
        reading = reading_at(device, seed, polled, reading_interval_s)
        if reading.number != last:
            last = reading.number
            if device.protocol == "eagle200-local":
                device_time = reading.timestamp + Y2K_EPOCH
                meter = MeterDemand(device_time, reading.demand_w / 1000, device.meter_mac_id)
                record = meter.record(device.cloud_id, round(polled, 3), device.protocol)
            else:
                body = "".join(f"<{k}>{v}</{k}>" for k, v in demand_fields(device, reading).items())
                demand = parse_demand(f"<InstantaneousDemand>{body}</InstantaneousDemand>".encode())
                record = demand.record(device.cloud_id, round(polled, 3), device.protocol)
            writer.append(device.cloud_id, polled, orjson.dumps(record) + b"\n")
            written += 1
        polled += interval
    return written
