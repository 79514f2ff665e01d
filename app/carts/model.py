"""A cart request (validated), the cart record, its states and error reasons."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from app.devices import normalize_cloud_id
from app.errors import ValidationError

WAITING, STAGING, BUNDLING, READY, ERROR = "waiting", "staging", "bundling", "ready", "error"
ERASED = "erased"  # it held a household whose readings were erased (app.erasure): gone with them
BUILDING = frozenset({WAITING, STAGING, BUNDLING})
STATES = (WAITING, STAGING, BUNDLING, READY, ERROR, ERASED)
ERASED_MESSAGE = (
    "This cart held the readings of a household that withdrew from its study; they were erased, "
    "and the cart with them: ask for a new one."
)
# Why a cart failed; each comes with a one-sentence message.
NO_SPACE, ARCHIVE_UNAVAILABLE, HASH_MISMATCH = "NO_SPACE", "ARCHIVE_UNAVAILABLE", "HASH_MISMATCH"
CANCELLED, TIMEOUT, EMPTY, FAILED = "CANCELLED", "TIMEOUT", "EMPTY", "FAILED"
REASONS = (NO_SPACE, ARCHIVE_UNAVAILABLE, HASH_MISMATCH, CANCELLED, TIMEOUT, EMPTY, FAILED)
FORMATS = ("jl", "csv", "parquet")
_FIELDS = {"devices", "start", "end", "format", "pseudonymize", "study"}
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_FILENAME_BAD = re.compile(r'[\x00-\x1f\x7f/\\"]')


def cart_id(value: str) -> str:
    """A cart id is a UUID in its canonical lowercase form; anything else is a ValidationError."""
    if not _UUID_RE.match(value):
        raise ValidationError(
            f"a cart id is a UUID like 3f2b6c1e-8d4a-4c7e-9b1f-2a6d5e8c7b90, got {value[:60]!r}.",
            field="cart_id",
        )
    return str(uuid.UUID(value))


def new_cart_id() -> str:
    return str(uuid.uuid4())


def download_name(value: str | None, created_at: float) -> str:
    """The name a download is saved as: `filename` if it is a plain file name, else the default."""
    if value is None:
        return time.strftime("data_%Y_%m_%d_%H_%M_%S.tar", time.gmtime(created_at))
    if (
        not value
        or len(value) > 200
        or _FILENAME_BAD.search(value)
        or value.startswith(".")
        or value in ("..",)
    ):
        raise ValidationError(
            "filename must be a plain file name (no slashes, quotes, control characters or leading dot), "
            "at most 200 characters, like my-data.tar.",
            field="filename",
        )
    return value


def parse_time(value: object, name: str) -> float:
    """ISO 8601 (a time without a zone is UTC) or Unix seconds → Unix seconds."""
    if isinstance(value, bool):
        raise ValidationError(f"{name} must be ISO 8601 or Unix seconds, got {value!r}.", field=name)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(
                f"{name} must be ISO 8601 (2026-11-01T00:00:00Z) or Unix seconds, got {value[:40]!r}.",
                field=name,
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp()
    else:
        raise ValidationError(
            f"{name} is required: ISO 8601 (2026-11-01T00:00:00Z) or Unix seconds.", field=name
        )
    if not 946684800 <= seconds <= 4102444800:  # 2000 to 2100: anything else is a typo
        raise ValidationError(f"{name} must fall between the years 2000 and 2100.", field=name)
    return seconds


@dataclass(frozen=True)
class CartRequest:
    """What a researcher asked for: devices (or all), a half-open time range [start, end), a format."""

    devices: tuple[str, ...] | None  # None: every registered device
    start: float
    end: float
    format: str = "jl"
    pseudonymize: bool = False  # households by pseudonym: no cloud_id, e-mail or MAC (app.carts.pseudonyms)
    study: str = ""  # a whole study was asked for (its households are `devices`)

    @classmethod
    def from_mapping(cls, body: object) -> CartRequest:
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object with devices, start and end.")
        unknown = set(body) - _FIELDS
        if unknown:
            raise ValidationError(
                f"unknown field {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_FIELDS))}.",
                field=sorted(unknown)[0],
            )
        raw = body.get("devices")
        devices: tuple[str, ...] | None
        if raw == "all":
            devices = None
        elif isinstance(raw, list) and raw:
            if len(raw) > 100_000:
                raise ValidationError('devices lists at most 100,000 cloud_ids; use "all" for the fleet.')
            devices = tuple(sorted({normalize_cloud_id(v) for v in raw}))
        else:
            raise ValidationError('devices must be a non-empty list of cloud_ids, or "all".', field="devices")
        start, end = parse_time(body.get("start"), "start"), parse_time(body.get("end"), "end")
        if end <= start:
            raise ValidationError("end must be after start (the range is [start, end)).", field="end")
        fmt = body.get("format", "jl")
        if fmt not in FORMATS:
            raise ValidationError(
                f'format must be "jl", "csv" or "parquet", got {str(fmt)[:20]!r}.', field="format"
            )
        pseudonymize = body.get("pseudonymize", False)
        if not isinstance(pseudonymize, bool):
            raise ValidationError("pseudonymize must be true or false.", field="pseudonymize")
        study = body.get("study", "")
        if not isinstance(study, str):
            raise ValidationError("study must be a study's id.", field="study")
        return cls(devices, start, end, str(fmt), pseudonymize, study)

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": list(self.devices) if self.devices is not None else "all",
            "start": _iso_exact(self.start),
            "end": _iso_exact(self.end),
            "format": self.format,
            "pseudonymize": self.pseudonymize,
            **({"study": self.study} if self.study else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CartRequest:
        if data.get("devices") == []:  # an erased cart whose only household was erased
            rest = cls.from_mapping({**data, "devices": "all"})
            return cls((), rest.start, rest.end, rest.format, rest.pseudonymize, rest.study)
        return cls.from_mapping(data)

    def without(self, cloud_id: str) -> CartRequest:
        """The request, no longer naming an erased household."""
        if self.devices is None:
            return self
        return dataclasses.replace(self, devices=tuple(d for d in self.devices if d != cloud_id))


@dataclass
class Cart:
    """A cart as stored in Redis (`rf:cart:{id}`)."""

    id: str
    owner: str  # the token's name
    owner_since: float  # the token's created_at: a later token reusing the name is someone else
    request: CartRequest
    status: str = WAITING
    reason: str = ""
    message: str = ""
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    size: int = 0  # the tar's bytes once ready
    created_at: float = 0.0
    updated_at: float = 0.0
    last_access: float = 0.0
    attempt: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Cart:
        return cls(
            id=h["id"], owner=h.get("owner", ""), owner_since=float(h.get("owner_since", "0")),
            request=CartRequest.from_json(orjson.loads(h["request"])), status=h.get("status", WAITING),
            reason=h.get("reason", ""), message=h.get("message", ""),
            files_done=int(h.get("files_done", "0")), files_total=int(h.get("files_total", "0")),
            bytes_done=int(h.get("bytes_done", "0")), bytes_total=int(h.get("bytes_total", "0")),
            size=int(h.get("size", "0")), created_at=float(h.get("created_at", "0")),
            updated_at=float(h.get("updated_at", "0")), last_access=float(h.get("last_access", "0")),
            attempt=int(h.get("attempt", "1")), extra=h,
        )  # fmt: skip

    def to_hash(self) -> dict[str, str]:
        return {
            "id": self.id, "owner": self.owner, "owner_since": repr(self.owner_since),
            "request": orjson.dumps(self.request.to_json()).decode(), "status": self.status,
            "reason": self.reason, "message": self.message, "files_done": "0", "files_total": "0",
            "bytes_done": "0", "bytes_total": "0", "size": "0", "created_at": repr(self.created_at),
            "updated_at": repr(self.updated_at), "last_access": repr(self.last_access),
            "attempt": str(self.attempt),
        }  # fmt: skip

    def progress(self) -> str:
        """`X-Cart-Progress`: files and bytes done of the total."""
        return f"files={self.files_done}/{self.files_total} bytes={self.bytes_done}/{self.bytes_total}"

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "reason": self.reason or None,
            "message": self.message,
            "progress": {
                "files_done": self.files_done, "files_total": self.files_total,
                "bytes_done": self.bytes_done, "bytes_total": self.bytes_total,
            },
            "size": self.size if self.status == READY else None,
            "request": self.request.to_json(),
            "owner": self.owner,
            "created_at": _iso(self.created_at),
            "last_access": _iso(self.last_access),
        }  # fmt: skip


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_exact(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
