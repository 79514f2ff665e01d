"""EAGLE-200 / EAGLE-3 Local API (`eagle200-local`): `device_list` once, then `device_query`.

The meter to query is found with `device_list` (the connected electric meter, skipping stale
"Not joined" entries) and cached; when the cached meter stops answering it is forgotten and
the next poll lists the devices again. Demand, summation and price come in one `device_query`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

import aiohttp

from app.eagle.gateway import Gateway
from app.eagle.http import Pacer, check_status, parsed, read_bounded, translated
from app.eagle.parse200 import (
    Meter,
    choose_meter,
    parse_device_details,
    parse_device_list,
    parse_device_query,
)
from app.eagle.readings import HistoryEntry, Readings
from app.errors import DeviceAuthError, DeviceError, DeviceReplyError

T = TypeVar("T")
_DEVICE_LIST = b"<Command><Name>device_list</Name></Command>"


def query_body(hardware_address: str, wanted: frozenset[str]) -> bytes:
    """Demand alone asks for one variable; summation or price ask for all of them, since
    variable names differ between firmware versions (and some omit summation when asked)."""
    if wanted == {"demand"}:
        components = (
            "<Component><Name>Main</Name><Variables><Variable><Name>zigbee:InstantaneousDemand</Name>"
            "</Variable></Variables></Component>"
        )
    else:
        components = "<All>Y</All>"
    return (
        f"<Command><Name>device_query</Name><DeviceDetails><HardwareAddress>{hardware_address}"
        f"</HardwareAddress></DeviceDetails><Components>{components}</Components></Command>"
    ).encode()


class Eagle200Client:
    """Polls EAGLE-200s; one `device_query` returns every kind of reading asked for."""

    separate_commands = False
    has_history = False

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float, gap_s: float = 1.0) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._pacer = Pacer(gap_s)
        self._meters: dict[str, tuple[str, str]] = {}  # cloud_id → (url, meter HardwareAddress)

    async def _request(self, gw: Gateway, body: bytes, parser: Callable[[bytes], T]) -> T:
        """POST one command and parse the reply; every failure becomes a DeviceError."""
        async with translated(gw.cloud_id):
            # the wait for the gateway's turn counts against this request's own timeout
            async with (
                self._pacer.turn(gw.cloud_id, self._timeout.total),
                self._session.post(
                    gw.url, data=body, headers=gw.headers, ssl=gw.ssl, timeout=self._timeout
                ) as resp,
            ):
                check_status(resp.status, resp.reason)
                reply = await read_bounded(resp)
            return parsed(gw, parser, reply)

    async def device_list(self, gw: Gateway) -> list[Meter]:
        return await self._request(gw, _DEVICE_LIST, parse_device_list)

    async def poll(self, gw: Gateway, wanted: frozenset[str]) -> Readings:
        cached = self._meters.get(gw.cloud_id)
        if cached is None or cached[0] != gw.url:
            meter = choose_meter(await self.device_list(gw))
            cached = self._meters[gw.cloud_id] = (gw.url, meter.hardware_address)
        try:
            return await self._request(
                gw, query_body(cached[1], wanted), partial(parse_device_query, wanted=wanted)
            )
        except DeviceAuthError:
            raise
        except DeviceError:
            self._meters.pop(gw.cloud_id, None)  # the meter may have left: list devices again
            raise

    async def describe(self, gw: Gateway) -> dict[str, str]:
        """device_list and the meter's device_details: meter, its link and connection, model, firmware."""
        meters = await self.device_list(gw)
        meter = choose_meter(meters)
        body = (
            f"<Command><Name>device_details</Name><DeviceDetails><HardwareAddress>{meter.hardware_address}"
            "</HardwareAddress></DeviceDetails></Command>"
        ).encode()
        details = await self._request(gw, body, parse_device_details)
        fields = {"model": details.get("modelid", ""), "firmware": details.get("fwversion", ""),
                  "meter": meter.hardware_address, "link": details.get("linkstrength", ""),
                  "network": meter.connection_status, "meters_listed": str(len(meters))}  # fmt: skip
        return {k: v for k, v in fields.items() if v}

    async def extra(self, gw: Gateway, kind: str, timeout_s: float) -> Readings:
        return Readings()  # everything came with the device_query

    async def history(self, gw: Gateway, start: int, end: int, frequency_s: int) -> list[HistoryEntry]:
        raise DeviceReplyError("the EAGLE-200 Local API keeps no history to ask for")
