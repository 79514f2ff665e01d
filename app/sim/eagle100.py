"""The EAGLE-100 dialect (relay and local REST): hex fields, Y2K times, XML or `{"Tag":{…}}`."""

from __future__ import annotations

import re

import orjson

from app.eagle.readings import Y2K_EPOCH
from app.sim.energy import EnergyMeter
from app.sim.fleet import SimDevice
from app.sim.model import SimReading
from app.sim.tariff import tariff_at

_HEX_FIELD = re.compile(rb"<(StartTime|EndTime|Frequency)>\s*(0x[0-9a-fA-F]+|[0-9]+)\s*</\1>", re.IGNORECASE)
MAX_HISTORY_ENTRIES = 2000
DEFAULT_HISTORY_FREQUENCY_S = 300


def render(root: str, fields: dict[str, str], as_json: bool) -> bytes:
    if as_json:
        return orjson.dumps({root: fields})
    return f"<{root}>{''.join(f'<{k}>{v}</{k}>' for k, v in fields.items())}</{root}>".encode()


def encode_demand(device: SimDevice, watts: int) -> str:
    """Demand as the meter sends it: 6 hex digits, negatives in 32-bit or 24-bit two's complement."""
    if watts >= 0:
        return f"0x{watts:06x}"
    if device.negative_24bit:
        return f"0x{watts & 0xFFFFFF:06x}"
    return f"0x{watts & 0xFFFFFFFF:08x}"


def _raw_demand(device: SimDevice, watts: int) -> int:
    # demand_kw = raw × multiplier ÷ divisor, with a zero multiplier counting as 1
    return round(watts * device.divisor / 1000 / (device.multiplier or 1))


def demand_fields(device: SimDevice, reading: SimReading) -> dict[str, str]:
    return {
        "DeviceMacId": f"0x{device.device_mac_id:016x}",
        "MeterMacId": f"0x{device.meter_mac_id:016x}",
        "TimeStamp": f"0x{reading.timestamp:08x}",
        "Demand": encode_demand(device, _raw_demand(device, reading.demand_w)),
        "Multiplier": f"0x{device.multiplier:08x}",
        "Divisor": f"0x{device.divisor:08x}",
        "DigitsRight": "0x03",
        "DigitsLeft": "0x06",
        "SuppressLeadingZero": "Y",
    }


def summation_fields(device: SimDevice, reading: SimReading, energy: EnergyMeter) -> dict[str, str]:
    delivered, received = energy.registers(device, reading.number)
    return {
        "DeviceMacId": f"0x{device.device_mac_id:016x}",
        "MeterMacId": f"0x{device.meter_mac_id:016x}",
        "TimeStamp": f"0x{reading.timestamp:08x}",
        "SummationDelivered": f"0x{round(delivered):016x}",
        "SummationReceived": f"0x{round(received):016x}",
        "Multiplier": "0x00000001",
        "Divisor": "0x000003e8",
        "DigitsRight": "0x01",
        "DigitsLeft": "0x06",
        "SuppressLeadingZero": "Y",
    }


def price_fields(device: SimDevice, reading: SimReading) -> dict[str, str]:
    """PriceCluster; a meter without a price sends the 0xffffffff sentinel; a price the user
    typed into the app has TimeStamp and StartTime 0xffffffff ("no time")."""
    tariff = tariff_at(device, reading.timestamp + Y2K_EPOCH)
    price = round(tariff.price * 10**5) if device.has_price else 0xFFFFFFFF
    if device.user_price:
        return {
            "DeviceMacId": f"0x{device.device_mac_id:016x}", "MeterMacId": f"0x{device.meter_mac_id:016x}",
            "TimeStamp": "0xffffffff", "Price": "0x0000030c", "Currency": "0x0348", "TrailingDigits": "0x04",
            "Tier": "0x00", "StartTime": "0xffffffff", "Duration": "0xffff", "RateLabel": "Set by User",
        }  # fmt: skip
    return {
        "DeviceMacId": f"0x{device.device_mac_id:016x}",
        "MeterMacId": f"0x{device.meter_mac_id:016x}",
        "TimeStamp": f"0x{reading.timestamp:08x}",
        "Price": f"0x{price:08x}",
        "Currency": "0x0348",
        "TrailingDigits": "0x05",
        "Tier": f"0x{tariff.tier:02x}",
        "RateLabel": tariff.label if device.has_price else "Set by User",
    }


def history_range(body: bytes, now: float) -> tuple[int, int, int]:
    """(start, end, frequency) of a get_history_data command, as Unix seconds; end ≤ now."""
    found = {m.group(1).decode().lower(): m.group(2).decode() for m in _HEX_FIELD.finditer(body)}

    def value(name: str, default: int) -> int:
        text = found.get(name)
        return int(text, 0) if text else default

    y2k_now = int(now) - Y2K_EPOCH
    start = value("starttime", y2k_now - 3600)
    end = min(value("endtime", y2k_now), y2k_now)
    return start + Y2K_EPOCH, end + Y2K_EPOCH, max(1, value("frequency", DEFAULT_HISTORY_FREQUENCY_S))


def history_body(
    device: SimDevice,
    energy: EnergyMeter,
    interval_s: float,
    start: int,
    end: int,
    frequency_s: int,
    as_json: bool,
) -> bytes:
    """HistoryData: the summation at every multiple of the frequency in [start, end]."""
    first = -(-start // frequency_s) * frequency_s
    entries = []
    phase = device.phase_fraction * interval_s
    for at in range(first, end + 1, frequency_s)[:MAX_HISTORY_ENTRIES]:
        number = int((at - phase) // interval_s)
        delivered, received = energy.registers(device, number)
        entries.append({
            "DeviceMacId": f"0x{device.device_mac_id:016x}",
            "MeterMacId": f"0x{device.meter_mac_id:016x}",
            "TimeStamp": f"0x{at - Y2K_EPOCH:08x}",
            "SummationDelivered": f"0x{round(delivered):016x}",
            "SummationReceived": f"0x{round(received):016x}",
            "Multiplier": "0x00000001",
            "Divisor": "0x000003e8",
        })  # fmt: skip
    if as_json:  # as the firmware sends it: without the outer braces
        return orjson.dumps({"HistoryData": {"CurrentSummation": entries}})[1:-1]
    inner = "".join(
        "<CurrentSummation>" + "".join(f"<{k}>{v}</{k}>" for k, v in e.items()) + "</CurrentSummation>"
        for e in entries
    )
    return f"<HistoryData>{inner}</HistoryData>".encode()


FIRMWARE = ("2.0.19 (7012)", "2.0.21 (7031)", "2.0.24 (7050)")


def firmware(device: SimDevice, at: float) -> str:
    """A gateway's firmware: updated now and then (every few days, not all at once)."""
    return FIRMWARE[(device.index + int(at // (3 * 86400))) % len(FIRMWARE)]


def network_fields(device: SimDevice, at: float) -> dict[str, str]:
    return {
        "DeviceMacId": f"0x{device.device_mac_id:016x}",
        "InstallCode": f"0x{device.meter_mac_id ^ 0x5A5A5A5A:016x}",
        "LinkKey": "0x" + "00" * 16,
        "FWVersion": firmware(device, at),
        "HWVersion": "1.2.3",
        "ImageType": "0x1301",
        "Manufacturer": "Rainforest Automation, Inc.",
        "ModelId": "Z109-EAGLE",
        "DateCode": "2013103023220630",
        "Status": "Connected",
    }


# --- the LocalCommand API (/cgi-bin/cgi_manager): flat JSON of decimal strings, local times ----


def cgi_device_list(device: SimDevice) -> dict[str, str]:
    return {"num_devices": "1", "device_mac_id[0]": f"0x{device.meter_mac_id:016x}",
            "device_name[0]": "Power Meter", "device_model_id[0]": "electric_meter",
            "device_status[0]": "Connected"}  # fmt: skip


def cgi_timezone(device: SimDevice, now: float) -> dict[str, str]:
    """The gateway's local time and UTC (it keeps its household's zone)."""
    local = int(now) + device.tz_offset_h * 3600
    return {"timezone_localTime": str(local), "timezone_utcTime": str(int(now)),
            "timezone_name": f"UTC{device.tz_offset_h:+d}"}  # fmt: skip


def cgi_settings(device: SimDevice, now: float) -> dict[str, str]:
    return {"model_id": "Z109-EAGLE", "fw_version": firmware(device, now), "hw_version": "1.2.3",
            "device_mac_id": f"0x{device.device_mac_id:016x}"}  # fmt: skip


def cgi_usage(
    device: SimDevice, reading: SimReading, energy: EnergyMeter, meter_gone: bool
) -> dict[str, str]:
    """get_usage_data: demand in kW, its time in the gateway's local time, totals, price."""
    delivered, received = energy.registers(device, reading.number)
    tariff = tariff_at(device, reading.timestamp + Y2K_EPOCH)
    local = reading.timestamp + Y2K_EPOCH + device.tz_offset_h * 3600
    if reading.timestamp == 0xFFFFFFFF:  # no time
        local = 0
    return {
        "demand": f"{reading.demand_w / 1000:.4f}", "demand_units": "kW", "demand_timestamp": str(local),
        "summation_delivered": f"{delivered / 1000:.3f}", "summation_received": f"{received / 1000:.3f}",
        "summation_units": "kWh", "meter_status": "Rejoining" if meter_gone else "Connected",
        "price": f"{tariff.price:.4f}" if device.has_price else "-1.0000", "price_units": "840",
    }  # fmt: skip
