"""EAGLE-100 REST client through the Rainforest cloud relay (or anything speaking it).

All traffic goes through `_request`: timeout, auth headers, status checks, a bounded body and
the mapping of aiohttp's exceptions to DeviceError kinds live there and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
from aiohttp.payload import BytesPayload

from app.eagle import parse
from app.eagle.readings import DemandReading, NetworkInfo, PriceReading, SummationReading
from app.errors import (
    DeviceAuthError,
    DeviceBadReply,
    DeviceError,
    DeviceReplyError,
    DeviceTimeout,
    DeviceUnavailable,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Credentials:
    """The relay's Cloud-ID / User / Password triple; the password never shows in repr."""

    cloud_id: str
    user: str
    password: str = field(repr=False)


def command_body(name: str, extra: str = "") -> bytes:
    return f"<Command><Name>{name}</Name>{extra}</Command>".encode()


# Built once: aiohttp documents BytesPayload as reusable, and this is sent on every poll.
_DEMAND_BODY = BytesPayload(command_body("get_instantaneous_demand"), content_type="text/xml")


def new_session(max_connections: int, tls_verify: bool = True) -> aiohttp.ClientSession:
    """A pooled keep-alive session sized for the pinger's concurrency.

    The relay is one host for the whole fleet, so the per-host limit is the real bound.
    """
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=max_connections,
        ssl=tls_verify,
        keepalive_timeout=30,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers={"Content-Type": "text/xml", "User-Agent": "rainforest-logger"},
        skip_auto_headers=("Accept-Encoding",),
    )


class EagleCloudClient:
    """get_instantaneous_demand and friends for one relay URL."""

    def __init__(self, session: aiohttp.ClientSession, url: str, timeout_s: float) -> None:
        self._session = session
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _request(
        self, creds: Credentials, body: bytes | BytesPayload, parser: Callable[[bytes], T]
    ) -> T:
        """POST one command and parse the reply; every failure becomes a DeviceError."""
        headers = {"Cloud-ID": creds.cloud_id, "User": creds.user, "Password": creds.password}
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout
            ) as resp:
                _check_status(resp.status, resp.reason)
                reply = await _read_bounded(resp)
            return parser(reply)
        except DeviceError as exc:
            exc.cloud_id = creds.cloud_id
            raise
        except TimeoutError as exc:
            raise DeviceTimeout("no reply within the timeout", cloud_id=creds.cloud_id) from exc
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise DeviceUnavailable(reason, cloud_id=creds.cloud_id) from exc

    async def get_instantaneous_demand(self, creds: Credentials) -> DemandReading:
        return await self._request(creds, _DEMAND_BODY, parse.parse_demand)

    async def get_current_summation(self, creds: Credentials) -> SummationReading:
        body = command_body("get_current_summation")
        return await self._request(creds, body, parse.parse_summation)

    async def get_price(self, creds: Credentials) -> PriceReading:
        return await self._request(creds, command_body("get_price"), parse.parse_price)

    async def get_network_info(self, creds: Credentials) -> NetworkInfo:
        body = command_body("get_network_info")
        return await self._request(creds, body, parse.parse_network_info)


def _check_status(status: int, reason: str | None) -> None:
    if status == 200:
        return
    text = f"HTTP {status} {reason or ''}".strip()
    if status in (401, 403):
        raise DeviceAuthError(f"credentials refused ({text})")
    if status >= 500 or status == 429:
        raise DeviceUnavailable(text)
    raise DeviceReplyError(text)


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    length = resp.content_length
    if length is not None:
        if length > parse.MAX_REPLY_BYTES:
            raise DeviceBadReply(f"reply of {length} bytes exceeds the bound")
        return await resp.read()
    buf = bytearray()  # chunked: count as it arrives
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > parse.MAX_REPLY_BYTES:
            raise DeviceBadReply(f"reply exceeds the {parse.MAX_REPLY_BYTES}-byte bound")
    return bytes(buf)
