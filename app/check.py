"""`rainforest users check ID` and `POST /api/users/{id}/check`: ask a gateway once, with the
stored credentials, and say in one sentence what came back: reachable or not, credentials
accepted, model and firmware, which local API, the connected meter and its link, a reading.

Bounded: one description and one poll, each within CHECK_TIMEOUT_S; nothing is written (the
pinger's files and counters are its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from app.devices import CLOUD, PUSH, DeviceRecord
from app.eagle.client import Clients
from app.eagle.gateway import gateway_for
from app.errors import DeviceAuthError, DeviceError, DeviceMeterOffline
from app.settings import Settings

CHECK_TIMEOUT_S = 20.0


@dataclass
class Checked:
    ok: bool
    sentence: str
    found: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"ok": self.ok, "sentence": self.sentence, **self.found}


def _api(record: DeviceRecord) -> str:
    if record.protocol == CLOUD:
        return "the relay's REST API"
    if record.protocol == "eagle100-local":
        return f"the local {record.api or 'post_manager'} API"
    return "the Local API"


async def check(record: DeviceRecord, secret: str, clients: Clients, settings: Settings) -> Checked:
    """Ask the gateway once; what it said, as one sentence and as fields. An EAGLE-100 on the
    household's network whose API was not given, and that has no REST API (404), is asked through
    cgi_manager: when that answers, `found["detected_api"]` says so (the caller keeps it)."""
    checked = await _ask(record, secret, clients, settings)
    if record.protocol == "eagle100-local" and not record.api and "HTTP 404" in checked.sentence:
        other = await _ask(dataclasses.replace(record, api="cgi_manager"), secret, clients, settings)
        if other.ok:
            other.found["detected_api"] = "cgi_manager"
            return other
    return checked


async def _ask(record: DeviceRecord, secret: str, clients: Clients, settings: Settings) -> Checked:
    cid = record.cloud_id
    if record.protocol == PUSH:
        return Checked(False, f"{cid} is a push device: it is not asked, it uploads (see its last upload).")
    gw = gateway_for(record, secret, settings.eagle_cloud_url, settings.eagle_tls_verify)
    client = clients.for_protocol(gw.protocol, gw.api)
    found: dict[str, Any] = {"api": _api(record)}
    try:
        found |= await asyncio.wait_for(client.describe(gw), CHECK_TIMEOUT_S)
        readings = await asyncio.wait_for(client.poll(gw, frozenset({"demand"})), CHECK_TIMEOUT_S)
    except DeviceAuthError as exc:
        said = f"{cid} is reachable through {found['api']}, but refused the stored credentials"
        return Checked(False, f"{said} ({exc.reason}).", found)
    except DeviceMeterOffline as exc:
        said = f"{cid} answers through {found['api']} with the stored credentials, but its meter is offline"
        return Checked(False, f"{said} ({exc.reason}).", found)
    except (DeviceError, TimeoutError) as exc:
        reason = exc.reason if isinstance(exc, DeviceError) else f"no answer within {CHECK_TIMEOUT_S:.0f} s"
        return Checked(False, f"{cid} could not be reached through {found['api']}: {reason}.", found)
    demand = readings.demand
    if demand is not None:
        found["demand_kw"], found["device_time"] = demand.demand_kw, demand.device_time
    what = ", ".join(
        part
        for part in (
            f"model {found['model']}" if found.get("model") else "",
            f"firmware {found['firmware']}" if found.get("firmware") else "",
            f"meter {found['meter']}" if found.get("meter") else "",
            f"link {found['link']}" if found.get("link") else "",
            f"{found['demand_kw']} kW now" if "demand_kw" in found else "no demand reading this time",
        )
        if part
    )
    return Checked(True, f"{cid} answers through {found['api']} with the stored credentials: {what}.", found)
