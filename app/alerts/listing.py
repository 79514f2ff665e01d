"""Alerts as people see them (the API, the /alerts page, `rainforest alerts list`): one shape,
filtered by state (open, acknowledged, resolved) and cause."""

from __future__ import annotations

from typing import Any

from app.store import Store

STATES = ("open", "acknowledged", "resolved")
SCAN = 2000  # the most recent alerts a listing looks through


def state_of(alert: dict[str, str]) -> str:
    if alert.get("state") == "resolved":
        return "resolved"
    return "acknowledged" if alert.get("ack_at") else "open"


def public(alert: dict[str, str]) -> dict[str, Any]:
    def number(name: str) -> float | None:
        return float(alert[name]) if alert.get(name) else None

    return {
        "id": alert["id"],
        "cloud_id": alert.get("cloud_id", ""),
        "study": alert.get("study", "default"),
        "state": state_of(alert),
        "cause": alert.get("cause", ""),
        "causes": (alert.get("causes") or alert.get("cause", "")).split(","),
        "since": number("since"),
        "action": alert.get("action", ""),
        "detail": alert.get("detail", ""),
        "contact_email": alert.get("email", ""),
        "opened_at": number("opened_at"),
        "in_incident": alert.get("incident") == "1",
        "acknowledged": {"by": alert["ack_by"], "at": number("ack_at"), "note": alert.get("ack_note", "")}
        if alert.get("ack_at")
        else None,
        "resolved_at": number("resolved_at"),
        "outage_s": number("outage_s"),
        "readings_missed": int(alert["missed"]) if alert.get("missed") else None,
        "readings_refilled": int(alert["refilled"]) if alert.get("refilled") else None,
    }


async def listing(
    store: Store, state: str | None = None, cause: str | None = None, limit: int = 100, study: str = ""
) -> list[dict[str, Any]]:
    """The latest alerts, newest first, that match (only one study's, when `study` is given)."""
    found = []
    for alert in await store.alerts.alerts(await store.alerts.recent_ids(SCAN)):
        view = public(alert)
        mine = not study or view["study"] == study
        if mine and (state is None or view["state"] == state) and (cause is None or view["cause"] == cause):
            found.append(view)
            if len(found) == limit:
                break
    return found
