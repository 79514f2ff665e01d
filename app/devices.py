"""What a device is: validation of operator input and the record kept in Redis."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.errors import ValidationError

CLOUD_ID_RE = re.compile(r"^[0-9a-f]{6}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PROTOCOLS = ("eagle100-cloud",)
DEFAULT_PROTOCOL = "eagle100-cloud"
INPUT_FIELDS = frozenset({"cloud_id", "user_email", "user_pw", "protocol", "address", "active"})


def normalize_cloud_id(value: object) -> str:
    """A cloud_id as 6 lowercase hex digits, leading zeros kept; anything else is refused."""
    if not isinstance(value, str) or not CLOUD_ID_RE.match(value.strip().lower()):
        raise ValidationError(
            f"cloud_id must be 6 hex digits such as 002738, got {value!r}.", field="cloud_id"
        )
    return value.strip().lower()


@dataclass(frozen=True)
class DeviceInput:
    """A create-or-update request for one device, already validated."""

    cloud_id: str
    user_email: str
    user_pw: str
    protocol: str = DEFAULT_PROTOCOL
    address: str = ""
    active: bool = True

    def __repr__(self) -> str:  # the password must never reach a log line
        return f"DeviceInput(cloud_id={self.cloud_id!r}, user_email={self.user_email!r}, user_pw='***')"

    @classmethod
    def from_mapping(cls, data: object, cloud_id: str | None = None) -> DeviceInput:
        """Validate a JSON object (an import line or an API body)."""
        if not isinstance(data, dict):
            raise ValidationError("expected a JSON object with cloud_id, user_email and user_pw.")
        unknown = sorted(set(data) - INPUT_FIELDS)
        if unknown:
            raise ValidationError(
                f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(INPUT_FIELDS))}.",
                field=unknown[0],
            )
        cid = normalize_cloud_id(cloud_id if cloud_id is not None else data.get("cloud_id"))
        if cloud_id is not None and "cloud_id" in data and normalize_cloud_id(data["cloud_id"]) != cid:
            raise ValidationError("cloud_id in the body differs from the one in the URL.", field="cloud_id")
        email = data.get("user_email")
        if not isinstance(email, str) or not EMAIL_RE.match(email.strip()):
            raise ValidationError(
                "user_email must be an email address such as me@example.com.", field="user_email"
            )
        password = data.get("user_pw")
        if not isinstance(password, str) or not password:
            raise ValidationError(
                "user_pw must be a non-empty string (the gateway account password).",
                field="user_pw",
            )
        protocol = data.get("protocol", DEFAULT_PROTOCOL)
        if protocol not in PROTOCOLS:
            raise ValidationError(
                f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}.",
                field="protocol",
            )
        address = data.get("address", "")
        if not isinstance(address, str):
            raise ValidationError(
                "address must be a string (host or URL of a local gateway).", field="address"
            )
        active = data.get("active", True)
        if not isinstance(active, bool):
            raise ValidationError("active must be true or false.", field="active")
        return cls(cid, email.strip(), password, protocol, address.strip(), active)


@dataclass(frozen=True)
class DeviceRecord:
    """One device as stored; `password_token` is the encrypted password, never the plaintext."""

    cloud_id: str
    user_email: str
    password_token: str
    protocol: str
    address: str
    active: bool
    created_at: float
    total_events_logged: int = 0
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    consecutive_failures: int = 0
    last_error: str = ""
    last_success_at: float | None = None
    archived_hours: int = 0  # device-hours rotate has put in the archive
    last_archived_hour: str | None = None  # YYYY-MM-DD-HH, the latest of them

    @property
    def status(self) -> str:
        """ok (last poll worked), failing (last poll failed), or never (no success yet)."""
        if self.consecutive_failures > 0:
            return "failing"
        return "ok" if self.last_success_at is not None else "never"

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> DeviceRecord:
        return cls(
            cloud_id=h["cloud_id"],
            user_email=h.get("user_email", ""),
            password_token=h.get("user_pw_enc", ""),
            protocol=h.get("protocol", DEFAULT_PROTOCOL),
            address=h.get("address", ""),
            active=h.get("active", "1") == "1",
            created_at=float(h.get("created_at", "0")),
            total_events_logged=int(h.get("total_events_logged", "0")),
            first_timestamp=_opt_float(h.get("first_timestamp")),
            last_timestamp=_opt_float(h.get("last_timestamp")),
            consecutive_failures=int(h.get("consecutive_failures", "0")),
            last_error=h.get("last_error", ""),
            last_success_at=_opt_float(h.get("last_success_at")),
            archived_hours=int(h.get("archived_hours", "0")),
            last_archived_hour=h.get("last_archived_hour") or None,
        )

    def public(self) -> dict[str, Any]:
        """The record as shown to people and API clients: credentials left out."""
        return {
            "cloud_id": self.cloud_id,
            "user_email": self.user_email,
            "protocol": self.protocol,
            "address": self.address,
            "active": self.active,
            "created_at": self.created_at,
            "status": self.status,
            "total_events_logged": self.total_events_logged,
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_success_at": self.last_success_at,
            "archived_hours": self.archived_hours,
            "last_archived_hour": self.last_archived_hour,
        }


def _opt_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None
