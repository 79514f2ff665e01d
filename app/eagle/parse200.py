"""Pure functions from an EAGLE-200 / EAGLE-3 Local API reply to meters and readings.

The Local API answers `device_list` with `<DeviceList><Device>…` and `device_query` with
`<Device><DeviceDetails>…<Components><Component><Variables><Variable>…`. Element names are
case-insensitive; variable names differ between firmware versions (`zigbee:PriceCurrency` or
`zigbee:Currency`, `PriceRateLabel` or `RateLabel`), so they are matched without their prefix.
Values arrive as `0.720000` with `<Units>` or inline as `21.499 kW`; empty, `invalid` and
`nan` values are missing, never zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from app.eagle.parse import MAX_REPLY_BYTES, raise_device_error, xml_root
from app.eagle.readings import (
    MeterDemand,
    MeterPrice,
    MeterSummation,
    Readings,
    currency_code,
    hex_int,
    unix_time,
)
from app.errors import DeviceBadReply, DeviceMeterOffline

NEVER = 0  # LastContact 0: the meter was never heard from
KINDS = ("demand", "summation", "price")
UNJOINED_NETWORK_ADDRESS = 0xFFFF
NO_TRAILING_DIGITS = 255
# A negative demand some firmware sends as an unsigned 32-bit count of watts: 4294963.584 kW is
# -3.712 kW. Nothing a household draws comes near 2^31 W, so values past it are wrapped.
WRAP_KW = 2**32 / 1000
HALF_WRAP_KW = 2**31 / 1000

DEMAND = ("instantaneousdemand",)
DELIVERED = ("currentsummationdelivered", "summationdelivered")
RECEIVED = ("currentsummationreceived", "summationreceived")
PRICE = ("price", "currentprice")
CURRENCY = ("pricecurrency", "currency")
TIER = ("pricetier", "tier", "currenttier")
RATE_LABEL = ("priceratelabel", "ratelabel")
TRAILING = ("pricetrailingdigits", "trailingdigits")


@dataclass(frozen=True, slots=True)
class Meter:
    """One entry of `device_list`."""

    hardware_address: str  # as the gateway spells it, sent back verbatim in device_query
    model_id: str
    connection_status: str
    last_contact: int
    network_address: int | None
    name: str = ""
    manufacturer: str = ""

    @property
    def usable(self) -> bool:
        """A joined electric meter: stale "Not joined" entries (LastContact 0, 0xffff) are not."""
        return (
            self.model_id.lower() == "electric_meter"
            and self.connection_status.lower() == "connected"
            and self.last_contact != NEVER
            and self.network_address != UNJOINED_NETWORK_ADDRESS
        )


def _root(body: bytes) -> Element:
    if len(body) > MAX_REPLY_BYTES:
        raise DeviceBadReply(f"reply of {len(body)} bytes exceeds the {MAX_REPLY_BYTES}-byte bound")
    text = body.strip()
    if not text:
        raise DeviceBadReply("empty reply")
    if text[:1] != b"<":
        raise DeviceBadReply(f"reply is not XML (starts {text[:20]!r})")
    root = xml_root(text)
    if root.tag.lower() == "error":
        raise_device_error({c.tag.lower(): (c.text or "").strip() for c in root} or {"text": root.text or ""})
    return root


def _children(element: Element) -> dict[str, str]:
    return {c.tag.lower(): (c.text or "").strip() for c in element}


def _hex_or(value: str | None, default: int | None) -> int | None:
    if not value:
        return default
    try:
        return hex_int(value)
    except ValueError:
        return default


def parse_device_list(body: bytes) -> list[Meter]:
    """`device_list` reply → every device it lists (electric meters or not)."""
    root = _root(body)
    if root.tag.lower() != "devicelist":
        raise DeviceBadReply(f"expected a DeviceList reply, got {root.tag}")
    meters = []
    for device in root:
        if device.tag.lower() != "device":
            continue
        f = _children(device)
        address = f.get("hardwareaddress", "")
        if not address:
            raise DeviceBadReply("DeviceList entry lacks HardwareAddress")
        meters.append(
            Meter(
                hardware_address=address,
                model_id=f.get("modelid", ""),
                connection_status=f.get("connectionstatus", ""),
                last_contact=_hex_or(f.get("lastcontact"), NEVER) or NEVER,
                network_address=_hex_or(f.get("networkaddress"), None),
                name=f.get("name", ""),
                manufacturer=f.get("manufacturer", ""),
            )
        )
    return meters


def choose_meter(meters: list[Meter]) -> Meter:
    """The connected electric meter, most recently heard first; DeviceMeterOffline when none."""
    usable = sorted((m for m in meters if m.usable), key=lambda m: m.last_contact, reverse=True)
    if usable:
        return usable[0]
    seen = ", ".join(f"{m.model_id or '?'} {m.connection_status or '?'}" for m in meters) or "nothing"
    raise DeviceMeterOffline(f"no connected electric meter on the gateway (device_list shows {seen})")


def _variables(root: Element) -> dict[str, tuple[str, str]]:
    """Variable name without its `zigbee:` prefix, lower-cased → (value, units)."""
    out: dict[str, tuple[str, str]] = {}
    for variable in root.iter():
        if variable.tag.lower() != "variable":
            continue
        f = _children(variable)
        name = f.get("name", "").rsplit(":", 1)[-1].lower()
        if name:
            out[name] = (f.get("value", ""), f.get("units", ""))
    return out


def number(value: str) -> float | None:
    """`0.720000`, `21.499 kW` → float; empty, `invalid`, `nan`, text → None (missing, not zero)."""
    text = value.strip().split(" ", 1)[0] if value else ""
    if not text:
        return None
    try:
        result = float(text)
    except ValueError:
        return None
    return result if math.isfinite(result) else None


def _first(variables: dict[str, tuple[str, str]], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in variables:
            return variables[name][0]
    return None


def parse_device_query(body: bytes, wanted: frozenset[str] = frozenset({"demand"})) -> Readings:
    """`device_query` reply → the readings it holds, timed by the meter's LastContact.

    A reply without a `<Device>` root is a bad reply (some firmware sends one under load)."""
    root, f = _device(body)
    contact = _hex_or(f.get("lastcontact"), None)
    if not contact:
        raise DeviceBadReply("Device reply has no LastContact: the meter was never heard from")
    last_contact = unix_time(contact)  # 0xffffffff: "no time" (the readings are kept, timeless)
    status = f.get("connectionstatus", "")
    if status and status.lower() != "connected":
        raise DeviceMeterOffline(f"the gateway's meter is {status}, not Connected")
    mac = _hex_or(f.get("hardwareaddress"), 0) or 0
    variables = _variables(root)
    if variables and not any(value.strip() for value, _ in variables.values()):
        # the gateway answers, and its meter gave it nothing (home-assistant/core#149350)
        raise DeviceMeterOffline("the gateway answered, but every value its meter reported is empty")
    return _readings(variables, last_contact, mac, wanted)


def readings_in(
    element: Element, at: int | None, mac: int, wanted: frozenset[str] = frozenset(KINDS)
) -> Readings:
    """The readings an element's `Variable`s hold (a device_query's components, an uploader's
    XML:Simple report), timed `at`."""
    return _readings(_variables(element), at, mac, wanted)


def _readings(
    variables: dict[str, tuple[str, str]], at: int | None, mac: int, wanted: frozenset[str]
) -> Readings:
    return Readings(
        demand=_demand(variables, at, mac) if "demand" in wanted else None,
        summation=_summation(variables, at, mac) if "summation" in wanted else None,
        price=_price(variables, at, mac) if "price" in wanted else None,
    )


def _demand(variables: dict[str, tuple[str, str]], at: int | None, mac: int) -> MeterDemand | None:
    kw = number(_first(variables, DEMAND) or "")
    if kw is None:
        return None
    if kw >= HALF_WRAP_KW:
        kw = round(kw - WRAP_KW, 6)
    return MeterDemand(at, kw, mac)


def _summation(variables: dict[str, tuple[str, str]], at: int | None, mac: int) -> MeterSummation | None:
    delivered = number(_first(variables, DELIVERED) or "")
    if delivered is None:
        return None
    return MeterSummation(at, delivered, number(_first(variables, RECEIVED) or ""), mac)


def _price(variables: dict[str, tuple[str, str]], at: int | None, mac: int) -> MeterPrice | None:
    raw = (_first(variables, PRICE) or "").strip()
    price = number(raw)
    digits = number(_first(variables, TRAILING) or "")
    if price is None or digits == NO_TRAILING_DIGITS or price == 0xFFFFFFFF:
        return None
    if digits is not None and "." not in raw.split(" ", 1)[0]:
        price = price / 10 ** int(digits)  # an integer count of the smallest unit
    tier = number(_first(variables, TIER) or "")
    return MeterPrice(
        device_time=at,
        price=price,
        currency=currency_code(_first(variables, CURRENCY) or "") if _first(variables, CURRENCY) else "",
        tier=int(tier) if tier is not None else None,
        rate_label=_first(variables, RATE_LABEL) or "",
        meter_mac_id=mac,
    )


def parse_device_details(body: bytes) -> dict[str, str]:
    """`device_details` reply → its DeviceDetails fields, lower-case names."""
    return _device(body)[1]


def _device(body: bytes) -> tuple[Element, dict[str, str]]:
    """A `<Device>` reply's root and its DeviceDetails fields."""
    root = _root(body)
    if root.tag.lower() != "device":
        raise DeviceBadReply(f"expected a Device reply, got {root.tag}")
    details = next((c for c in root if c.tag.lower() == "devicedetails"), None)
    if details is None:
        raise DeviceBadReply("Device reply lacks DeviceDetails")
    return root, _children(details)
