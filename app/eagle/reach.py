"""Which addresses a local gateway may be registered at: never this deployment's own services.

An admin registers a gateway by address, and the pinger then sends it requests every few
seconds with the gateway's credentials. Pointed at Redis, the archive's endpoint or the server
itself, that is a request forgery from inside the deployment (Redis logs a "possible security
attack" each poll); pointed at a link-local address, it reaches a cloud's metadata service.
So an address is refused when it is, or resolves to:
- a loopback, link-local, unspecified, multicast or reserved address, unless it lies in one of
  the networks GATEWAY_ALLOW_NETWORKS names (the simulator on 127.0.0.1 in the demo and tests);
- the host and port of one of the deployment's own services (Redis, the S3 endpoint, the
  server), whatever GATEWAY_ALLOW_NETWORKS says.
Home networks (10/8, 172.16/12, 192.168/16) are where local gateways live, and are allowed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import ConfigError, ValidationError
from app.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ReachPolicy:
    """The networks allowed despite being internal, and the deployment's own (host, port)s."""

    allowed: tuple[Network, ...]
    services: frozenset[tuple[str, int]]

    @classmethod
    def from_settings(cls, settings: Settings) -> ReachPolicy:
        allowed: list[Network] = []
        for text in filter(None, (t.strip() for t in settings.gateway_allow_networks.split(","))):
            try:
                allowed.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ConfigError(
                    f"GATEWAY_ALLOW_NETWORKS must list networks such as 127.0.0.0/8, got {text!r}."
                ) from None
        services = {("", settings.server_port)}  # the server, on whatever address it listens
        for url in (settings.redis_url, settings.s3_endpoint_url or ""):
            parts = urlsplit(url)
            if parts.hostname:
                default = {"redis": 6379, "rediss": 6379, "http": 80, "https": 443}.get(parts.scheme, 0)
                services.add((parts.hostname.lower(), parts.port or default))
        return cls(tuple(allowed), frozenset(services))

    def check(self, address: str, resolved: Iterable[Address] | None = None) -> None:
        """Raise ValidationError (one sentence, naming the field) when `address` may not be
        polled; `resolved` are the addresses a host name resolves to (None: resolve it now)."""
        parts = urlsplit(address if "://" in address else f"http://{address}")
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        ips = list(resolved) if resolved is not None else _resolve(host)
        if self._own_service(host, port, ips):
            raise ValidationError(
                f"address {host}:{port} is one of this deployment's own services (Redis, the archive or "
                "the server), not a gateway.",
                field="address",
            )
        for ip in ips:
            if _internal(ip) and not any(ip in net for net in self.allowed):
                at = "" if str(ip) == host else f"at {ip}, "
                raise ValidationError(
                    f"address {host} is {at}a loopback, link-local or reserved address, where no gateway "
                    "lives; GATEWAY_ALLOW_NETWORKS can allow a network.",
                    field="address",
                )

    def _own_service(self, host: str, port: int, ips: list[Address]) -> bool:
        for service_host, service_port in self.services:
            if service_port != port:
                continue
            service_ip = _literal(service_host)
            if host == service_host or (service_ip is not None and service_ip in ips):
                return True
            local_service = service_host in ("", "localhost") or (
                service_ip is not None and _is_local(service_ip)
            )
            if local_service and (host == "localhost" or any(_is_local(ip) for ip in ips)):
                return True
        return False


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str) -> list[Address]:
    """The addresses a host stands for; a name that does not resolve here (a gateway on a network
    only the pingers reach) has none to check."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    found: list[Address] = []
    for info in infos:
        ip = _literal(str(info[4][0]).split("%")[0])
        if ip is not None:
            found.append(ip)
    return found


def _is_local(ip: Address) -> bool:
    return ip.is_loopback or ip.is_unspecified


def _internal(ip: Address) -> bool:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    ip = mapped or ip
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved
