"""The simulator's push devices acting as gateways: each uploads its readings to the server.

Each push device uploads about every reading interval (8 s) at its own phase, in its dialect:
EAGLE-100 RFA XML (one fragment per POST, XML sent as form-urlencoded, as the real uploader
does), EAGLE-200 RFA XML, or EAGLE-200 JSON (batches: demand plus the summation and price when
due, and now and then two demand readings at once). On an error or a timeout it sends the same
body again, with backoff, to the next server URL, keeping order, as a real uploader retries; a
reading counts as delivered (ground truth, `/control/pushed`) once an upload holding it got a 2xx.
`resend_rate` re-sends a share of accepted bodies, as an uploader does whose answer was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson

from app.eagle.readings import Y2K_EPOCH
from app.sim import eagle100
from app.sim.energy import EnergyMeter
from app.sim.faults import FaultBook
from app.sim.fleet import SimDevice
from app.sim.model import SimReading, reading_at
from app.sim.tariff import tariff_at

SUMMATION_EVERY = 8  # uploads between two summations (about a minute at 8 s)
PRICE_EVERY = 112  # about 15 minutes
QUEUE_LIMIT = 200  # bodies a gateway buffers while the server is away; older ones are dropped


@dataclass(frozen=True)
class Body:
    data: bytes
    content_type: str
    readings: tuple[tuple[str, int, float], ...]  # (kind, device_time, value) it carries


class Uploaders:
    """Every push device's upload loop, and the record of what was delivered."""

    def __init__(
        self,
        fleet: list[SimDevice],
        seed: int,
        energy: EnergyMeter,
        urls: list[str],
        interval_s: float,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
        faults: FaultBook | None = None,
    ) -> None:
        self.faults = faults or FaultBook(seed)  # offline: the gateway uploads nothing (it is quiet);
        # bad_credentials: it uploads with a key that is not its own (a reset gateway)
        self.devices = [d for d in fleet if d.protocol == "push"]
        self.seed, self.energy, self.urls, self.interval_s, self.clock = seed, energy, urls, interval_s, clock
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.delivered: list[bytes] = []
        self.stats: Counter[str] = Counter()
        self.resend_rate = 0.0
        self._rng = random.Random(seed)

    async def run(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("Accept-Encoding",)
        ) as session:
            tasks = [asyncio.create_task(self._device(session, d, stop)) for d in self.devices]
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _device(self, session: aiohttp.ClientSession, device: SimDevice, stop: asyncio.Event) -> None:
        queue: deque[Body] = deque()
        made = 0
        last: int | None = None
        target = 0  # which server URL the next upload goes to
        delay = 0.0
        phase = device.phase_fraction * self.interval_s
        while not stop.is_set():
            now = self.clock()
            reading = reading_at(device, self.seed, now, self.interval_s)
            if reading.number != last:
                last = reading.number
                made += 1
                queue.append(self._body(device, reading, made))
                if len(queue) > QUEUE_LIMIT:
                    queue.popleft()
                    self.stats["dropped"] += 1
            fault = self.faults.for_request(device.cloud_id)
            if fault is not None and fault.error == "offline":
                queue.clear()  # a gateway that is off makes no readings to send later
                self.stats["quiet"] += 1
            while queue and not stop.is_set():
                wrong = fault is not None and fault.error == "bad_credentials"
                ok = await self._send(session, device, queue[0], self.urls[target % len(self.urls)], wrong)
                if not ok:
                    target += 1  # the next try goes to the next server, as behind a load balancer
                    delay = min(30.0, max(0.5, delay * 2))
                    break
                delay = 0.0
                sent = queue.popleft()
                if self.resend_rate and self._rng.random() < self.resend_rate:
                    target += 1
                    self.stats["resent"] += 1
                    await self._send(session, device, sent, self.urls[target % len(self.urls)])
            next_reading = phase + (reading.number + 1) * self.interval_s
            await _sleep(stop, delay or max(0.05, next_reading - self.clock() + 0.01))

    async def _send(
        self,
        session: aiohttp.ClientSession,
        device: SimDevice,
        body: Body,
        base: str,
        wrong: bool = False,
    ) -> bool:
        url = f"{base.rstrip('/')}/api/push/{device.cloud_id}"
        key = "0" * len(device.push_key) if wrong else device.push_key
        auth = aiohttp.encode_basic_auth(device.cloud_id, key)
        headers = {
            "Content-Type": body.content_type,
            "Authorization": auth,
            "User-Agent": "Raven Uploader/v1",
        }
        try:
            async with session.post(url, data=body.data, headers=headers, timeout=self.timeout) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self.stats["ok" if ok else "failed"] += 1
        if ok:
            for kind, t, value in body.readings:
                self.delivered.append(
                    orjson.dumps(
                        {"cloud_id": device.cloud_id, "kind": kind, "device_time": t, "value": value}
                    )
                )
        return ok

    def _body(self, device: SimDevice, reading: SimReading, made: int) -> Body:
        at = reading.timestamp + Y2K_EPOCH
        kinds = ["demand"]
        if made % SUMMATION_EVERY == 1:
            kinds.append("summation")
        if made % PRICE_EVERY == 2 and device.has_price:
            kinds.append("price")
        if device.push_dialect == "eagle200-json":
            return self._json(device, reading, at, kinds, made)
        if device.push_dialect == "eagle200-xml-simple":
            return _xml_simple(self._json(device, reading, at, kinds, made))
        # RFA XML: one fragment per POST; the extra kinds ride in the next uploads' place
        kind = kinds[-1] if len(kinds) > 1 and made % 2 else "demand"
        return self._xml(device, reading, at, kind)

    def _xml(self, device: SimDevice, reading: SimReading, at: int, kind: str) -> Body:
        e200 = device.push_dialect == "eagle200-xml"
        if kind == "summation":
            fields = eagle100.summation_fields(device, reading, self.energy)
            root = "CurrentSummation" if e200 else "CurrentSummationDelivered"
            value = int(fields["SummationDelivered"], 16) / 1000
        elif kind == "price":
            fields = eagle100.price_fields(device, reading)
            root, value = "PriceCluster", int(fields["Price"], 16) / 10**5
        else:
            fields = eagle100.demand_fields(device, reading)
            root, value = "InstantaneousDemand", reading.demand_w / 1000
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "<Port>/dev/ttySP0</Port>"
        data = (
            f'<?xml version="1.0"?><rainforest macId="0x{device.device_mac_id & 0xFFFFFFFFFFFF:012x}" '
            f'version="undefined" timestamp="{at}s"><{root}>{inner}</{root}></rainforest>'
        ).encode()
        ctype = "text/xml" if e200 else "application/x-www-form-urlencoded"
        return Body(data, ctype, ((kind, at, value),))

    def _json(self, device: SimDevice, reading: SimReading, at: int, kinds: list[str], made: int) -> Body:
        reports: list[dict[str, object]] = []
        carried: list[tuple[str, int, float]] = []
        guid = f"{device.meter_mac_id:012x}"[-12:]

        def report(kind: str, when: int, data: dict[str, object]) -> None:
            reports.append({"timestamp": str(when * 1000), "subdeviceGuid": guid, "componentId": "all",
                            "dataType": kind, "data": data})  # fmt: skip

        if made % 5 == 0:  # now and then the previous reading rides along (a batch of two)
            before = reading_at(device, self.seed, (at - self.interval_s), self.interval_s)
            t = before.timestamp + Y2K_EPOCH
            report("InstantaneousDemand", t, {"demand": before.demand_w / 1000, "units": "kW"})
            carried.append(("demand", t, before.demand_w / 1000))
        report("InstantaneousDemand", at, {"demand": reading.demand_w / 1000, "units": "kW"})
        carried.append(("demand", at, reading.demand_w / 1000))
        if "summation" in kinds:
            delivered, received = self.energy.registers(device, reading.number)
            sums = {
                "summationDelivered": round(delivered / 1000, 3),
                "summationReceived": round(received / 1000, 3),
            }
            report("CurrentSummation", at, {**sums, "units": "kWh"})
            carried.append(("summation", at, round(delivered / 1000, 3)))
        if "price" in kinds:
            tariff = tariff_at(device, at)
            report("Price", at, {"price": tariff.price, "currency": "0x0348", "units": "USD/kWh",
                                 "PriceTier": tariff.tier, "PriceRateLabel": tariff.label})  # fmt: skip
            carried.append(("price", at, tariff.price))
        if made % 7 == 3:
            report("Message", at, {"id": "0x01", "text": "Welcome", "priority": "Low"})
        guid_200 = f"{device.device_mac_id:016x}"[-10:]
        body = {"timestamp": str(int(self.clock() * 1000)), "deviceGuid": guid_200, "body": reports}
        return Body(orjson.dumps(body), "application/json", tuple(carried))


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


_VARIABLES = {  # a JSON report's data → the XML:Simple variables of the same values
    "InstantaneousDemand": (("demand", "zigbee:InstantaneousDemand"),),
    "CurrentSummation": (("summationDelivered", "zigbee:CurrentSummationDelivered"),
                         ("summationReceived", "zigbee:CurrentSummationReceived")),
    "Price": (("price", "zigbee:Price"), ("PriceTier", "zigbee:PriceTier"),
              ("PriceRateLabel", "zigbee:RateLabel")),
    "Message": (("text", "zigbee:Message"),),
}  # fmt: skip


def _xml_simple(made: Body) -> Body:
    """The same batch as the EAGLE-200's XML:Simple uploader format sends it (app.push.dialects)."""
    doc = orjson.loads(made.data)
    reports = []
    for r in doc["body"]:
        variables = "".join(
            f"<Variable><Name>{name}</Name><Value>{r['data'][key]}</Value></Variable>"
            for key, name in _VARIABLES.get(r["dataType"], ())
            if key in r["data"]
        )
        if r["dataType"] == "Price":
            variables += "<Variable><Name>zigbee:PriceCurrency</Name><Value>USD</Value></Variable>"
        reports.append(
            f"<Report><SubdeviceGuid>{r['subdeviceGuid']}</SubdeviceGuid><ComponentId>all</ComponentId>"
            f"<Timestamp>{int(r['timestamp']) // 1000}</Timestamp><Variables>{variables}</Variables></Report>"
        )
    body = (
        f'<?xml version="1.0"?><XmlSimple version="2.0"><DeviceGuid>{doc["deviceGuid"]}</DeviceGuid>'
        f"<Timestamp>{int(doc['timestamp']) // 1000}</Timestamp>{''.join(reports)}</XmlSimple>"
    )
    return Body(body.encode(), "text/xml", made.readings)
