"""The EAGLE-200 Local API dialect: `device_list` and `device_query` with their real quirks.

Values come either as `0.720000` with `<Units>` or inline as `21.499 kW`; some units list a
stale "Not joined" meter first; exporters may send negative demand wrapped unsigned; some
firmware names the currency and rate label variables differently; prices can be `invalid`.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from app.eagle.readings import Y2K_EPOCH
from app.sim.energy import EnergyMeter
from app.sim.fleet import SimDevice
from app.sim.model import SimReading
from app.sim.tariff import tariff_at

_ADDRESS = re.compile(rb"<HardwareAddress>\s*([^<\s]+)\s*</HardwareAddress>", re.IGNORECASE)
_VARIABLE = re.compile(rb"<Variable>\s*<Name>\s*([^<\s]+)\s*</Name>", re.IGNORECASE)
_ALL = re.compile(rb"<All>\s*Y\s*</All>", re.IGNORECASE)
WRAP_KW = 2**32 / 1000


def stale_address(device: SimDevice) -> str:
    return f"0x{device.meter_mac_id ^ 0xFF00:016x}"


def meter_address(device: SimDevice) -> str:
    return f"0x{device.meter_mac_id:016x}"


def _device(name: str, address: str, last_contact: int, status: str, network: str) -> str:
    return (
        f"<Device><HardwareAddress>{address}</HardwareAddress><Manufacturer>Generic</Manufacturer>"
        f"<ModelId>electric_meter</ModelId><Protocol>Zigbee</Protocol>"
        f"<LastContact>0x{last_contact:08x}</LastContact><ConnectionStatus>{status}</ConnectionStatus>"
        f"<NetworkAddress>{network}</NetworkAddress><Name>{name}</Name></Device>"
    )


def device_list(device: SimDevice, reading: SimReading, joined: str = "Connected") -> bytes:
    entries = []
    if device.stale_meter:  # a meter it once saw, never joined (home-assistant/core#55361)
        entries.append(_device("Power Meter", stale_address(device), 0, "Not joined", "0xffff"))
    last_contact = reading.timestamp + Y2K_EPOCH
    entries.append(_device("Power Meter", meter_address(device), last_contact, joined, "0x0000"))
    return f"<DeviceList>{''.join(entries)}</DeviceList>".encode()


def queried(body: bytes) -> tuple[str, list[str] | None]:
    """The meter address a device_query names, and its variable names (None: all)."""
    address = _ADDRESS.search(body)
    names = None if _ALL.search(body) else [m.group(1).decode() for m in _VARIABLE.finditer(body)]
    return (address.group(1).decode() if address else ""), names


def variables(device: SimDevice, reading: SimReading, energy: EnergyMeter) -> list[tuple[str, str, str]]:
    """(name, value, units) of every variable the meter has, as this unit's firmware names them."""
    kw = reading.demand_w / 1000
    if kw < 0 and device.wraps_negative:
        kw += WRAP_KW
    delivered, received = energy.registers(device, reading.number)
    at = reading.timestamp + Y2K_EPOCH
    tariff = tariff_at(device, at)
    price = f"{tariff.price:.6f}" if device.has_price else "invalid"
    digits = "4" if device.has_price else "255"
    currency, label = ("zigbee:Currency", "zigbee:RateLabel") if device.renamed_variables else (
        "zigbee:PriceCurrency", "zigbee:PriceRateLabel"
    )  # fmt: skip
    return [
        ("zigbee:InstantaneousDemand", f"{kw:.6f}", "kW"),
        ("zigbee:CurrentSummationDelivered", f"{delivered / 1000:.6f}", "kWh"),
        ("zigbee:CurrentSummationReceived", f"{received / 1000:.6f}", "kWh"),
        ("zigbee:Multiplier", "1", ""),
        ("zigbee:Divisor", "1000", ""),
        ("zigbee:Price", price, "USD/kWh" if device.has_price else ""),
        (currency, "USD", ""),
        ("zigbee:PriceTier", str(tariff.tier) if device.has_price else "", ""),
        (label, tariff.label if device.has_price else "", ""),
        ("zigbee:PriceTrailingDigits", digits, ""),
        ("zigbee:PriceStartTime", str(tariff.start), ""),
        ("zigbee:Message", "", ""),
    ]


def _variable(device: SimDevice, name: str, value: str, units: str) -> str:
    if device.inline_units and units and value not in ("", "invalid"):
        value, units = f"{float(value):.3f} {units}", ""
    units_xml = f"<Units>{units}</Units>" if units else "<Units></Units>"
    return (
        f"<Variable><Name>{name}</Name><Value>{escape(value)}</Value>{units_xml}"
        f"<Description>{name.split(':', 1)[-1]}</Description></Variable>"
    )


def device_details(device: SimDevice, reading: SimReading, energy: EnergyMeter, firmware: str) -> bytes:
    """What the meter offers: its details and the names of its variables, without values."""
    names = "".join(f"<Variable>{name}</Variable>" for name, _, _ in variables(device, reading, energy))
    link = f"<LinkStrength>0x{40 + device.index % 60:02x}</LinkStrength>"
    details = _details(device, reading).replace(
        "</DeviceDetails>", f"<FWVersion>{firmware}</FWVersion>{link}</DeviceDetails>"
    )
    return (
        f"<Device>{details}<Components><Component><HardwareId>0x0</HardwareId>"
        f"<FixedId>0</FixedId><Name>Main</Name><Variables>{names}</Variables></Component></Components></Device>"
    ).encode()


def _details(device: SimDevice, reading: SimReading, joined: str = "Connected") -> str:
    return (
        f"<DeviceDetails><Name>Power Meter</Name><HardwareAddress>{meter_address(device)}</HardwareAddress>"
        f"<Protocol>Zigbee</Protocol><Manufacturer>Generic</Manufacturer><ModelId>electric_meter</ModelId>"
        f"<LastContact>0x{reading.timestamp + Y2K_EPOCH:08x}</LastContact><ConnectionStatus>{joined}"
        f"</ConnectionStatus><NetworkAddress>0x0000</NetworkAddress></DeviceDetails>"
    )


def device_query(
    device: SimDevice,
    reading: SimReading,
    energy: EnergyMeter,
    address: str,
    names: list[str] | None,
    joined: str = "Connected",
) -> bytes:
    """The query's reply; a query for the stale meter finds it not joined."""
    if address.lower() != meter_address(device):
        details = (
            f"<DeviceDetails><HardwareAddress>{escape(address)}</HardwareAddress>"
            "<ConnectionStatus>Not joined</ConnectionStatus><LastContact>0x00000000</LastContact>"
            "</DeviceDetails>"
        )
        return f"<Device>{details}<Components></Components></Device>".encode()
    available = variables(device, reading, energy)
    if names is not None:
        wanted = {n.lower() for n in names}
        available = [v for v in available if v[0].lower() in wanted]
    body = "".join(_variable(device, *v) for v in available)
    return (
        f"<Device>{_details(device, reading, joined)}<Components><Component><HardwareId>0x0</HardwareId>"
        f"<FixedId>0</FixedId><Name>Main</Name><Variables>{body}</Variables></Component></Components></Device>"
    ).encode()
