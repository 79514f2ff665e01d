"""The simulator's HTTP server: the relay endpoint plus a small control API.

POST /cgi-bin/post_manager     the EAGLE-100 REST protocol (Cloud-ID / User / Password)
GET|PUT|DELETE /control/faults  show, replace or clear faults
GET  /control/users.jl          the fleet as a users file for `rainforest users import`
GET  /control/served            every distinct reading served so far (when recording)
GET  /control/stats             request counts by outcome
GET  /healthz
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson
from aiohttp import web

from app.errors import ValidationError
from app.sim.faults import FaultBook
from app.sim.fleet import SimDevice
from app.sim.model import SimReading, reading_at, summation_wh

_NAME_RE = re.compile(rb"<name>\s*([A-Za-z_]+)\s*</name>", re.IGNORECASE)
_JSON_RE = re.compile(rb"<format>\s*json\s*</format>", re.IGNORECASE)
HTML = "text/html"


class Simulator:
    """State behind the server: the fleet, its faults, and the served-readings record."""

    def __init__(
        self,
        fleet: list[SimDevice],
        seed: int,
        reading_interval_s: float = 8.0,
        record: bool = False,
        record_file: Path | None = None,
        timeout_hold_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.by_id = {d.cloud_id: d for d in fleet}
        self.seed = seed
        self.reading_interval_s = reading_interval_s
        self.faults = FaultBook(seed)
        self.stats: Counter[str] = Counter()
        self.recording = record or record_file is not None
        self.served: list[bytes] = []
        self._last_served: dict[str, int] = {}
        self._record_out: IO[bytes] | None = record_file.open("ab") if record_file else None
        self.timeout_hold_s = timeout_hold_s
        self.clock = clock

    def close(self) -> None:
        if self._record_out:
            self._record_out.close()

    def _record(self, device: SimDevice, reading: SimReading) -> None:
        if self._last_served.get(device.cloud_id) == reading.timestamp:
            return
        self._last_served[device.cloud_id] = reading.timestamp
        line = orjson.dumps(
            {
                "cloud_id": device.cloud_id,
                "TimeStamp": reading.timestamp,
                "demand_w": reading.demand_w,
            }
        )
        self.served.append(line)
        if self._record_out:
            self._record_out.write(line + b"\n")
            self._record_out.flush()

    # --- the relay endpoint -----------------------------------------------------------------

    async def post_manager(self, request: web.Request) -> web.Response:
        body = await request.read()
        cloud_id = request.headers.get("Cloud-ID", "").lower()
        device = self.by_id.get(cloud_id)
        if device is None:
            self.stats["unknown_device"] += 1
            return _error(f"Unknown Cloud ID {cloud_id or '(none)'}")
        fault = self.faults.for_request(cloud_id)
        if fault and fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000.0)
        error = fault.error if fault else None
        if error == "bad_credentials" or (
            request.headers.get("User") != device.user_email
            or request.headers.get("Password") != device.password
        ):
            self.stats["bad_credentials"] += 1
            return _error("Invalid user name or password")
        if error:
            return await self._fault_reply(error, device)
        match = _NAME_RE.search(body)
        command = match.group(1).decode().lower() if match else ""
        as_json = bool(_JSON_RE.search(body))
        return self._command_reply(device, command, as_json)

    async def _fault_reply(self, error: str, device: SimDevice) -> web.Response:
        self.stats[error] += 1
        if error == "timeout":
            await asyncio.sleep(self.timeout_hold_s)
            return web.Response(status=504, text="gateway timeout", content_type=HTML)
        if error == "http_503":
            return web.Response(status=503, text="Service Unavailable", content_type=HTML)
        if error == "http_500":
            return web.Response(status=500, text="Internal Server Error", content_type=HTML)
        if error == "offline":
            return _error(f"EAGLE {device.cloud_id} is offline")
        # malformed: a reply cut off mid-element, as a dropped relay connection leaves it
        return web.Response(
            text=f"<InstantaneousDemand><DeviceMacId>0x{device.device_mac_id:016x}</DeviceMacId><Dem",
            content_type=HTML,
        )

    def _command_reply(self, device: SimDevice, command: str, as_json: bool) -> web.Response:
        reading = reading_at(device, self.seed, self.clock(), self.reading_interval_s)
        if command == "get_instantaneous_demand":
            fields = demand_fields(device, reading)
            root = "InstantaneousDemand"
            if self.recording:
                self._record(device, reading)
        elif command == "get_current_summation":
            fields = summation_fields(device, reading, self.seed)
            root = "CurrentSummation"
        elif command == "get_price":
            fields = price_fields(device, reading)
            root = "PriceCluster"
        elif command == "get_network_info":
            fields = network_fields(device)
            root = "NetworkInfo"
        else:
            self.stats["unknown_command"] += 1
            return _error(f"Unknown command {command or '(none)'}")
        self.stats["ok"] += 1
        if as_json:
            return web.Response(body=orjson.dumps({root: fields}), content_type=HTML)
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
        return web.Response(text=f"<{root}>{inner}</{root}>", content_type=HTML)

    # --- control API ------------------------------------------------------------------------

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.to_json())

    async def put_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.replace(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            return web.json_response({"error": "bad_request", "message": str(exc)}, status=400)
        return web.json_response(self.faults.to_json())

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.faults.replace({})
        return web.json_response(self.faults.to_json())

    async def users(self, request: web.Request) -> web.Response:
        body = b"".join(orjson.dumps(d.users_line()) + b"\n" for d in self.fleet)
        return web.Response(body=body, content_type="application/x-ndjson")

    async def served_readings(self, request: web.Request) -> web.Response:
        if not self.recording:
            return web.json_response(
                {
                    "error": "not_recording",
                    "message": "start the simulator with --record to keep served readings.",
                },
                status=409,
            )
        return web.Response(
            body=b"".join(line + b"\n" for line in self.served), content_type="application/x-ndjson"
        )

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"devices": len(self.fleet), **self.stats})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "devices": len(self.fleet)})


def make_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/cgi-bin/post_manager", sim.post_manager)
    app.router.add_get("/control/faults", sim.get_faults)
    app.router.add_put("/control/faults", sim.put_faults)
    app.router.add_delete("/control/faults", sim.delete_faults)
    app.router.add_get("/control/users.jl", sim.users)
    app.router.add_get("/control/served", sim.served_readings)
    app.router.add_get("/control/stats", sim.get_stats)
    app.router.add_get("/healthz", sim.healthz)
    return app


def _error(text: str) -> web.Response:
    return web.Response(text=f"<Error><Text>{text}</Text></Error>", content_type=HTML)


def encode_demand(device: SimDevice, watts: int) -> str:
    """Demand as the meter sends it: 6 hex digits, negatives in 32-bit or 24-bit two's complement."""
    if watts >= 0:
        return f"0x{watts:06x}"
    if device.negative_24bit:
        return f"0x{watts & 0xFFFFFF:06x}"
    return f"0x{watts & 0xFFFFFFFF:08x}"


def _raw_demand(device: SimDevice, watts: int) -> int:
    # demand_kw = raw × multiplier ÷ divisor, with a zero multiplier counting as 1
    return round(watts * device.divisor / 1000 / (device.multiplier or 1))


def demand_fields(device: SimDevice, reading: SimReading) -> dict[str, str]:
    return {
        "DeviceMacId": f"0x{device.device_mac_id:016x}",
        "MeterMacId": f"0x{device.meter_mac_id:016x}",
        "TimeStamp": f"0x{reading.timestamp:08x}",
        "Demand": encode_demand(device, _raw_demand(device, reading.demand_w)),
        "Multiplier": f"0x{device.multiplier:08x}",
        "Divisor": f"0x{device.divisor:08x}",
        "DigitsRight": "0x03",
        "DigitsLeft": "0x06",
        "SuppressLeadingZero": "Y",
    }


def summation_fields(device: SimDevice, reading: SimReading, seed: int) -> dict[str, str]:
    return {
        "DeviceMacId": f"0x{device.device_mac_id:016x}",
        "MeterMacId": f"0x{device.meter_mac_id:016x}",
        "TimeStamp": f"0x{reading.timestamp:08x}",
        "SummationDelivered": f"0x{summation_wh(device, seed, reading.number):016x}",
        "SummationReceived": f"0x{(device.index * 37 if device.solar_w else 0):016x}",
        "Multiplier": "0x00000001",
        "Divisor": "0x000003e8",
        "DigitsRight": "0x01",
        "DigitsLeft": "0x06",
        "SuppressLeadingZero": "Y",
    }


def price_fields(device: SimDevice, reading: SimReading) -> dict[str, str]:
    price = 1342 + (device.index % 7) * 100 if device.has_price else 0xFFFFFFFF
    return {
        "DeviceMacId": f"0x{device.device_mac_id:016x}",
        "MeterMacId": f"0x{device.meter_mac_id:016x}",
        "TimeStamp": f"0x{reading.timestamp:08x}",
        "Price": f"0x{price:08x}",
        "Currency": "0x0348",
        "TrailingDigits": "0x05",
        "Tier": "0x01",
        "RateLabel": "Tier 1",
    }


def network_fields(device: SimDevice) -> dict[str, str]:
    return {
        "DeviceMacId": f"0x{device.device_mac_id:016x}",
        "InstallCode": f"0x{device.meter_mac_id ^ 0x5A5A5A5A:016x}",
        "LinkKey": "0x" + "00" * 16,
        "FWVersion": "2.0.21 (7031)",
        "HWVersion": "1.2.3",
        "ImageType": "0x1301",
        "Manufacturer": "Rainforest Automation, Inc.",
        "ModelId": "Z109-EAGLE",
        "DateCode": "2013103023220630",
    }
