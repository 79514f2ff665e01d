"""The gateway client interface, and the client for each protocol behind it.

Each protocol is a module of its own with one request funnel (`eagle100`: the relay and the
EAGLE-100 on the local network; `eagle200`: the EAGLE-200 / EAGLE-3 Local API). The pinger
and the server ask `Clients.for_protocol` and speak only this interface.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

from app.devices import CLOUD
from app.eagle.cgi100 import Eagle100CgiClient
from app.eagle.eagle100 import Eagle100Client
from app.eagle.eagle200 import Eagle200Client
from app.eagle.gateway import Gateway
from app.eagle.http import Pacer, new_session
from app.eagle.readings import HistoryEntry, Readings

__all__ = ["Clients", "GatewayClient", "new_session"]


class GatewayClient(Protocol):
    """What the pinger needs from a protocol."""

    separate_commands: bool  # summation and price need requests of their own (`extra`)
    has_history: bool  # `history` can refill gaps

    async def poll(self, gw: Gateway, wanted: frozenset[str]) -> Readings:
        """The scheduled request: demand, plus summation and price where one request gives them."""
        ...

    async def extra(self, gw: Gateway, kind: str, timeout_s: float) -> Readings: ...

    async def describe(self, gw: Gateway) -> dict[str, str]:
        """What the gateway says of itself: model, firmware, meter, link (for crawls)."""
        ...

    async def history(self, gw: Gateway, start: int, end: int, frequency_s: int) -> list[HistoryEntry]: ...


class Clients:
    """One client per protocol over one pooled session; local gateways are paced."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float, local_gap_s: float) -> None:
        local100 = Pacer(local_gap_s)
        self._by_protocol: dict[str, GatewayClient] = {
            CLOUD: Eagle100Client(session, timeout_s),
            "eagle100-local": Eagle100Client(session, timeout_s, pacer=local100),
            "eagle200-local": Eagle200Client(session, timeout_s, gap_s=local_gap_s),
        }
        self._cgi = Eagle100CgiClient(session, timeout_s, pacer=local100)  # either API: one turn

    def for_protocol(self, protocol: str, api: str = "") -> GatewayClient:
        """The client of a protocol (and, for an EAGLE-100 on the household's network, its API)."""
        if api == "cgi_manager" and protocol == "eagle100-local":
            return self._cgi
        return self._by_protocol[protocol]
