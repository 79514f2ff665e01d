"""A household's health by cause: the one definition the pages, the API, `rainforest status`, the
metrics and the alerts all use.

Each active device is in exactly one state, with the time its trouble began (`since`):

- `ok`: new readings arrive;
- `frozen`: the gateway answers, but the reading's own time has not moved for FROZEN_AFTER_S;
- `meter_offline`: the gateway answers but has no connected meter (METER_OFFLINE_AFTER_S);
- `unreachable`: timeouts, refused connections or 5xx for SILENT_AFTER_S;
- `auth`: credentials refused for AUTH_AFTER_S (a push device: uploads refused for a wrong key);
- `bad_reply`: replies that cannot be read for BAD_REPLY_AFTER_S (the last one is kept);
- `push_silent`: a push device with no upload for PUSH_STALE_S;
- `unpolled`: active, but no live pinger has held it for UNPOLLED_AFTER_S (an operations fault);
- `never` (no reading yet) and `inactive`.

A polled device's state is kept by the pinger that polls it (`Tracker`, stored on the device's
record as `health`, `health_since`, `condition`, `condition_since`): each poll's outcome is a
condition, and a condition takes over only once it has held for its threshold, so one timeout in
three polls is not an outage. A new reading makes the device `ok` at once. `view` adds what no
poll can see (inactive, unpolled, a push device's silence or refusals) when a record is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.devices import PUSH, DeviceRecord
from app.settings import Settings

OK = "ok"
STATES = (
    "ok", "frozen", "meter_offline", "unreachable", "auth", "bad_reply", "push_silent", "unpolled",
    "never", "inactive",
)  # fmt: skip
QUIET = frozenset({"ok", "never", "inactive"})  # the states that open no alert
ACTIONS = {
    "ok": "",
    "frozen": "Power-cycle the gateway: it answers, but its reading has stopped moving.",
    "meter_offline": "The gateway is fine; the utility must re-provision the meter's link to it.",
    "unreachable": "Check the gateway's power and the home's network, then power-cycle it.",
    "auth": "The install code or password changed: enter it again.",
    "bad_reply": "The gateway's replies cannot be read (often new firmware): send the kept reply to "
    "the developers.",
    "push_silent": "The gateway stopped uploading: check its power, network and upload settings.",
    "unpolled": "No pinger holds this device: check that the pingers run (`rainforest status`).",
    "never": "Waiting for the first reading.",
    "inactive": "",
}
# a poll's failure kind (app.errors) → the condition it is evidence of
FAILURE_CAUSE = {
    "timeout": "unreachable",
    "unavailable": "unreachable",
    "device_error": "unreachable",
    "auth": "auth",
    "tls": "auth",
    "bad_reply": "bad_reply",
    "meter_offline": "meter_offline",
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """How long each condition must hold before it becomes the device's state."""

    frozen_s: float = 900.0
    silent_s: float = 600.0
    meter_offline_s: float = 300.0
    auth_s: float = 120.0
    bad_reply_s: float = 300.0
    push_stale_s: float = 60.0
    unpolled_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            frozen_s=settings.frozen_after_s,
            silent_s=settings.silent_after_s,
            meter_offline_s=settings.meter_offline_after_s,
            auth_s=settings.auth_after_s,
            bad_reply_s=settings.bad_reply_after_s,
            push_stale_s=settings.push_stale_s,
            unpolled_s=settings.unpolled_after_s,
        )

    def of(self, condition: str) -> float:
        return {
            "frozen": self.frozen_s,
            "unreachable": self.silent_s,
            "meter_offline": self.meter_offline_s,
            "auth": self.auth_s,
            "bad_reply": self.bad_reply_s,
            "push_silent": self.push_stale_s,
            "unpolled": self.unpolled_s,
        }.get(condition, 0.0)


@dataclass(slots=True)
class Tracker:
    """One polled device's state and the condition its polls show now (kept by its pinger)."""

    state: str = "never"
    since: float = 0.0
    condition: str = OK
    condition_since: float = 0.0
    fresh_at: float | None = None  # when the newest reading arrived

    @classmethod
    def from_record(cls, record: DeviceRecord) -> Tracker:
        h = record.health_fields
        state = h.get("health") or (OK if record.last_success_at is not None else "never")
        entered = record.created_at if state == "never" else record.last_success_at or 0.0
        return cls(
            state=state if state in STATES else "never",
            since=_float(h.get("health_since"), entered),
            condition=h.get("condition") or OK,
            condition_since=_float(h.get("condition_since"), 0.0),
            fresh_at=record.fresh_at,
        )

    def fresh(self, at: float, thresholds: Thresholds) -> bool:
        """A new reading arrived; True when what is stored changed."""
        self.fresh_at = at
        return self.observe(OK, at, thresholds)

    def stale(self, at: float, thresholds: Thresholds) -> bool:
        """The gateway answered without a new reading (a meter updates every few seconds, so a
        poll often finds the reading it had: nothing to note until that has lasted)."""
        recent = self.fresh_at is not None and at - self.fresh_at < thresholds.frozen_s
        if self.condition == OK and recent:
            return False
        return self.observe("frozen", at, thresholds)

    def failed(self, kind: str, at: float, thresholds: Thresholds) -> bool:
        """A poll failed with this error kind."""
        return self.observe(FAILURE_CAUSE.get(kind, "unreachable"), at, thresholds)

    def observe(self, condition: str, at: float, thresholds: Thresholds) -> bool:
        changed = False
        if condition != self.condition:
            self.condition = condition
            # frozen is measured from the last new reading; anything else from its first sign
            frozen_from = self.fresh_at if self.fresh_at is not None else at
            self.condition_since = frozen_from if condition == "frozen" else at
            changed = True
        if condition == OK:
            if self.state != OK:
                self.state, self.since = OK, at
                changed = True
            return changed
        return self.settle(at, thresholds) or changed

    def settle(self, at: float, thresholds: Thresholds) -> bool:
        """The condition takes over once it has held for its threshold (a poll, or a reader, may
        be the first to see it: a device in a long backoff is not polled for minutes)."""
        c = self.condition
        if c != OK and self.state != c and at - self.condition_since >= thresholds.of(c):
            self.state, self.since = c, self.condition_since
            return True
        return False

    def fields(self) -> dict[str, str]:
        """What is stored on the device's record."""
        return {
            "health": self.state,
            "health_since": repr(round(self.since, 3)),
            "condition": self.condition,
            "condition_since": repr(round(self.condition_since, 3)),
        }


@dataclass(frozen=True, slots=True)
class Health:
    """A device's state as everyone sees it; `condition` is what its latest polls show (a
    trouble not yet past its threshold shows here first)."""

    state: str
    since: float | None
    condition: str = OK
    condition_since: float | None = None
    detail: str = ""

    @property
    def action(self) -> str:
        return ACTIONS[self.state]

    @property
    def alerting(self) -> bool:
        return self.state not in QUIET

    def public(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since,
            "action": self.action,
            "condition": self.condition,
            "condition_since": self.condition_since,
            "detail": self.detail,
        }


def view(
    record: DeviceRecord, now: float, thresholds: Thresholds, held: Mapping[str, float] | None = None
) -> Health:
    """The device's state now. `held` maps the cloud_ids held by a pinger to the time its lease
    runs out (`Leases.held`); None when it is not known (then `unpolled` is not judged)."""
    if not record.active or not record.consented(now):  # outside its consent window: not expected
        return Health("inactive", None)
    if record.protocol == PUSH:
        return _push(record, now, thresholds)
    h = record.health_fields
    gone_at = None if held is None else _unheld_since(record, now, held)
    if gone_at is not None and now - gone_at >= thresholds.unpolled_s:
        return Health("unpolled", gone_at, "unpolled", gone_at)
    tracker = Tracker.from_record(record)
    if gone_at is None:  # a condition seen at the last poll still holds only while it is polled
        tracker.settle(now, thresholds)
    state = tracker.state
    detail = record.last_error if state not in QUIET else ""
    if state == "bad_reply" and h.get("bad_reply"):
        detail = f"{record.last_error}; the last such reply: {h['bad_reply']}"
    return Health(state, tracker.since, tracker.condition, tracker.condition_since or None, detail)


def _unheld_since(record: DeviceRecord, now: float, held: Mapping[str, float]) -> float | None:
    """When the device was last known held by a live pinger, if no live pinger holds it now."""
    expires = held.get(record.cloud_id)
    if expires is not None and expires >= now:
        return None
    if expires is not None:
        return expires
    h = record.health_fields
    known = [
        record.last_success_at,
        _float(h.get("condition_since"), 0.0),
        _float(h.get("activated_at"), 0.0),
    ]
    return max([t for t in known if t] or [record.created_at])


def _push(record: DeviceRecord, now: float, thresholds: Thresholds) -> Health:
    h = record.health_fields
    refused_since = _float(h.get("push_refused_since"), 0.0)
    refused_at = _float(h.get("push_refused_at"), 0.0)
    last = record.last_success_at
    if refused_since and refused_at >= (last or 0) and now - refused_at < thresholds.push_stale_s:
        if now - refused_since >= thresholds.auth_s:
            refusals = h.get("push_refused", "0")
            return Health(
                "auth", refused_since, "auth", refused_since, f"{refusals} uploads refused for a wrong key"
            )
        condition: tuple[str, float | None] = ("auth", refused_since)
    else:
        condition = (OK, None)
    if last is None:
        return Health("never", record.created_at, *condition)
    if now - last >= thresholds.push_stale_s:
        return Health("push_silent", last, "push_silent", last, f"no upload for {int(now - last)} s")
    return Health(OK, None, *condition)


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default
