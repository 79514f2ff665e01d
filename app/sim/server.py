"""The simulator's HTTP server: every EAGLE protocol on one port, plus a small control API.

POST /cgi-bin/post_manager      the relay (headers Cloud-ID / User / Password) for eagle100-cloud
                                devices; with HTTP Basic `cloud_id:install_code` it is the gateway
                                itself: EAGLE-100 REST for eagle100-local, the Local API for
                                eagle200-local (the cloud_id names the device, so one port serves all)
GET|PUT|DELETE /control/faults  show, replace or clear faults
GET  /control/users.jl          the fleet as a users file for `rainforest users import`
GET  /control/served            every distinct reading served so far (when recording)
GET|DELETE /control/pollers    per device, who polled its demand: runs of [agent, first, last, count]
                                (?last=1: only the latest run)
GET  /control/stats             request counts by outcome (and push uploads)
GET  /control/pushed            every reading the push devices delivered (with --push-to)
PUT  /control/push              {"resend_rate": 0.2}: re-send that share of accepted uploads
GET  /healthz
"""

from __future__ import annotations

import asyncio
import binascii
import re
import time
from base64 import b64decode
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO

import orjson
from aiohttp import web

from app.eagle.readings import Y2K_EPOCH
from app.errors import ValidationError
from app.sim import eagle100, eagle200
from app.sim.energy import EnergyMeter
from app.sim.faults import TIME_FAULTS, FaultBook
from app.sim.fleet import SimDevice
from app.sim.model import SimReading, reading_at
from app.sim.uploader import Uploaders

_NAME_RE = re.compile(rb"<name>\s*([A-Za-z_]+)\s*</name>", re.IGNORECASE)
_JSON_RE = re.compile(rb"<format>\s*json\s*</format>", re.IGNORECASE)
HTML = "text/html"


class Simulator:
    """State behind the server: the fleet, its faults, its meters and the served-readings record."""

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
        self.pollers: dict[str, list[list[object]]] = {}  # cid → runs of [agent, first_at, last_at, n]
        self._record_out: IO[bytes] | None = record_file.open("ab") if record_file else None
        self.timeout_hold_s = timeout_hold_s
        self.clock = clock
        # an hour back, or 256 readings when the meter reads faster: a meter's first summation
        # computes every reading since the anchor, and at 1 s readings an hour of them for each
        # of a few hundred devices held the simulator's loop for seconds (polls timed out)
        self.energy = EnergyMeter(
            seed, reading_interval_s, anchor_s=clock() - min(3600, 256 * reading_interval_s)
        )
        self.uploaders: Uploaders | None = None  # push devices uploading, with --push-to
        self._in_flight: Counter[str] = Counter()  # requests being answered, per local gateway
        self._ended: dict[str, float] = {}  # when the last request to a local gateway was answered
        self._stuck_at: dict[str, float] = {}  # a frozen gateway's (or a left meter's) moment

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
                "protocol": device.protocol,
                "TimeStamp": reading.timestamp,
                "device_time": reading.timestamp + Y2K_EPOCH,
                "demand_w": reading.demand_w,
            }
        )
        self.served.append(line)
        if self._record_out:
            self._record_out.write(line + b"\n")
            self._record_out.flush()

    def _polled(self, device: SimDevice, agent: str) -> None:
        """Note who asked a device for its demand: a run per poller, a new run when it changes."""
        runs = self.pollers.setdefault(device.cloud_id, [])
        now = round(self.clock(), 3)
        if runs and runs[-1][0] == agent:
            runs[-1][2] = now
            runs[-1][3] += 1  # type: ignore[operator]
        else:
            runs.append([agent, now, now, 1])

    # --- the device endpoint ----------------------------------------------------------------

    async def post_manager(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        basic = _basic_auth(request.headers.get("Authorization", ""))
        if basic is not None:
            return await self._local(request, body, *basic)
        cloud_id = request.headers.get("Cloud-ID", "").lower()
        device = self.by_id.get(cloud_id)
        if device is None or device.protocol != "eagle100-cloud":
            self.stats["unknown_device"] += 1
            return _error(f"Unknown Cloud ID {cloud_id or '(none)'}")
        error = await self._fault(device)
        if (
            error == "bad_credentials"
            or request.headers.get("User") != device.user_email
            or request.headers.get("Password") != device.password
        ):
            self.stats["bad_credentials"] += 1
            return _error("Invalid user name or password")
        if error and error not in TIME_FAULTS:
            return await self._fault_reply(request, error, device)
        return self._eagle100(device, body, request.headers.get("User-Agent", ""), error)

    async def _local(self, request: web.Request, body: bytes, cloud_id: str, code: str) -> web.StreamResponse:
        """A request to a gateway on the household's network; real units freeze when two
        requests overlap, so overlaps are counted (`local_overlaps`) and so is the shortest
        pause between two requests to one gateway (`local_min_gap_ms`)."""
        cid = cloud_id.lower()
        now = self.clock()
        if self._in_flight[cid]:
            self.stats["local_overlaps"] += 1
        elif cid in self._ended:
            gap_ms = int((now - self._ended[cid]) * 1000)
            self.stats["local_min_gap_ms"] = min(self.stats.get("local_min_gap_ms", gap_ms), gap_ms)
        self._in_flight[cid] += 1
        try:
            return await self._local_reply(request, body, cid, code)
        finally:
            self._in_flight[cid] -= 1
            self._ended[cid] = self.clock()

    async def _local_reply(
        self, request: web.Request, body: bytes, cloud_id: str, code: str
    ) -> web.StreamResponse:
        device = self.by_id.get(cloud_id.lower())
        if device is None or not device.local or code.upper() != device.install_code:
            self.stats["bad_credentials"] += 1
            return web.Response(status=401, text="Unauthorized", content_type=HTML)
        error = await self._fault(device)
        if error == "bad_credentials":
            self.stats["bad_credentials"] += 1
            return web.Response(status=401, text="Unauthorized", content_type=HTML)
        if error and error not in TIME_FAULTS:
            return await self._fault_reply(request, error, device)
        agent = request.headers.get("User-Agent", "")
        cgi = request.path.endswith("/cgi_manager")
        if cgi != (device.api == "cgi_manager"):  # a gateway serves the API it speaks
            self.stats["wrong_api"] += 1
            return web.Response(status=404, text="Not Found", content_type=HTML)
        if cgi:
            return self._cgi(device, body, agent, error)
        if device.protocol == "eagle200-local":
            return self._eagle200(device, body, agent, error)
        return self._eagle100(device, body, agent, error)

    async def _fault(self, device: SimDevice) -> str | None:
        """Apply a fault's latency to this request; the error it brings, if any."""
        fault = self.faults.for_request(device.cloud_id)
        if fault is None:
            return None
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000.0)
        return fault.error

    async def _fault_reply(self, request: web.Request, error: str, device: SimDevice) -> web.StreamResponse:
        self.stats[error] += 1
        if error == "timeout":
            await asyncio.sleep(self.timeout_hold_s)
            return web.Response(status=504, text="gateway timeout", content_type=HTML)
        if error == "http_503":
            return web.Response(status=503, text="Service Unavailable", content_type=HTML)
        if error == "http_500":
            return web.Response(status=500, text="Internal Server Error", content_type=HTML)
        if error == "offline":
            if device.local:  # a gateway that is off: the connection drops
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=503)
            return _error(f"EAGLE {device.cloud_id} is offline")
        if device.protocol == "eagle200-local":  # a reply without a <Device> root (core#75405)
            return web.Response(text="<Response><Status>busy</Status></Response>", content_type=HTML)
        # malformed: a reply cut off mid-element, as a dropped relay connection leaves it
        return web.Response(
            text=f"<InstantaneousDemand><DeviceMacId>0x{device.device_mac_id:016x}</DeviceMacId><Dem",
            content_type=HTML,
        )

    def _reading(self, device: SimDevice, time_fault: str | None) -> SimReading:
        """The meter's reading now; with a time fault, the same reading stamped with a time that
        is not one (such a reading is not recorded as served: it must not be written), or the
        reading before it (`replay`: served before, it must not be written again)."""
        now = self.clock()
        if time_fault in ("frozen", "meter_offline"):
            now = self._stuck_at.setdefault(device.cloud_id, now)
        else:
            self._stuck_at.pop(device.cloud_id, None)  # power-cycled, or the meter is back
        reading = reading_at(device, self.seed, now, self.reading_interval_s)
        if time_fault:
            self.stats[time_fault] += 1
        if time_fault == "no_time":  # the wire's 0xffffffff: TimeStamp (Y2K) or LastContact (Unix)
            wire = 0xFFFFFFFF - Y2K_EPOCH if device.protocol == "eagle200-local" else 0xFFFFFFFF
            return replace(reading, timestamp=wire)
        if time_fault == "future_time":
            return replace(reading, timestamp=reading.timestamp + 10 * 86400)
        if time_fault == "replay":
            interval = self.reading_interval_s
            return reading_at(device, self.seed, self.clock() - interval, interval)
        return reading

    def _eagle100(
        self, device: SimDevice, body: bytes, agent: str, time_fault: str | None = None
    ) -> web.Response:
        match = _NAME_RE.search(body)
        command = match.group(1).decode().lower() if match else ""
        as_json = bool(_JSON_RE.search(body))
        now = self.clock()
        reading = self._reading(device, time_fault)
        if command == "get_instantaneous_demand":
            root, fields = "InstantaneousDemand", eagle100.demand_fields(device, reading)
            if self.recording and not time_fault:
                self._record(device, reading)
                self._polled(device, agent)
        elif command == "get_current_summation":
            root, fields = "CurrentSummation", eagle100.summation_fields(device, reading, self.energy)
        elif command == "get_price":
            root, fields = "PriceCluster", eagle100.price_fields(device, reading)
        elif command == "get_network_info":
            root, fields = "NetworkInfo", eagle100.network_fields(device, now)
            if time_fault == "meter_offline":
                fields["Status"] = "Rejoining"
        elif command == "get_history_data":
            start, end, frequency = eagle100.history_range(body, now)
            self.stats["history"] += 1
            reply = eagle100.history_body(
                device, self.energy, self.reading_interval_s, start, end, frequency, as_json
            )
            return web.Response(body=reply, content_type=HTML)
        else:
            self.stats["unknown_command"] += 1
            return _error(f"Unknown command {command or '(none)'}")
        self.stats["ok"] += 1
        return web.Response(body=eagle100.render(root, fields, as_json), content_type=HTML)

    def _unknown(self, command: str) -> web.Response:
        self.stats["unknown_command"] += 1
        return web.Response(status=400, text=f"Unknown command {command or '(none)'}", content_type=HTML)

    def _cgi(self, device: SimDevice, body: bytes, agent: str, time_fault: str | None = None) -> web.Response:
        """The EAGLE-100's LocalCommand API: flat JSON of decimal strings, local times."""
        match = _NAME_RE.search(body)
        command = match.group(1).decode().lower() if match else ""
        reading = self._reading(device, time_fault)
        now = self.clock()
        if command == "get_device_list":
            reply = eagle100.cgi_device_list(device)
        elif command == "get_timezone":
            reply = eagle100.cgi_timezone(device, now)
        elif command == "get_setting_data":
            reply = eagle100.cgi_settings(device, now)
        elif command == "get_usage_data":
            reply = eagle100.cgi_usage(device, reading, self.energy, time_fault == "meter_offline")
            if self.recording and not time_fault:
                self._record(device, reading)
                self._polled(device, agent)
        else:
            return self._unknown(command)
        self.stats["ok"] += 1
        return web.Response(body=orjson.dumps(reply), content_type=HTML)

    def _eagle200(
        self, device: SimDevice, body: bytes, agent: str, time_fault: str | None = None
    ) -> web.Response:
        match = _NAME_RE.search(body)
        command = match.group(1).decode().lower() if match else ""
        reading = self._reading(device, time_fault)
        joined = "Rejoining" if time_fault == "meter_offline" else "Connected"
        if command == "device_list":
            reply = eagle200.device_list(device, reading, joined)
        elif command == "device_details":
            reply = eagle200.device_details(
                device, reading, self.energy, eagle100.firmware(device, self.clock())
            )
        elif command == "device_query":
            address, names = eagle200.queried(body)
            reply = eagle200.device_query(device, reading, self.energy, address, names, joined)
            demand_asked = names is None or any(n.lower() == "zigbee:instantaneousdemand" for n in names)
            if (
                self.recording
                and not time_fault
                and demand_asked
                and address.lower() == eagle200.meter_address(device)
            ):
                self._record(device, reading)
                self._polled(device, agent)
        else:
            return self._unknown(command)
        self.stats["ok"] += 1
        return web.Response(body=reply, content_type=HTML)

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
        address = request.host  # the simulator itself serves every local gateway
        body = b"".join(orjson.dumps(d.users_line(address)) + b"\n" for d in self.fleet)
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

    async def get_pollers(self, request: web.Request) -> web.Response:
        """Every run of every device, or with ?last=1 only each device's latest (a big fleet's
        full record is too much to ask for twice a second)."""
        if request.query.get("last") == "1":
            body = orjson.dumps({cid: runs[-1:] for cid, runs in self.pollers.items()})
        else:
            body = orjson.dumps(self.pollers)
        return web.Response(body=body, content_type="application/json")

    async def delete_pollers(self, request: web.Request) -> web.Response:
        self.pollers.clear()
        return web.json_response({})

    async def get_stats(self, request: web.Request) -> web.Response:
        protocols = Counter(d.protocol for d in self.fleet)
        pushes = dict(self.uploaders.stats) if self.uploaders else {}
        return web.json_response(
            {"devices": len(self.fleet), "protocols": protocols, "uploads": pushes, **self.stats}
        )

    async def pushed(self, request: web.Request) -> web.Response:
        """Every reading a push device delivered (an upload holding it got a 2xx)."""
        lines = self.uploaders.delivered if self.uploaders else []
        return web.Response(
            body=b"".join(line + b"\n" for line in lines), content_type="application/x-ndjson"
        )

    async def put_push(self, request: web.Request) -> web.Response:
        """`{"resend_rate": 0.2}`: re-send that share of accepted uploads (an answer lost)."""
        try:
            rate = orjson.loads(await request.read()).get("resend_rate")
        except (orjson.JSONDecodeError, AttributeError):
            rate = None
        if not isinstance(rate, int | float) or not 0 <= rate <= 1 or self.uploaders is None:
            message = 'send {"resend_rate": 0..1} to a simulator started with --push-to.'
            return web.json_response({"error": "bad_request", "message": message}, status=400)
        self.uploaders.resend_rate = float(rate)
        return web.json_response({"resend_rate": rate})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "devices": len(self.fleet)})


def make_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/cgi-bin/post_manager", sim.post_manager)
    app.router.add_post("/cgi-bin/cgi_manager", sim.post_manager)  # Basic auth: a local EAGLE-100
    app.router.add_get("/control/faults", sim.get_faults)
    app.router.add_put("/control/faults", sim.put_faults)
    app.router.add_delete("/control/faults", sim.delete_faults)
    app.router.add_get("/control/users.jl", sim.users)
    app.router.add_get("/control/served", sim.served_readings)
    app.router.add_get("/control/pollers", sim.get_pollers)
    app.router.add_delete("/control/pollers", sim.delete_pollers)
    app.router.add_get("/control/stats", sim.get_stats)
    app.router.add_get("/control/pushed", sim.pushed)
    app.router.add_put("/control/push", sim.put_push)
    app.router.add_get("/healthz", sim.healthz)
    return app


def _basic_auth(header: str) -> tuple[str, str] | None:
    if header[:6].lower() != "basic ":
        return None
    try:
        user, _, password = b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    return user, password


def _error(text: str) -> web.Response:
    return web.Response(text=f"<Error><Text>{text}</Text></Error>", content_type=HTML)


__all__ = ["Simulator", "make_app"]
