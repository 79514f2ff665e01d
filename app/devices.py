"""What a device is: validation of operator input and the record kept in Redis.

A device speaks one protocol (DESIGN.md "Device protocols"): through the Rainforest relay
(`eagle100-cloud`, a rainforestcloud.com login) or on the household's network (`eagle100-local`,
`eagle200-local`: an address and the gateway's install code). Secrets are kept encrypted.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.errors import ValidationError
from app.studies import DEFAULT as DEFAULT_STUDY
from app.studies import Enrolment

CLOUD_ID_RE = re.compile(r"^[0-9a-f]{6}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
INSTALL_CODE_RE = re.compile(r"^[0-9A-Fa-f]{16}$")
FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")
PUSH_KEY_RE = re.compile(r"^[A-Za-z0-9_\-.~]{16,128}$")
CLOUD = "eagle100-cloud"
PUSH = "push"
LOCAL_PROTOCOLS = ("eagle100-local", "eagle200-local")
POLLED_PROTOCOLS = (CLOUD, *LOCAL_PROTOCOLS)
PROTOCOLS = (*POLLED_PROTOCOLS, PUSH)
DEFAULT_PROTOCOL = CLOUD
INPUT_FIELDS = frozenset(
    {
        "cloud_id", "user_email", "user_pw", "protocol", "address", "install_code",
        "tls_verify", "tls_fingerprint", "push_key", "active", "api",
    }
)  # fmt: skip


def normalize_cloud_id(value: object) -> str:
    """A cloud_id as 6 lowercase hex digits, leading zeros kept; anything else is refused."""
    if not isinstance(value, str) or not CLOUD_ID_RE.match(value.strip().lower()):
        raise ValidationError(
            f"cloud_id must be 6 hex digits such as 002738, got {value!r}.", field="cloud_id"
        )
    return value.strip().lower()


def normalize_address(value: object) -> str:
    """A local gateway's address: host, host:port, or an http(s):// URL (no credentials in it)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(
            "address must be the gateway's host, host:port or http(s):// URL, such as 192.168.1.20.",
            field="address",
        )
    text = value.strip()
    try:
        parts = urlsplit(text if "://" in text else f"http://{text}")
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:  # a bracket that is no IPv6 address, a port that is not a number
        port_ok, parts = False, urlsplit("")
    if (
        not text.isascii()
        or not text.isprintable()
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or parts.username
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in text)
    ):
        raise ValidationError(
            "address must be a host, host:port or http(s):// URL in ASCII (an international name in its "
            f"xn-- form), without credentials; got {text[:60]!r}.",
            field="address",
        )
    if not _host_name(parts.hostname):
        raise ValidationError(
            "address's host must be an IP address or a name of dot-separated parts of 1 to 63 "
            f"characters each (253 in all); got {parts.hostname[:60]!r}.",
            field="address",
        )
    return text


def _host_name(host: str) -> bool:
    """An IP address, or a name whose labels the resolver can encode (1 to 63 characters each)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        name = host.removesuffix(".")
        return 0 < len(name) <= 253 and all(0 < len(label) < 64 for label in name.split("."))


LOCAL_APIS = ("", "post_manager", "cgi_manager")


def gateway_url(address: str, api: str = "") -> str:
    """Where to POST a local gateway's commands: `/cgi-bin/post_manager` (or `cgi_manager`, for
    the EAGLE-100's LocalCommand API) unless a path is given."""
    url = address if "://" in address else f"http://{address}"
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        return f"{parts.scheme}://{parts.netloc}/cgi-bin/{api or 'post_manager'}"
    return url


def new_push_key() -> str:
    """A fresh push key: 32 URL-safe characters, typed once into the gateway's uploader page."""
    return secrets.token_urlsafe(24)


def push_key_digest(key: str) -> str:
    """What is stored of a push key (it is random and long, so SHA-256 is enough)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _fingerprint(value: object) -> str:
    text = value.replace(":", "").strip().lower() if isinstance(value, str) else ""
    if not FINGERPRINT_RE.match(text):
        raise ValidationError(
            "tls_fingerprint must be the certificate's SHA-256 as 64 hex digits (colons allowed), "
            "as `openssl x509 -noout -fingerprint -sha256` prints it.",
            field="tls_fingerprint",
        )
    return text


@dataclass(frozen=True)
class DeviceInput:
    """A create-or-update request for one device, already validated."""

    cloud_id: str
    user_email: str = ""
    user_pw: str = field(default="", repr=False)  # the relay account's password (eagle100-cloud)
    protocol: str = DEFAULT_PROTOCOL
    address: str = ""
    install_code: str = field(default="", repr=False)  # the local gateway's secret
    tls_verify: bool | None = None  # None: the protocol's default
    tls_fingerprint: str = ""
    active: bool = True
    push_key: str = field(default="", repr=False)  # a push device's key; "" keeps the stored one
    api: str = ""  # an eagle100-local gateway's local API: "" (post_manager) or "cgi_manager"

    @property
    def secret(self) -> str:
        """The one secret a polled protocol authenticates with (push keys are digested instead)."""
        return self.user_pw if self.protocol == CLOUD else self.install_code

    @classmethod
    def from_mapping(cls, data: object, cloud_id: str | None = None) -> DeviceInput:
        """Validate a JSON object (an import line or an API body); one sentence per bad field."""
        if not isinstance(data, dict):
            raise ValidationError(
                "expected a JSON object with cloud_id and either user_email and user_pw "
                "(eagle100-cloud) or address and install_code (a local gateway)."
            )
        unknown = sorted(set(data) - INPUT_FIELDS)
        if unknown:
            raise ValidationError(
                f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(INPUT_FIELDS))}.",
                field=unknown[0],
            )
        cid = normalize_cloud_id(cloud_id if cloud_id is not None else data.get("cloud_id"))
        if cloud_id is not None and "cloud_id" in data and normalize_cloud_id(data["cloud_id"]) != cid:
            raise ValidationError("cloud_id in the body differs from the one in the URL.", field="cloud_id")
        protocol = data.get("protocol", DEFAULT_PROTOCOL)
        if protocol not in PROTOCOLS:
            raise ValidationError(
                f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}.", field="protocol"
            )
        active = data.get("active", True)
        if not isinstance(active, bool):
            raise ValidationError("active must be true or false.", field="active")
        tls_verify = data.get("tls_verify")
        if tls_verify is not None and not isinstance(tls_verify, bool):
            raise ValidationError("tls_verify must be true or false.", field="tls_verify")
        if protocol == CLOUD:
            return cls._cloud(cid, data, tls_verify, active)
        if protocol == PUSH:
            return cls._push(cid, data, active)
        if data.get("push_key"):
            raise ValidationError('push_key is for push devices (protocol "push").', field="push_key")
        return cls._local(cid, protocol, data, tls_verify, active)

    @classmethod
    def _push(cls, cid: str, data: dict[str, Any], active: bool) -> DeviceInput:
        for name in ("user_pw", "install_code", "address", "tls_verify", "tls_fingerprint"):
            if data.get(name) not in (None, ""):
                raise ValidationError(
                    f"{name} is for polled gateways; a push device needs only its push_key "
                    "(or none: one is made and shown once).",
                    field=name,
                )
        key = data.get("push_key", "")
        if key != "" and (not isinstance(key, str) or not PUSH_KEY_RE.match(key)):
            raise ValidationError(
                "push_key must be 16 to 128 letters, digits or -_.~ (leave it out and one is made).",
                field="push_key",
            )
        email = _email(data.get("user_email"), required=False)
        return cls(cid, email, "", PUSH, "", "", None, "", active, key)

    @classmethod
    def _cloud(cls, cid: str, data: dict[str, Any], tls_verify: bool | None, active: bool) -> DeviceInput:
        email = _email(data.get("user_email"), required=True)
        password = data.get("user_pw")
        if not isinstance(password, str) or not password:
            raise ValidationError(
                "user_pw must be a non-empty string (the rainforestcloud.com account password).",
                field="user_pw",
            )
        for name in ("install_code", "tls_fingerprint"):
            if data.get(name):
                raise ValidationError(
                    f"{name} is for local gateways; an eagle100-cloud device uses user_email and user_pw.",
                    field=name,
                )
        address = data.get("address", "")
        if not isinstance(address, str):
            raise ValidationError("address must be a string.", field="address")
        return cls(cid, email, password, CLOUD, address.strip(), "", tls_verify, "", active)

    @classmethod
    def _local(
        cls, cid: str, protocol: str, data: dict[str, Any], tls_verify: bool | None, active: bool
    ) -> DeviceInput:
        if not data.get("address"):
            raise ValidationError(
                f"an {protocol} device needs address: the gateway's host, host:port or URL on its "
                "network, such as 192.168.1.20 or https://192.168.1.20 for an EAGLE-3.",
                field="address",
            )
        address = normalize_address(data["address"])
        code = data.get("install_code")
        if not isinstance(code, str) or not INSTALL_CODE_RE.match(code.strip()):
            raise ValidationError(
                "install_code must be the 16 hex digits printed on the gateway's label, "
                "such as 1a2b3c4d5e6f7a8b.",
                field="install_code",
            )
        if data.get("user_pw"):
            raise ValidationError(
                "user_pw is for eagle100-cloud devices; a local gateway authenticates with install_code.",
                field="user_pw",
            )
        fingerprint = ""
        if data.get("tls_fingerprint") is not None:
            fingerprint = _fingerprint(data["tls_fingerprint"])
            if not address.startswith("https://"):
                raise ValidationError(
                    "tls_fingerprint pins an HTTPS certificate: give an https:// address with it.",
                    field="tls_fingerprint",
                )
        email = _email(data.get("user_email"), required=False)
        api = data.get("api") or ""
        if api not in LOCAL_APIS or (api and protocol != "eagle100-local"):
            raise ValidationError(
                'api is an eagle100-local gateway\'s local API: "post_manager" (the default, the REST '
                'commands) or "cgi_manager" (the web page\'s LocalCommand API).',
                field="api",
            )
        return cls(cid, email, "", protocol, address, code.strip(), tls_verify, fingerprint, active,
                   api="" if api == "post_manager" else api)  # fmt: skip

    def stored_fields(self) -> dict[str, str]:
        """The plain (non-secret) fields as kept in the device hash."""
        return {
            "cloud_id": self.cloud_id,
            "user_email": self.user_email,
            "protocol": self.protocol,
            "address": self.address,
            "tls_verify": "" if self.tls_verify is None else ("1" if self.tls_verify else "0"),
            "tls_fingerprint": self.tls_fingerprint,
            "active": "1" if self.active else "0",
            "api": self.api,
        }


def _email(value: object, *, required: bool) -> str:
    if not required and value in (None, ""):
        return ""
    if not isinstance(value, str) or not EMAIL_RE.match(value.strip()):
        raise ValidationError(
            "user_email must be an email address such as me@example.com.", field="user_email"
        )
    return value.strip()


HEALTH_FIELDS = (
    "health", "health_since", "condition", "condition_since", "bad_reply", "activated_at",
    "push_refused", "push_refused_since", "push_refused_at",
)  # fmt: skip
SECRET_FIELDS = {
    CLOUD: "user_pw_enc",
    "eagle100-local": "install_code_enc",
    "eagle200-local": "install_code_enc",
}


@dataclass(frozen=True)
class DeviceRecord:
    """One device as stored; `encrypted_secret` is the encrypted secret, never the plaintext."""

    cloud_id: str
    user_email: str
    encrypted_secret: str  # the encrypted user_pw (relay) or install_code (local)
    protocol: str
    address: str
    active: bool
    created_at: float
    tls_verify: bool | None = None
    tls_fingerprint: str = ""
    api: str = ""  # an eagle100-local gateway's local API: "" (post_manager) or "cgi_manager"
    total_events_logged: int = 0
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    consecutive_failures: int = 0
    last_error: str = ""
    last_success_at: float | None = None
    archived_hours: int = 0  # device-hours rotate has put in the archive
    last_archived_hour: str | None = None  # YYYY-MM-DD-HH, the latest of them
    last_backfill: dict[str, Any] | None = None  # the last refill from the gateway's history
    push_key_sha256: str = ""  # a push device's key, digested
    crawl_json: str = ""  # the latest crawl (model, firmware, meter, link), parsed when asked
    last_reading: str = ""  # the last demand line, parsed when asked
    health_fields: dict[str, str] = field(default_factory=dict)  # read by app.health, written by it
    enrolment: Enrolment | None = None  # its study, participant and consent window (app.studies)

    @property
    def study(self) -> str:
        """The study it belongs to: its enrolment's, or the default study's."""
        return self.enrolment.study if self.enrolment is not None else DEFAULT_STUDY

    def consented(self, at: float) -> bool:
        """Whether its household consented to readings at this moment (always, in no study)."""
        return self.enrolment is None or self.enrolment.covers(at)

    @functools.cached_property
    def fresh_at(self) -> float | None:
        """When the newest reading arrived (its line's polled_at)."""
        if not self.last_reading:
            return None
        try:
            value = orjson.loads(self.last_reading).get("polled_at")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return float(value) if isinstance(value, int | float) else None

    @functools.cached_property
    def crawl(self) -> dict[str, Any] | None:
        return orjson.loads(self.crawl_json) if self.crawl_json else None

    @functools.cached_property
    def clock_offset_s(self) -> float | None:
        """How far the gateway's clock is behind ours (negative: ahead), by its last reading:
        when it reached us less the time the gateway stamped on it. None without a timed one."""
        if not self.last_reading:
            return None
        try:
            line = orjson.loads(self.last_reading)
        except orjson.JSONDecodeError:
            return None
        polled, stamped = line.get("polled_at"), line.get("device_time") if isinstance(line, dict) else None
        if not isinstance(polled, int | float) or not isinstance(stamped, int | float):
            return None
        return round(float(polled) - float(stamped), 1)

    @functools.cached_property
    def last_kw(self) -> float | None:
        """The last demand reading's kW (negative: exporting)."""
        return _last_kw(self.last_reading)

    @property
    def status(self) -> str:
        """ok (last poll worked), failing (last poll failed), or never (no success yet)."""
        if self.consecutive_failures > 0:
            return "failing"
        return "ok" if self.last_success_at is not None else "never"

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> DeviceRecord:
        protocol = h.get("protocol", DEFAULT_PROTOCOL)
        verify = h.get("tls_verify", "")
        return cls(
            cloud_id=h["cloud_id"],
            user_email=h.get("user_email", ""),
            encrypted_secret=h.get(SECRET_FIELDS.get(protocol, ""), ""),
            protocol=protocol,
            address=h.get("address", ""),
            active=h.get("active", "1") == "1",
            created_at=float(h.get("created_at", "0")),
            tls_verify=None if verify == "" else verify == "1",
            tls_fingerprint=h.get("tls_fingerprint", ""),
            api=h.get("api", ""),
            total_events_logged=int(h.get("total_events_logged", "0")),
            first_timestamp=_opt_float(h.get("first_timestamp")),
            last_timestamp=_opt_float(h.get("last_timestamp")),
            consecutive_failures=int(h.get("consecutive_failures", "0")),
            last_error=h.get("last_error", ""),
            last_success_at=_opt_float(h.get("last_success_at")),
            archived_hours=int(h.get("archived_hours", "0")),
            last_archived_hour=h.get("last_archived_hour") or None,
            last_backfill=orjson.loads(h["last_backfill"]) if h.get("last_backfill") else None,
            push_key_sha256=h.get("push_key_sha256", ""),
            crawl_json=h.get("crawl", ""),
            last_reading=h.get("last_reading", ""),
            health_fields={k: h[k] for k in HEALTH_FIELDS if k in h},
            enrolment=Enrolment.from_hash(h),
        )

    def public(self) -> dict[str, Any]:
        """The record as shown to people and API clients: secrets left out."""
        return {
            "cloud_id": self.cloud_id,
            "user_email": self.user_email,
            "protocol": self.protocol,
            "address": self.address,
            "tls_verify": self.tls_verify,
            "tls_fingerprint": self.tls_fingerprint or None,
            "api": (self.api or "post_manager") if self.protocol == "eagle100-local" else None,
            "active": self.active,
            "created_at": self.created_at,
            "status": self.status,
            "total_events_logged": self.total_events_logged,
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_success_at": self.last_success_at,
            "clock_offset_s": self.clock_offset_s,
            "archived_hours": self.archived_hours,
            "last_archived_hour": self.last_archived_hour,
            "last_backfill": self.last_backfill,
            "study": self.study,
            "enrolment": self.enrolment.public() if self.enrolment is not None else None,
        }


def _last_kw(line: str | None) -> float | None:
    if not line:
        return None
    try:
        value = orjson.loads(line).get("demand_kw")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _opt_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None
