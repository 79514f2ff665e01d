"""EAGLE gateway protocols: pure parsers (`parse`), readings (`readings`), clients (`client`)."""

from app.eagle.client import Credentials, EagleCloudClient
from app.eagle.readings import DemandReading, NetworkInfo, PriceReading, SummationReading

__all__ = [
    "Credentials",
    "DemandReading",
    "EagleCloudClient",
    "NetworkInfo",
    "PriceReading",
    "SummationReading",
]
