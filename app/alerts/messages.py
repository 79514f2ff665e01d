"""What notifications say: one per alert opened and resolved, one per incident, a daily digest
with a CSV, a test. Built only from an alert's own fields (device, cause, times, the action, the
household's contact e-mail): never a credential, a key or a token."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from app.health import ACTIONS
from app.hours import local_day, spoken

PREFIX = "[rainforest]"


@dataclass(frozen=True)
class Dark:
    """One household in trouble, as the digest lists it."""

    cloud_id: str
    state: str
    since: float
    email: str
    missed: int
    detail: str = ""


def local(at: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(at, zone).strftime("%Y-%m-%d %H:%M %Z")


def opened(alert: Mapping[str, str], zone: ZoneInfo) -> dict[str, str]:
    cid, state, since = alert["cloud_id"], alert["cause"], float(alert["since"])
    lines = [
        f"Household {cid} is {state} since {local(since, zone)}.",
        f"What to do: {ACTIONS[state]}",
    ]
    if alert.get("email"):
        lines.append(f"Contact: {alert['email']}")
    if alert.get("detail"):
        lines.append(f"Detail: {alert['detail']}")
    lines.append(f"Alert {alert['id']}: acknowledge it on the /alerts page or with `rainforest alerts ack`.")
    return _message("opened", f"{PREFIX} {cid} {state}", lines, alert["id"])


def resolved(alert: Mapping[str, str], at: float, zone: ZoneInfo) -> dict[str, str]:
    cid, state, since = alert["cloud_id"], alert["cause"], float(alert["since"])
    missed, refilled = int(alert.get("missed", "0")), int(alert.get("refilled", "0"))
    lines = [
        f"Household {cid} is ok again at {local(at, zone)}, after {spoken(at - since)} {state}.",
        f"Readings missed: about {missed}"
        + (f"; {refilled} refilled from the gateway's history." if refilled else "."),
        f"Alert {alert['id']}.",
    ]
    return _message("resolved", f"{PREFIX} {cid} ok again", lines, alert["id"])


def incident_opened(incident: Mapping[str, str], zone: ZoneInfo, what_failed: str) -> dict[str, str]:
    path, n, size = incident["path"], incident["devices"], incident["path_devices"]
    lines = [
        f"{n} of {path}'s {size} households went {incident['cause']} together, from "
        f"{local(float(incident['since']), zone)}: one incident, not {n} alerts.",
        f"Likely: {what_failed}.",
        f"Incident {incident['id']}.",
    ]
    return _message("incident", f"{PREFIX} incident: {n} households on {path} {incident['cause']}", lines,
                    incident["id"])  # fmt: skip


def incident_resolved(incident: Mapping[str, str], at: float, still: int, zone: ZoneInfo) -> dict[str, str]:
    path, since = incident["path"], float(incident["since"])
    lines = [f"The incident on {path} is over at {local(at, zone)}, after {spoken(at - since)}."]
    if still:
        lines.append(f"{still} of its households are still dark: each now has an alert of its own.")
    lines.append(f"Incident {incident['id']}.")
    return _message("incident_resolved", f"{PREFIX} incident over: {path}", lines, incident["id"])


def digest(dark: Iterable[Dark], now: float, zone: ZoneInfo) -> dict[str, str]:
    rows = sorted(dark, key=lambda d: d.since)
    day = local_day(now, zone)
    if not rows:
        text = [f"No household is dark on {day}."]
    else:
        some = "1 household is" if len(rows) == 1 else f"{len(rows)} households are"
        text = [f"{some} dark on {day}, longest first:", ""]
        for d in rows:
            contact = f", contact {d.email}" if d.email else ""
            text.append(
                f"- {d.cloud_id}: {d.state} since {local(d.since, zone)} ({spoken(now - d.since)}), "
                f"about {d.missed} readings missed{contact}. {ACTIONS[d.state]}"
            )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["cloud_id", "state", "since_utc", "since_local", "dark_hours", "readings_missed",
                     "contact_email", "action", "detail"])  # fmt: skip
    for d in rows:
        writer.writerow([
            d.cloud_id, d.state, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.since)),
            local(d.since, zone), round((now - d.since) / 3600, 1), d.missed, _cell(d.email),
            ACTIONS[d.state], _cell(d.detail[:200]),
        ])  # fmt: skip
    message = _message("digest", f"{PREFIX} daily digest {day}: {len(rows)} dark", text, day)
    message["csv"] = out.getvalue()
    message["csv_name"] = f"dark-households-{day}.csv"
    return message


def test(now: float, zone: ZoneInfo, route: str) -> dict[str, str]:
    lines = [f"A test of the route {route} at {local(now, zone)}: alerts will arrive like this."]
    return _message("test", f"{PREFIX} test message", lines, route)


def _cell(value: str) -> str:
    """A spreadsheet must not run what a household's e-mail or a reply says."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _message(kind: str, subject: str, lines: list[str], about: str) -> dict[str, str]:
    return {"kind": kind, "subject": subject, "text": "\n".join(lines) + "\n", "about": about,
            "created_at": repr(time.time())}  # fmt: skip
