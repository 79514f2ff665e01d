"""Small value types for what an EAGLE reports, and the decoders for its hex fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# EAGLE-100 timestamps count seconds from 2000-01-01T00:00:00Z.
Y2K_EPOCH = 946_684_800
NO_PRICE = 0xFFFFFFFF


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
    def device_time(self) -> int:
        """Unix seconds of the reading, by the device's clock."""
        return self.timestamp + Y2K_EPOCH

    @property
    def demand_kw(self) -> float:
        return scale(self.demand, self.multiplier, self.divisor)

    def record(self, cloud_id: str, polled_at: float) -> dict[str, Any]:
        """The line written to the hourly file (the DESIGN.md format)."""
        return {
            "cloud_id": cloud_id,
            "polled_at": polled_at,
            "device_time": self.device_time,
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
    def device_time(self) -> int:
        return self.timestamp + Y2K_EPOCH

    @property
    def delivered_kwh(self) -> float:
        return scale(self.summation_delivered, self.multiplier, self.divisor)

    @property
    def received_kwh(self) -> float:
        return scale(self.summation_received, self.multiplier, self.divisor)


@dataclass(frozen=True, slots=True)
class PriceReading:
    """PriceCluster: the current tariff; `price` is None when the meter has none."""

    device_mac_id: int
    meter_mac_id: int
    timestamp: int
    price: float | None
    currency: int  # ISO 4217 numeric code (840 = USD)
    tier: int

    @property
    def device_time(self) -> int:
        return self.timestamp + Y2K_EPOCH


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
