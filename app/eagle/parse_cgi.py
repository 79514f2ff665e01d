"""The EAGLE-100's other local API: `POST /cgi-bin/cgi_manager` with a `<LocalCommand>`, which its
own web page and many owners' tools speak (eagle-protocols.md §2b). Pure functions, no network.

Replies are one flat JSON object of decimal strings:
- `get_device_list`: `num_devices`, `device_mac_id[0]`, `device_name[0]`, ... (the meters);
- `get_usage_data`: `demand` (kW, or `nan`), `demand_units`, `demand_timestamp` (the gateway's
  *local* time as Unix seconds), `summation_delivered`, `summation_received` (kWh),
  `meter_status`, `price` (`-1` for none) and `price_units` (an ISO 4217 number);
- `get_timezone`: `timezone_localTime` and `timezone_utcTime`, whose difference turns
  `demand_timestamp` into Unix seconds;
- `get_setting_data`: firmware, hardware and model, among the page's settings.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from app.eagle.readings import MeterDemand, MeterPrice, MeterSummation, Readings, currency_code, unix_time
from app.errors import DeviceBadReply, DeviceMeterOffline

MAX_CGI_REPLY_BYTES = 64 * 1024


def local_command(name: str, mac: str = "") -> bytes:
    mac_part = f"<MacId>{mac}</MacId>" if mac else ""
    return f"<LocalCommand><Name>{name}</Name>{mac_part}</LocalCommand>".encode()


def flat_json(body: bytes) -> dict[str, str]:
    """A cgi_manager reply: one JSON object whose values are strings (numbers kept as text)."""
    if len(body) > MAX_CGI_REPLY_BYTES:
        raise DeviceBadReply(f"cgi_manager reply of {len(body)} bytes exceeds the bound")
    text = body.strip()
    if text[:1] != b"{":
        text = b"{" + text + b"}"  # some firmware leaves the braces off
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DeviceBadReply(f"cgi_manager reply is malformed JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DeviceBadReply("cgi_manager reply must be a JSON object")
    return {str(k): "" if v is None else str(v) for k, v in doc.items()}


def meter_mac(body: bytes) -> str:
    """The first meter's MAC of a get_device_list reply (`device_mac_id[0]`)."""
    f = flat_json(body)
    mac = f.get("device_mac_id[0]", "").strip()
    if not mac:
        raise DeviceMeterOffline("the gateway lists no meter (get_device_list has no device_mac_id[0])")
    try:
        int(mac, 16)
    except ValueError:
        raise DeviceBadReply(f"device_mac_id[0] is not hex ({mac[:30]!r})") from None
    return mac


def utc_offset(body: bytes) -> int:
    """Seconds to add to the gateway's local times for UTC (from get_timezone), to the quarter hour."""
    f = flat_json(body)
    try:
        local, utc = int(f["timezone_localTime"], 0), int(f["timezone_utcTime"], 0)
    except (KeyError, ValueError):
        raise DeviceBadReply("get_timezone reply lacks timezone_localTime or timezone_utcTime") from None
    return round((utc - local) / 900) * 900


def _decimal(f: dict[str, str], name: str) -> float | None:
    text = f.get(name, "").strip().split(" ", 1)[0]
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def usage(body: bytes, offset_s: int, mac: str, wanted: frozenset[str]) -> Readings:
    """A get_usage_data reply → its readings, timed by `demand_timestamp` + `offset_s`."""
    f = flat_json(body)
    status = f.get("meter_status", "")
    if status and status.lower() != "connected":
        raise DeviceMeterOffline(f"the gateway's meter is {status}, not Connected")
    try:
        stamp = unix_time(int(f.get("demand_timestamp", ""), 0))
    except ValueError:
        raise DeviceBadReply("get_usage_data reply has no demand_timestamp") from None
    at = None if stamp is None else stamp + offset_s
    meter = int(mac, 16)
    kw = _decimal(f, "demand")
    if kw is not None and f.get("demand_units", "kW").strip().lower() == "w":
        kw /= 1000
    delivered = _decimal(f, "summation_delivered")
    price = _decimal(f, "price")
    currency = f.get("price_units", "").strip()
    return Readings(
        demand=MeterDemand(at, kw, meter) if kw is not None and "demand" in wanted else None,
        summation=(
            MeterSummation(at, delivered, _decimal(f, "summation_received"), meter)
            if delivered is not None and "summation" in wanted
            else None
        ),
        price=(
            MeterPrice(at, price, currency_code(currency) if currency else "", None, "", meter)
            if price is not None and price >= 0 and "price" in wanted
            else None
        ),
    )


def settings(body: bytes) -> dict[str, Any]:
    """What get_setting_data says of the gateway: model, firmware, hardware."""
    f = flat_json(body)
    names = {"model": ("model_id", "device_model_id"), "firmware": ("fw_version", "firmware_version"),
             "hardware": ("hw_version", "hardware_version")}  # fmt: skip
    return {k: next((f[n] for n in ns if f.get(n)), "") for k, ns in names.items()}
