"""Small value types for what an EAGLE reports, the decoders for its fields, and the lines they
become in the hourly files (DESIGN.md "Line kinds": demand, summation, price).

Each reading has `kind`, `device_time` (Unix seconds, the reading's identity; None when the
gateway sent "no time": a `TimeStamp` of 0xffffffff or 0x00000000, as on a price typed into the
gateway's app) and `record()`, the dict written as one line (what "changed" means is
`app.pinger.capture.line_key`). A line without a device time keeps `polled_at`, is filed by it, and
is the same reading as another when its values are (`app.lines.identity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import pycountry

# EAGLE-100 timestamps count seconds from 2000-01-01T00:00:00Z.
Y2K_EPOCH = 946_684_800
NO_PRICE = 0xFFFFFFFF
NO_TIME = frozenset({0x00000000, 0xFFFFFFFF})  # an EAGLE's TimeStamp / StartTime meaning "no time"
FUTURE_SLACK_S = 86400  # a gateway's clock may run ahead of ours by up to this much


def plausible_time(device_time: int | None, now: float) -> bool:
    """The one rule, on every path (poll, push, refill), for believing a reading's own time:
    after 2000-01-01 and at most a day past `now`; a reading outside is not written (it would
    vanish from carts and charts, which select by time, and break their gaps). A reading with no
    time at all (None) has nothing to disbelieve: it is written with `device_time` null."""
    return device_time is None or Y2K_EPOCH < device_time <= now + FUTURE_SLACK_S


def y2k_time(timestamp: int) -> int | None:
    """Unix seconds of an EAGLE-100 Y2K timestamp; None for the "no time" values."""
    return None if timestamp in NO_TIME else timestamp + Y2K_EPOCH


def unix_time(seconds: int) -> int | None:
    """Unix seconds as an EAGLE-200 sends them; None for its "no time" values."""
    return None if seconds in NO_TIME else seconds


def hex_int(value: str) -> int:
    """`0x0003b0` → 944; raises ValueError on anything that is not hex."""
    text = value.strip()
    return int(text[2:] if text[:2] in ("0x", "0X") else text, 16)


def signed_hex(value: str) -> int:
    """Demand as a signed integer.

    Documented as 24-bit signed, but EAGLE-100s send negatives as 32-bit two's complement
    (0xfffffd12 = -750); a short 6-digit value with the top bit set is 24-bit (0xfffd12 = -750).
    """
    n = hex_int(value)
    digits = len(value.strip().removeprefix("0x").removeprefix("0X"))
    if n >= 1 << 31:
        return n - (1 << 32)
    if digits <= 6 and n >= 1 << 23:
        return n - (1 << 24)
    return n


@lru_cache(maxsize=64)
def currency_code(value: int | str) -> str:
    """ISO 4217 alphabetic code from the numeric one (840, "0x0348") or a code as sent ("usd")."""
    if isinstance(value, str):
        text = value.strip()
        if text[:2] in ("0x", "0X"):
            value = int(text, 16)
        elif text.isascii() and text.isdigit():
            value = int(text)
        else:
            return text.upper()
    found = pycountry.currencies.get(numeric=f"{value:03d}")
    return found.alpha_3 if found is not None else ""


def line_head(
    cloud_id: str, polled_at: float, device_time: int | None, kind: str, source: str
) -> dict[str, Any]:
    """The fields every line of an hourly file starts with (DESIGN.md "Line kinds")."""
    return {
        "cloud_id": cloud_id,
        "polled_at": polled_at,
        "device_time": device_time,
        "kind": kind,
        "source": source,
    }


def scale(raw: int, multiplier: int, divisor: int) -> float:
    """raw × multiplier ÷ divisor, where a zero multiplier or divisor counts as 1."""
    return raw * (multiplier or 1) / (divisor or 1)


@dataclass(frozen=True, slots=True)
class DemandReading:
    """One InstantaneousDemand report, fields decoded from hex."""

    device_mac_id: int
    meter_mac_id: int
    timestamp: int  # device seconds since 2000-01-01 (the TimeStamp field)
    demand: int  # signed
    multiplier: int
    divisor: int
    digits_right: int
    digits_left: int
    suppress_leading_zero: str

    @property
    def device_time(self) -> int | None:
        """Unix seconds of the reading, by the device's clock (None: it sent no time)."""
        return y2k_time(self.timestamp)

    @property
    def demand_kw(self) -> float:
        return scale(self.demand, self.multiplier, self.divisor)

    kind: ClassVar[str] = "demand"

    def record(self, cloud_id: str, polled_at: float, source: str = "eagle100-cloud") -> dict[str, Any]:
        """The line written to the hourly file (the DESIGN.md format)."""
        return {
            **line_head(cloud_id, polled_at, self.device_time, "demand", source),
            "demand_kw": self.demand_kw,
            "DeviceMacId": self.device_mac_id,
            "MeterMacId": self.meter_mac_id,
            "TimeStamp": self.timestamp,
            "Demand": self.demand,
            "Multiplier": self.multiplier,
            "Divisor": self.divisor,
            "DigitsRight": self.digits_right,
            "DigitsLeft": self.digits_left,
            "SuppressLeadingZero": self.suppress_leading_zero,
        }


@dataclass(frozen=True, slots=True)
class SummationReading:
    """CurrentSummation: energy delivered to and received from the grid."""

    device_mac_id: int
    meter_mac_id: int
    timestamp: int
    summation_delivered: int
    summation_received: int
    multiplier: int
    divisor: int

    @property
    def device_time(self) -> int | None:
        return y2k_time(self.timestamp)

    kind: ClassVar[str] = "summation"

    @property
    def delivered_kwh(self) -> float:
        return scale(self.summation_delivered, self.multiplier, self.divisor)

    @property
    def received_kwh(self) -> float:
        return scale(self.summation_received, self.multiplier, self.divisor)

    def record(self, cloud_id: str, polled_at: float, source: str = "eagle100-cloud") -> dict[str, Any]:
        return {
            **line_head(cloud_id, polled_at, self.device_time, "summation", source),
            "delivered_kwh": self.delivered_kwh,
            "received_kwh": self.received_kwh,
            "DeviceMacId": self.device_mac_id,
            "MeterMacId": self.meter_mac_id,
            "TimeStamp": self.timestamp,
            "SummationDelivered": self.summation_delivered,
            "SummationReceived": self.summation_received,
            "Multiplier": self.multiplier,
            "Divisor": self.divisor,
        }


@dataclass(frozen=True, slots=True)
class PriceReading:
    """PriceCluster: the current tariff; `price` is None when the meter has none."""

    device_mac_id: int
    meter_mac_id: int
    timestamp: int
    price: float | None
    currency: int  # ISO 4217 numeric code (840 = USD)
    tier: int
    rate_label: str = ""

    kind: ClassVar[str] = "price"

    @property
    def device_time(self) -> int | None:
        return y2k_time(self.timestamp)

    def record(self, cloud_id: str, polled_at: float, source: str = "eagle100-cloud") -> dict[str, Any]:
        return {
            **line_head(cloud_id, polled_at, self.device_time, "price", source),
            "price": self.price,
            "currency": currency_code(self.currency),
            "tier": self.tier,
            "rate_label": self.rate_label,
            "DeviceMacId": self.device_mac_id,
            "MeterMacId": self.meter_mac_id,
            "TimeStamp": self.timestamp,
        }


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """NetworkInfo: the gateway's identity and firmware, as strings the device sent."""

    device_mac_id: int
    fields: dict[str, str]

    @property
    def model_id(self) -> str:
        return self.fields.get("ModelId", "")

    @property
    def firmware(self) -> str:
        return self.fields.get("FWVersion", "")


# --- the EAGLE-200 Local API: values already in kW / kWh, times in Unix seconds --------------


@dataclass(frozen=True, slots=True)
class MeterDemand:
    """Instantaneous demand from an EAGLE-200 `device_query`; time is the meter's LastContact."""

    device_time: int | None
    demand_kw: float
    meter_mac_id: int

    kind: ClassVar[str] = "demand"

    def record(self, cloud_id: str, polled_at: float, source: str = "eagle200-local") -> dict[str, Any]:
        return {
            **line_head(cloud_id, polled_at, self.device_time, "demand", source),
            "demand_kw": self.demand_kw,
            "MeterMacId": self.meter_mac_id,
        }


@dataclass(frozen=True, slots=True)
class MeterSummation:
    """Meter totals from an EAGLE-200 (received is None when the meter does not report it)."""

    device_time: int | None
    delivered_kwh: float
    received_kwh: float | None
    meter_mac_id: int

    kind: ClassVar[str] = "summation"

    def record(self, cloud_id: str, polled_at: float, source: str = "eagle200-local") -> dict[str, Any]:
        return {
            **line_head(cloud_id, polled_at, self.device_time, "summation", source),
            "delivered_kwh": self.delivered_kwh,
            "received_kwh": self.received_kwh,
            "MeterMacId": self.meter_mac_id,
        }


@dataclass(frozen=True, slots=True)
class MeterPrice:
    """The tariff from an EAGLE-200; only built when the meter has a price."""

    device_time: int | None
    price: float
    currency: str  # ISO 4217 alphabetic, "" when not sent
    tier: int | None
    rate_label: str
    meter_mac_id: int

    kind: ClassVar[str] = "price"

    def record(self, cloud_id: str, polled_at: float, source: str = "eagle200-local") -> dict[str, Any]:
        return {
            **line_head(cloud_id, polled_at, self.device_time, "price", source),
            "price": self.price,
            "currency": self.currency,
            "tier": self.tier,
            "rate_label": self.rate_label,
            "MeterMacId": self.meter_mac_id,
        }


Demand = DemandReading | MeterDemand
Summation = SummationReading | MeterSummation
Price = PriceReading | MeterPrice
Reading = Demand | Summation | Price
HistoryEntry = SummationReading | DemandReading  # what an EAGLE-100's HistoryData holds


@dataclass(frozen=True, slots=True)
class Readings:
    """What one poll of a gateway gave: any of demand, summation and price."""

    demand: Demand | None = None
    summation: Summation | None = None
    price: Price | None = None

    def merged(self, other: Readings) -> Readings:
        return Readings(
            self.demand or other.demand, self.summation or other.summation, self.price or other.price
        )
