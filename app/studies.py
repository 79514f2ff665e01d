"""Studies and their participants: what a study is, what an enrolment is, and the one rule for
consent windows.

A study groups households for a research team: a slug id, a name, a default IANA time zone,
contact e-mails and its own notification routes (apprise URLs; they hold secrets, so a study names
them by digest and the store keeps them encrypted). A household's enrolment ties its device to one
study for a window (`enrolled_from`, optional `enrolled_until`) under a pseudonymous
`participant_id`, with the household's own time zone. Outside its window a device is not polled,
its pushes are refused, and no data route returns its readings. A device in no study belongs to
the default study, with no window: a deployment without studies works as before.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.errors import ValidationError

DEFAULT = "default"  # the study of every device enrolled in none
STUDY_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
PARTICIPANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
STATES = ("enrolled", "completed", "withdrawn")
FOREVER = float("inf")
ENROLMENT_INPUT = ("cloud_id", "enrolled_from", "enrolled_until", "participant_id", "timezone")


def study_id(value: object) -> str:
    if not isinstance(value, str) or not STUDY_ID_RE.match(value):
        raise ValidationError(
            "a study id is 1-40 lowercase letters, digits and '-', starting with a letter or digit "
            f"(such as heat-pump-2027), got {str(value)[:50]!r}.",
            field="study",
        )
    return value


def zone(value: object, what: str = "timezone") -> str:
    """An IANA time zone name, checked against the zone database."""
    try:
        if not isinstance(value, str) or not value:
            raise ValueError
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValidationError(
            f"{what} must be an IANA time zone such as America/Chicago, got {str(value)[:50]!r}.", field=what
        ) from None
    return value


def moment(value: object, what: str, tz: str = "UTC") -> float:
    """A date (its start in the household's zone), an ISO 8601 time, or Unix seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).timestamp()
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return (at if at.tzinfo else at.replace(tzinfo=ZoneInfo(tz))).timestamp()
    raise ValidationError(
        f"{what} must be a date (2027-01-15, the start of that day in the household's time zone), "
        f"an ISO 8601 time or Unix seconds, got {str(value)[:50]!r}.",
        field=what,
    )


@dataclass(frozen=True)
class Study:
    id: str
    name: str
    timezone: str = "UTC"
    contacts: tuple[str, ...] = ()
    created_at: float = 0.0
    route_ids: tuple[str, ...] = ()  # what names its routes anywhere but the vault: digests of their URLs
    routes: tuple[str, ...] | None = field(default=None, repr=False, compare=False)  # URLs, when given

    @classmethod
    def from_mapping(cls, data: object, sid: str | None = None) -> Study:
        if not isinstance(data, dict):
            raise ValidationError("a study is a JSON object with name, timezone and contacts.")
        unknown = sorted(set(data) - {"id", "name", "timezone", "contacts", "routes"})
        if unknown:
            raise ValidationError(
                f"unknown field {unknown[0]!r}; allowed: contacts, id, name, routes, timezone."
            )
        found = study_id(sid if sid is not None else data.get("id"))
        if sid is not None and data.get("id", sid) != sid:
            raise ValidationError("id in the body differs from the one in the URL.", field="id")
        name = data.get("name", found)
        if not isinstance(name, str) or not 0 < len(name.strip()) <= 200:
            raise ValidationError("name must be text of 1 to 200 characters.", field="name")
        contacts = data.get("contacts", [])
        if isinstance(contacts, str):
            contacts = [c for c in contacts.split(",") if c.strip()]
        if not isinstance(contacts, list) or not all(
            isinstance(c, str) and EMAIL_RE.match(c.strip()) for c in contacts
        ):
            raise ValidationError("contacts must be a list of e-mail addresses.", field="contacts")
        routes, ids = (None, ()) if "routes" not in data else _routes(data["routes"])
        return cls(
            found,
            name.strip(),
            zone(data.get("timezone", "UTC")),
            tuple(c.strip() for c in contacts),
            route_ids=ids,
            routes=routes,
        )

    def fields(self) -> dict[str, str]:
        return {
            "id": self.id,
            "name": self.name,
            "timezone": self.timezone,
            "contacts": ",".join(self.contacts),
            "created_at": repr(self.created_at),
            "route_ids": ",".join(self.route_ids),
        }

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Study:
        return cls(
            h["id"],
            h.get("name", h["id"]),
            h.get("timezone", "UTC"),
            tuple(c for c in h.get("contacts", "").split(",") if c),
            float(h.get("created_at", "0")),
            tuple(r for r in h.get("route_ids", "").split(",") if r),
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "timezone": self.timezone,
            "contacts": list(self.contacts),
            "routes": list(self.route_ids),
            "created_at": self.created_at,
        }


MAX_ROUTES = 10


def _routes(value: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A study's notification routes: apprise URLs apprise understands (json://, slack://, ...),
    and the names they go by (digests)."""
    from app.alerts.routes import understood, webhook_id  # apprise: loaded only where routes are given

    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or len(value) > MAX_ROUTES or not all(isinstance(u, str) for u in value):
        raise ValidationError(
            f"routes must be a list of at most {MAX_ROUTES} notification URLs (json://, slack://, ...).",
            field="routes",
        )
    for n, url in enumerate(value, 1):
        if not understood(url):
            raise ValidationError(  # the URL itself may hold a secret: it is never repeated back
                f"route {n} is not a notification URL apprise understands (json://, slack://, ntfy://, ...).",
                field="routes",
            )
    urls = tuple(dict.fromkeys(value))
    return urls, tuple(webhook_id(u) for u in urls)


@dataclass(frozen=True)
class Enrolment:
    """A device's place in a study: who it is there, where it lives, and its consent window."""

    study: str
    participant_id: str
    timezone: str
    enrolled_from: float
    enrolled_until: float | None = None
    state: str = "enrolled"
    cloud_id: str = field(default="", compare=False)

    def covers(self, at: float) -> bool:
        """Whether the household consented to readings at this moment."""
        return self.state != "withdrawn" and self.enrolled_from <= at < (self.enrolled_until or FOREVER)

    def clamp(self, start: float, end: float) -> tuple[float, float] | None:
        """The part of [start, end) inside the window, or None."""
        lo, hi = max(start, self.enrolled_from), min(end, self.enrolled_until or FOREVER)
        return (lo, hi) if lo < hi and self.state != "withdrawn" else None

    def completed(self, now: float) -> Enrolment:
        """The enrolment, completed: its window ends now, or earlier when it was to end earlier."""
        end = self.enrolled_until if self.enrolled_until is not None else now
        return dataclasses.replace(
            self, enrolled_until=max(min(end, now), self.enrolled_from), state="completed"
        )

    @classmethod
    def from_mapping(
        cls, data: object, study: Study, cloud_id: str, current: Enrolment | None = None
    ) -> Enrolment:
        """An enrolment as asked for; enrolling again in the same study (`current`) without a
        participant_id keeps the household's pseudonym."""
        if not isinstance(data, dict):
            raise ValidationError(
                "an enrolment is a JSON object with enrolled_from, and optionally "
                "participant_id, timezone and enrolled_until."
            )
        unknown = sorted(set(data) - set(ENROLMENT_INPUT))
        if unknown:
            raise ValidationError(f"unknown field {unknown[0]!r}; allowed: {', '.join(ENROLMENT_INPUT)}.")
        kept = current.participant_id if current is not None and current.study == study.id else None
        pid = data.get("participant_id") or kept or new_participant_id()
        if not isinstance(pid, str) or not PARTICIPANT_RE.match(pid):
            raise ValidationError(
                "participant_id is 1-40 letters, digits, '.', '_' or '-' (a pseudonym, never a name).",
                field="participant_id",
            )
        tz = zone(data.get("timezone", study.timezone))
        start = moment(data.get("enrolled_from"), "enrolled_from", tz)
        until = data.get("enrolled_until")
        end = None if until in (None, "") else moment(until, "enrolled_until", tz)
        if end is not None and end <= start:
            raise ValidationError("enrolled_until must come after enrolled_from.", field="enrolled_until")
        return cls(study.id, pid, tz, start, end, "enrolled", cloud_id)

    def fields(self) -> dict[str, str]:
        return {
            "study": self.study,
            "participant_id": self.participant_id,
            "tz": self.timezone,
            "enrolled_from": repr(self.enrolled_from),
            "enrolled_until": "" if self.enrolled_until is None else repr(self.enrolled_until),
            "enrol_state": self.state,
        }

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Enrolment | None:
        if not h.get("study"):
            return None
        until = h.get("enrolled_until")
        return cls(
            h["study"],
            h.get("participant_id", ""),
            h.get("tz", "UTC"),
            float(h.get("enrolled_from", "0")),
            float(until) if until else None,
            h.get("enrol_state", "enrolled"),
            h.get("cloud_id", ""),
        )

    def public(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "participant_id": self.participant_id,
            "timezone": self.timezone,
            "enrolled_from": self.enrolled_from,
            "enrolled_until": self.enrolled_until,
            "state": self.state,
            "enrolled_from_local": _local(self.enrolled_from, self.timezone),
            "enrolled_until_local": _local(self.enrolled_until, self.timezone),
        }


def new_participant_id() -> str:
    """A pseudonym that says nothing of the household: p- and 8 random hex digits."""
    return f"p-{secrets.token_hex(4)}"


def _local(at: float | None, tz: str) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, ZoneInfo(tz)).isoformat(timespec="seconds")


def utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
