"""What every gateway protocol's request funnel shares: the pooled session, status checks, a
bounded body read, and the one translation of aiohttp's exceptions into DeviceError kinds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import aiohttp

from app.eagle.gateway import Gateway
from app.eagle.parse import MAX_REPLY_BYTES
from app.errors import (
    DeviceAuthError,
    DeviceBadReply,
    DeviceError,
    DeviceReplyError,
    DeviceTimeout,
    DeviceTLSError,
    DeviceUnavailable,
)

T = TypeVar("T")
REPLY_KEPT = 2048  # characters of an unreadable reply kept for an operator
TLS_HINT = "set tls_verify to false for a self-signed EAGLE-3, or pin its certificate with tls_fingerprint"


def new_session(
    max_connections: int, tls_verify: bool = True, agent: str = "rainforest-logger"
) -> aiohttp.ClientSession:
    """A pooled keep-alive session sized for the pinger's concurrency.

    The relay is one host for the whole fleet, so the per-host limit is the real bound; local
    gateways are one host each. TLS is decided per request (see `Gateway.ssl`). `agent` names
    the process to the gateway (the simulator tells pingers apart by it).
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
        headers={"Content-Type": "text/xml", "User-Agent": agent},
        skip_auto_headers=("Accept-Encoding",),
    )


class translated:
    """Every failure inside becomes a DeviceError carrying the device's cloud_id.

    A class, not @asynccontextmanager: it wraps every poll, and a generator-based context manager
    costs several times more per use."""

    __slots__ = ("cloud_id",)

    def __init__(self, cloud_id: str) -> None:
        self.cloud_id = cloud_id

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        cloud_id = self.cloud_id
        if isinstance(exc, DeviceError):
            exc.cloud_id = cloud_id
            return
        if isinstance(exc, TimeoutError):
            raise DeviceTimeout("no reply within the timeout", cloud_id=cloud_id) from exc
        if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ServerFingerprintMismatch):
            raise DeviceTLSError(
                f"the gateway's TLS certificate failed verification ({type(exc).__name__}): {TLS_HINT}",
                cloud_id=cloud_id,
            ) from exc
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            raise DeviceUnavailable(
                f"the gateway's address does not resolve ({exc.host})", cloud_id=cloud_id
            ) from exc
        if isinstance(exc, aiohttp.ClientError):
            reason = str(exc) or type(exc).__name__
            raise DeviceUnavailable(reason, cloud_id=cloud_id) from exc
        if isinstance(exc, UnicodeError):  # a host name the resolver cannot encode (an empty label)
            raise DeviceUnavailable(
                "the gateway's address is no host name that can be looked up", cloud_id=cloud_id
            ) from exc


def parsed(gw: Gateway, parser: Callable[[bytes], T], reply: bytes) -> T:
    """`parser(reply)`; a reply it cannot read keeps its start on the error, secrets masked, so
    an operator can see what the gateway sent (a firmware change, most often)."""
    try:
        return parser(reply)
    except DeviceBadReply as exc:
        exc.reply = excerpt(gw, reply)
        raise


def excerpt(gw: Gateway, reply: bytes, limit: int = REPLY_KEPT) -> str:
    """The start of a reply as text, with the gateway's own secrets masked."""
    text = reply[: limit * 4].decode("utf-8", "replace")[:limit]
    for secret in gw.secrets():
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def check_status(status: int, reason: str | None) -> None:
    if status == 200:
        return
    text = f"HTTP {status} {reason or ''}".strip()
    if status in (401, 403):
        raise DeviceAuthError(f"credentials refused ({text})")
    if status >= 500 or status == 429:
        raise DeviceUnavailable(text)
    raise DeviceReplyError(text)


async def read_bounded(resp: aiohttp.ClientResponse, bound: int = MAX_REPLY_BYTES) -> bytes:
    length = resp.content_length
    if length is not None:
        if length > bound:
            raise DeviceBadReply(f"reply of {length} bytes exceeds the {bound}-byte bound")
        return await resp.read()
    buf = bytearray()  # chunked: count as it arrives
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > bound:
            raise DeviceBadReply(f"reply exceeds the {bound}-byte bound")
    return bytes(buf)


class Pacer:
    """One request at a time to a gateway, and at least `gap_s` between the end of one and the
    start of the next: real units freeze when hammered (aioeagle waits 1 s too). A history
    request that takes seconds holds the gateway's turn, so a demand poll waits for it instead
    of running beside it; that wait counts against the waiting request's own timeout (the gap
    after it does not, as before). A gap of 0 paces nothing."""

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self._free_at: dict[str, float] = {}
        self._turns: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def turn(self, cloud_id: str, timeout_s: float | None) -> AsyncIterator[None]:
        """Hold the gateway's turn for one request; TimeoutError when another request holds it
        past `timeout_s`."""
        if not self.gap_s:
            yield
            return
        loop = asyncio.get_running_loop()
        lock = self._turns.setdefault(cloud_id, asyncio.Lock())
        async with asyncio.timeout(timeout_s):
            await lock.acquire()
        try:
            delay = self._free_at.get(cloud_id, 0.0) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield
        finally:
            self._free_at[cloud_id] = loop.time() + self.gap_s
            lock.release()
