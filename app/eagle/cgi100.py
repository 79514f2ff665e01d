"""An EAGLE-100 on the household's network spoken to through `/cgi-bin/cgi_manager` (its web page's
LocalCommand API) instead of the REST commands: `eagle100-local` with `api: "cgi_manager"`.

One `get_usage_data` gives demand, summation and price at once. The meter's MAC (from
`get_device_list`) and the gateway's UTC offset (from `get_timezone`: its times are local) are
asked once and kept, the offset for an hour (clocks change). Same pacing and errors as the REST
client, through the same request funnel (it is an `Eagle100Client`).
"""

from __future__ import annotations

import time

import aiohttp

from app.eagle import parse_cgi
from app.eagle.eagle100 import Eagle100Client
from app.eagle.gateway import Gateway
from app.eagle.http import Pacer
from app.eagle.readings import HistoryEntry, Readings
from app.errors import DeviceReplyError

OFFSET_KEPT_S = 3600.0


class Eagle100CgiClient(Eagle100Client):
    separate_commands = False  # get_usage_data holds every kind
    has_history = False  # cgi_manager's history is coarse totals; gaps are not refilled from it

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float, pacer: Pacer) -> None:
        super().__init__(session, timeout_s, pacer=pacer)
        self._macs: dict[str, str] = {}
        self._offsets: dict[str, tuple[int, float]] = {}

    async def _mac(self, gw: Gateway) -> str:
        mac = self._macs.get(gw.cloud_id)
        if mac is None:
            body = parse_cgi.local_command("get_device_list")
            mac = self._macs[gw.cloud_id] = await self._request(gw, body, parse_cgi.meter_mac)
        return mac

    async def _offset(self, gw: Gateway) -> int:
        kept = self._offsets.get(gw.cloud_id)
        if kept is None or time.monotonic() - kept[1] > OFFSET_KEPT_S:
            body = parse_cgi.local_command("get_timezone")
            kept = self._offsets[gw.cloud_id] = (
                await self._request(gw, body, parse_cgi.utc_offset),
                time.monotonic(),
            )
        return kept[0]

    async def poll(self, gw: Gateway, wanted: frozenset[str]) -> Readings:
        mac, offset = await self._mac(gw), await self._offset(gw)
        body = parse_cgi.local_command("get_usage_data", mac)
        try:
            return await self._request(gw, body, lambda reply: parse_cgi.usage(reply, offset, mac, wanted))
        except DeviceReplyError:
            self._macs.pop(gw.cloud_id, None)  # a meter swapped: list the devices again next time
            raise

    async def extra(self, gw: Gateway, kind: str, timeout_s: float) -> Readings:
        raise ValueError("a cgi_manager gateway gives every kind in its poll")

    async def describe(self, gw: Gateway) -> dict[str, str]:
        found = await self._request(gw, parse_cgi.local_command("get_setting_data"), parse_cgi.settings)
        found["meter"] = await self._mac(gw)
        return {k: str(v) for k, v in found.items() if v}

    async def history(self, gw: Gateway, start: int, end: int, frequency_s: int) -> list[HistoryEntry]:
        raise DeviceReplyError("the logger refills gaps through the REST API, not cgi_manager")
