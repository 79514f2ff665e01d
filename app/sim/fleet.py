"""The simulated fleet: deterministic devices (ids, protocols, secrets, meter quirks) from a seed."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import random
from dataclasses import dataclass, field
from typing import Any

from app.devices import CLOUD, LOCAL_PROTOCOLS, PROTOCOLS
from app.errors import ValidationError

CGI = "eagle100-cgi"  # in a mix: an eagle100-local gateway speaking only cgi_manager

DEFAULT_MIX = {CLOUD: 100}


@dataclass(frozen=True, slots=True)
class SimDevice:
    """One simulated household: identity, credentials and how its meter encodes values."""

    index: int
    cloud_id: str
    user_email: str
    password: str = field(repr=False)
    device_mac_id: int
    meter_mac_id: int
    phase_fraction: float  # where in the reading interval this meter makes new readings
    base_w: float
    tz_offset_h: int
    solar_w: float  # 0 for homes without panels; solar homes export around noon
    multiplier: int  # 0 on some meters (counts as 1)
    divisor: int
    negative_24bit: bool  # most meters send negatives as 32-bit two's complement
    has_price: bool
    protocol: str = CLOUD
    install_code: str = field(default="", repr=False)
    # EAGLE-200 quirks (DESIGN.md, eagle-protocols.md §3)
    inline_units: bool = False  # values as "21.499 kW" instead of "21.499000" + <Units>
    stale_meter: bool = False  # device_list also shows a "Not joined" meter
    wraps_negative: bool = False  # negative demand as an unsigned 32-bit count of watts
    renamed_variables: bool = False  # zigbee:Currency / RateLabel instead of PriceCurrency / PriceRateLabel
    push_key: str = field(default="", repr=False)  # a push device's key
    push_dialect: str = "eagle100-xml"  # eagle100-xml, eagle200-json, eagle200-xml, eagle200-xml-simple
    api: str = ""  # an eagle100-local gateway that speaks only cgi_manager (--protocols eagle100-cgi=N)

    @property
    def user_price(self) -> bool:
        """A price typed into the gateway's app: sent with TimeStamp 0xffffffff ("no time"), on
        about one polled EAGLE-100 with a price in seven (chosen by cloud_id, not the seed's draw)."""
        return (
            self.has_price
            and self.protocol in ("eagle100-cloud", "eagle100-local")
            and int(self.cloud_id, 16) % 7 == 3
        )

    @property
    def local(self) -> bool:
        """Polled on the household's network (not through the relay, and not a push device)."""
        return self.protocol in LOCAL_PROTOCOLS

    def users_line(self, address: str = "127.0.0.1:9445") -> dict[str, Any]:
        """This device as a line of the users file `rainforest users import` reads; a local
        gateway's address is the simulator's own (the cloud_id in Basic auth names the device)."""
        if self.protocol == "push":
            return {
                "cloud_id": self.cloud_id,
                "protocol": "push",
                "push_key": self.push_key,
                "user_email": self.user_email,
            }
        if not self.local:
            return {
                "cloud_id": self.cloud_id,
                "user_email": self.user_email,
                "user_pw": self.password,
                "protocol": self.protocol,
            }
        line = {
            "cloud_id": self.cloud_id,
            "protocol": self.protocol,
            "address": address,
            "install_code": self.install_code,
            "user_email": self.user_email,
        }
        return {**line, "api": self.api} if self.api else line


def parse_mix(spec: str) -> dict[str, int]:
    """`eagle100-cloud=60,eagle200-local=30,eagle100-local=10` → shares by protocol."""
    mix: dict[str, int] = {}
    for part in spec.split(","):
        name, _, share = part.strip().partition("=")
        if name not in (*PROTOCOLS, CGI):
            raise ValidationError(f"--protocols: {name!r} is not one of {', '.join((*PROTOCOLS, CGI))}.")
        if not share.isdigit() or int(share) < 0:
            raise ValidationError(f"--protocols: the share of {name} must be a whole number, as {name}=30.")
        mix[name] = int(share)
    if sum(mix.values()) <= 0:
        raise ValidationError("--protocols: give at least one protocol a share above 0.")
    return mix


def assign_protocols(count: int, mix: dict[str, int]) -> list[str]:
    """Interleave protocols by their shares (smooth weighted round-robin): any stretch of the
    fleet has them in proportion, so the first few devices already show every kind."""
    total = sum(mix.values())
    current = dict.fromkeys(mix, 0)
    out = []
    for _ in range(count):
        for name, weight in mix.items():
            current[name] += weight
        chosen = max(current, key=lambda n: current[n])
        current[chosen] -= total
        out.append(chosen)
    return out


def build_fleet(count: int, seed: int, mix: dict[str, int] | None = None) -> list[SimDevice]:
    """`count` devices; the same seed (and mix) always gives the same fleet."""
    rng = random.Random(seed)
    ids = rng.sample(range(0x010000, 0x1000000), count)
    if ids:
        ids[0] = rng.randrange(0x000100, 0x010000)  # a cloud_id with leading zeros, always
    protocols = assign_protocols(count, mix or DEFAULT_MIX)
    return [_device(i, ids[i], seed, rng, protocols[i]) for i in range(count)]


def _dialect(number: int, drawn: str) -> str:
    """What a push device uploads; about one in eleven uses the EAGLE-200's XML:Simple format
    (chosen by cloud_id after the draw, so that the other devices keep theirs)."""
    return "eagle200-xml-simple" if number % 11 == 5 else drawn


def _cgi(device: SimDevice) -> SimDevice:
    return dataclasses.replace(device, protocol="eagle100-local", api="cgi_manager")


def _device(index: int, number: int, seed: int, rng: random.Random, protocol: str) -> SimDevice:
    if protocol == CGI:
        return _cgi(_device(index, number, seed, rng, "eagle100-local"))
    cloud_id = f"{number:06x}"
    secret = hmac.new(str(seed).encode(), cloud_id.encode(), hashlib.sha256).hexdigest()
    kind = rng.random()
    quirks = random.Random(f"{seed}:{cloud_id}")  # separate stream: the mix leaves other fields alone
    solar_w = rng.uniform(2500, 7000) if kind < 0.2 else 0.0
    return SimDevice(
        index=index,
        cloud_id=cloud_id,
        user_email=f"household{index:05d}@sim.rainforest.test",
        password=secret[:16],
        device_mac_id=0xD8D5B90000000000 | number,
        meter_mac_id=0x0007810000000000 | rng.getrandbits(32),
        phase_fraction=rng.random(),
        base_w=rng.uniform(120, 450),
        tz_offset_h=rng.choice((-8, -7, -6, -5)),
        solar_w=solar_w,
        multiplier=0 if 0.2 <= kind < 0.3 else 1,
        divisor=1000,
        negative_24bit=rng.random() < 0.25,
        has_price=rng.random() < 0.7,
        protocol=protocol,
        install_code=secret[16:32].upper(),
        inline_units=quirks.random() < 0.4,
        stale_meter=quirks.random() < 0.25,
        wraps_negative=bool(solar_w) and quirks.random() < 0.6,
        renamed_variables=quirks.random() < 0.3,
        push_key=f"sim-{secret[32:64]}",
        push_dialect=_dialect(number, quirks.choice(("eagle100-xml", "eagle200-json", "eagle200-xml"))),
    )
