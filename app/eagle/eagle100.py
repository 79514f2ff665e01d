"""EAGLE-100 REST commands, through the Rainforest relay (`eagle100-cloud`) or sent to the
gateway itself with HTTP Basic `cloud_id:install_code` (`eagle100-local`).

Both speak the same commands and replies; a `Gateway` carries the URL, headers and TLS that
differ. All traffic goes through `_request`. A local EAGLE-100 under load answers HTTP 503
until it is left alone for a while: that is `unavailable`, and the pinger's backoff leaves it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import aiohttp
from aiohttp.payload import BytesPayload

from app.eagle import parse
from app.eagle.gateway import Gateway
from app.eagle.http import Pacer, check_status, parsed, read_bounded, translated
from app.eagle.readings import (
    Y2K_EPOCH,
    DemandReading,
    HistoryEntry,
    NetworkInfo,
    PriceReading,
    Readings,
    SummationReading,
)
from app.errors import DeviceBadReply

T = TypeVar("T")


def command_body(name: str, extra: str = "") -> bytes:
    return f"<Command><Name>{name}</Name>{extra}</Command>".encode()


# Built once: aiohttp documents BytesPayload as reusable, and this is sent on every poll.
_DEMAND_BODY = BytesPayload(command_body("get_instantaneous_demand"), content_type="text/xml")


class Eagle100Client:
    """get_instantaneous_demand and friends; summation and price are commands of their own."""

    separate_commands = True
    has_history = True

    def __init__(
        self, session: aiohttp.ClientSession, timeout_s: float, gap_s: float = 0.0, pacer: Pacer | None = None
    ) -> None:
        self._session = session
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._pacer = pacer or Pacer(gap_s)  # a pacer given is shared: one turn per gateway

    async def _request(
        self,
        gw: Gateway,
        body: bytes | BytesPayload,
        parser: Callable[[bytes], T],
        *,
        bound: int = parse.MAX_REPLY_BYTES,
        timeout_s: float | None = None,
    ) -> T:
        """POST one command and parse the reply; every failure becomes a DeviceError."""
        timeout = self._timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        async with translated(gw.cloud_id):
            # the wait for the gateway's turn counts against this request's own timeout
            async with (
                self._pacer.turn(gw.cloud_id, timeout.total),
                self._session.post(
                    gw.url, data=body, headers=gw.headers, ssl=gw.ssl, timeout=timeout
                ) as resp,
            ):
                check_status(resp.status, resp.reason)
                reply = await read_bounded(resp, bound)
            return parsed(gw, parser, reply)

    async def poll(self, gw: Gateway, wanted: frozenset[str]) -> Readings:
        """The scheduled request: demand only (summation and price come from `extra`)."""
        return Readings(demand=await self.demand(gw))

    async def extra(self, gw: Gateway, kind: str, timeout_s: float) -> Readings:
        """One of the extra commands, within what is left of the poll's time."""
        if kind == "summation":
            return Readings(summation=await self.summation(gw, timeout_s))
        if kind == "price":
            price = await self._request(gw, command_body("get_price"), parse.parse_price, timeout_s=timeout_s)
            return Readings(price=price if price.price is not None else None)
        raise ValueError(f"unknown reading kind {kind!r}")

    async def demand(self, gw: Gateway) -> DemandReading:
        return await self._request(gw, _DEMAND_BODY, parse.parse_demand)

    async def summation(self, gw: Gateway, timeout_s: float | None = None) -> SummationReading:
        body = command_body("get_current_summation")
        return await self._request(gw, body, parse.parse_summation, timeout_s=timeout_s)

    async def price(self, gw: Gateway) -> PriceReading:
        return await self._request(gw, command_body("get_price"), parse.parse_price)

    async def network_info(self, gw: Gateway) -> NetworkInfo:
        return await self._request(gw, command_body("get_network_info"), parse.parse_network_info)

    async def describe(self, gw: Gateway) -> dict[str, str]:
        """What the gateway says of itself (get_network_info), for the device's crawl history."""
        info = await self.network_info(gw)
        fields = {"model": info.model_id, "firmware": info.firmware,
                  "hardware": info.fields.get("HWVersion", ""),
                  "manufacturer": info.fields.get("Manufacturer", "")}  # fmt: skip
        return {k: v for k, v in fields.items() if v}

    async def history(self, gw: Gateway, start: int, end: int, frequency_s: int) -> list[HistoryEntry]:
        """Summations the gateway kept between two Unix times (get_history_data)."""
        if start < Y2K_EPOCH or end <= start:
            raise DeviceBadReply(f"history range {start}..{end} is not a range after 2000")
        extra = (
            f"<StartTime>0x{start - Y2K_EPOCH:08x}</StartTime><EndTime>0x{end - Y2K_EPOCH:08x}</EndTime>"
            f"<Frequency>0x{max(1, frequency_s):04x}</Frequency>"
        )
        body = command_body("get_history_data", extra)
        return await self._request(
            gw, body, parse.parse_history, bound=parse.MAX_HISTORY_BYTES, timeout_s=max(self._timeout_s, 30.0)
        )
