"""The simulated fleet: deterministic devices (ids, credentials, meter quirks) from a seed."""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import dataclass, field
from typing import Any


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

    def users_line(self) -> dict[str, Any]:
        """This device as a line of the users file `rainforest users import` reads."""
        return {
            "cloud_id": self.cloud_id,
            "user_email": self.user_email,
            "user_pw": self.password,
            "protocol": "eagle100-cloud",
        }


def build_fleet(count: int, seed: int) -> list[SimDevice]:
    """`count` devices; the same seed always gives the same fleet."""
    rng = random.Random(seed)
    ids = rng.sample(range(0x010000, 0x1000000), count)
    if ids:
        ids[0] = rng.randrange(0x000100, 0x010000)  # a cloud_id with leading zeros, always
    return [_device(i, ids[i], seed, rng) for i in range(count)]


def _device(index: int, number: int, seed: int, rng: random.Random) -> SimDevice:
    cloud_id = f"{number:06x}"
    secret = hmac.new(str(seed).encode(), cloud_id.encode(), hashlib.sha256).hexdigest()
    kind = rng.random()
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
        solar_w=rng.uniform(2500, 7000) if kind < 0.2 else 0.0,
        multiplier=0 if 0.2 <= kind < 0.3 else 1,
        divisor=1000,
        negative_24bit=rng.random() < 0.25,
        has_price=rng.random() < 0.7,
    )
