"""Where and how to reach one gateway: URL, auth headers and TLS, built once per record change.

The secret (relay password or install code) lives only inside `headers`, which never show in
repr; the pinger and the server's `/api/event` build gateways the same way.
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass, field

import aiohttp

from app.devices import CLOUD, DeviceRecord, gateway_url


@dataclass(frozen=True, slots=True)
class Gateway:
    """One device's connection details; equal gateways need no reconnection or reset."""

    cloud_id: str
    protocol: str
    url: str
    headers: dict[str, str] = field(repr=False, compare=True, hash=False)
    ssl: bool | aiohttp.Fingerprint = True
    api: str = ""  # an EAGLE-100 on the household's network: "" (post_manager) or "cgi_manager"

    @property
    def local(self) -> bool:
        return self.protocol != CLOUD

    def secrets(self) -> list[str]:
        """The secrets inside the headers, as a reply could echo them (to be masked)."""
        found = [v for k, v in self.headers.items() if k in ("Password", "Authorization")]
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                found.append(base64.b64decode(basic[6:]).decode().partition(":")[2])
        return found


def cloud_gateway(cloud_id: str, user: str, password: str, url: str, tls_verify: bool = True) -> Gateway:
    """An EAGLE-100 behind the Rainforest relay: headers Cloud-ID, User, Password."""
    headers = {"Cloud-ID": cloud_id, "User": user, "Password": password}
    return Gateway(cloud_id, CLOUD, url, headers, tls_verify)


def local_gateway(
    cloud_id: str,
    protocol: str,
    address: str,
    install_code: str,
    tls_verify: bool | None = None,
    tls_fingerprint: str = "",
    api: str = "",
) -> Gateway:
    """A gateway on the household's network: HTTP Basic `cloud_id:install_code`.

    An EAGLE-3 serves HTTPS with a self-signed certificate, so an https:// address is not
    verified against the CA store unless asked (tls_verify) or pinned (tls_fingerprint)."""
    url = gateway_url(address, api)
    ssl: bool | aiohttp.Fingerprint = True
    if url.startswith("https://"):
        pinned = aiohttp.Fingerprint(bytes.fromhex(tls_fingerprint)) if tls_fingerprint else None
        ssl = pinned or bool(tls_verify)
    auth = aiohttp.encode_basic_auth(cloud_id, install_code)
    return Gateway(cloud_id, protocol, url, {"Authorization": auth}, ssl, api)


def gateway_for(record: DeviceRecord, secret: str, relay_url: str, relay_tls_verify: bool) -> Gateway:
    """The gateway a stored device describes, with its decrypted secret."""
    if record.protocol == CLOUD:
        verify = relay_tls_verify if record.tls_verify is None else record.tls_verify
        return cloud_gateway(record.cloud_id, record.user_email, secret, relay_url, verify)
    return local_gateway(
        record.cloud_id,
        record.protocol,
        record.address,
        secret,
        record.tls_verify,
        record.tls_fingerprint,
        record.api,
    )
