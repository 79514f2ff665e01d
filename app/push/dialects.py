"""Pure functions from an uploader's POST body to readings, in the three dialects gateways send.

- EAGLE-100 RFA XML: `<rainforest macId="0x…" timestamp="1355292588s">FRAGMENT</rainforest>`,
  usually one fragment with the REST API's hex fields (InstantaneousDemand,
  CurrentSummationDelivered, PriceCluster; NetworkInfo, DeviceInfo, MessageCluster, TimeCluster
  and others are kept for the device's record, not written as readings).
- EAGLE-200 RFA XML: the same envelope, with `CurrentSummation` and `ConnectionStatus`.
- EAGLE-200 JSON (the uploader's `RFA` format): `{"timestamp", "deviceGuid", "body": [reports]}`,
  each report with a `dataType` (InstantaneousDemand, CurrentSummation, Price, Message), times in
  Unix milliseconds as strings, and `subdeviceGuid` the meter's MAC without `0x`.
- EAGLE-200 XML:Simple: `<XmlSimple>` holding a batch of `<Report>`s, each with `Timestamp`
  (Unix seconds), `SubdeviceGuid` and `Variables` named as in the Local API's `device_query`
  (`zigbee:InstantaneousDemand`, `zigbee:CurrentSummationDelivered`, `zigbee:Price`, ...). The
  uploader specification describes the format (nested, Unix-second times, `Variables`), not
  every element name: those here follow the Local API and the JSON format's names.

The EAGLE-100 sends its XML as application/x-www-form-urlencoded, so the Content-Type is not
trusted: the body's first byte decides. Readings whose time is not plausible (before 2000, or
more than a day ahead) are dropped and counted; a reading is never guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

import orjson

from app.eagle.parse import (
    HISTORY_ENTRIES,
    demand_from,
    flat_fragment,
    history_entry,
    price_from,
    summation_from,
    xml_root,
)
from app.eagle.parse200 import HALF_WRAP_KW, WRAP_KW, readings_in
from app.eagle.readings import (
    MeterDemand,
    MeterPrice,
    MeterSummation,
    Reading,
    currency_code,
    hex_int,
    plausible_time,
    unix_time,
)
from app.errors import DeviceError

MAX_REPORTS = 1000  # reports in one batch; more is refused as a whole
XML_SIMPLE_DEPTH = 5  # XmlSimple > Report > Variables > Variable > Name: deeper is refused
RFA_DEPTH = 5  # rainforest > a fragment (a smart plug's ReadAttributesResponse) > ... > a field
READING_FRAGMENTS = {"instantaneousdemand", "currentsummationdelivered", "currentsummation", "pricecluster"}


class BadUpload(ValueError):
    """The body is not one of the dialects (or is malformed): a 400 with this sentence."""


@dataclass
class Upload:
    """What one body held: readings to write, and what was set aside (with why)."""

    readings: list[Reading] = field(default_factory=list)
    history: list[Reading] = field(default_factory=list)  # a HistoryData fragment's entries
    kept: dict[str, dict[str, str]] = field(default_factory=dict)  # other fragments, for the record
    ignored: list[str] = field(default_factory=list)  # one reason per reading not written


def parse_upload(body: bytes, now: float) -> Upload:
    """Any of the three dialects → Upload; BadUpload when it is none of them."""
    text = body.strip()
    if not text:
        raise BadUpload("the body is empty; an uploader sends RFA XML or EAGLE-200 JSON.")
    if text[:1] == b"<":
        return _xml(text, now)
    if text[:1] == b"{":
        return _eagle200_json(text, now)
    raise BadUpload("the body is neither RFA XML nor EAGLE-200 JSON.")


def _plausible(upload: Upload, reading: Reading, now: float) -> None:
    if plausible_time(reading.device_time, now):
        upload.readings.append(reading)
    else:
        upload.ignored.append(f"{reading.kind} at {reading.device_time} is not a plausible time")


def _xml(text: bytes, now: float) -> Upload:
    return flat_upload(text, now) or xml_upload(text, now)


def flat_upload(text: bytes, now: float) -> Upload | None:
    """The usual RFA body (one flat fragment, or none but the envelope) read without building a
    tree; None for any other body. Gives what xml_upload gives for the same body."""
    flat = flat_fragment(text)
    if flat is None:
        return None
    envelope, tag, children = flat
    if tag.lower() in ("historydata", "xmlsimple") or (
        envelope is not None and envelope.lower() != "rainforest"
    ):
        return None  # read as a tree: HistoryData's entries, XmlSimple's reports, another envelope
    upload = Upload()
    _rfa_fragment(upload, tag, children, now)
    return upload


def xml_upload(text: bytes, now: float) -> Upload:
    """Any XML body, through the hardened parser."""
    try:
        root = xml_root(text)
    except DeviceError as exc:  # the same hardened parser as gateways' replies
        raise BadUpload(f"the body is not acceptable XML: {exc}.") from None
    simple = root.tag.lower() == "xmlsimple"
    limit = XML_SIMPLE_DEPTH if simple else RFA_DEPTH
    if _deeper(root, limit):
        raise BadUpload(f"the {root.tag[:40]} body is nested deeper than {limit} levels.")
    return _xml_simple(root, now) if simple else _rfa_xml(root, now)


def _deeper(root: Element, limit: int) -> bool:
    """Whether any element lies more than `limit` levels down (walked without recursion)."""
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in element)
    return False


def _xml_simple(root: Element, now: float) -> Upload:
    reports = [child for child in root if child.tag.lower() == "report"] or [root]
    if len(reports) > MAX_REPORTS:
        raise BadUpload(f"a batch holds at most {MAX_REPORTS} reports, this one {len(reports)}.")
    upload = Upload()
    for n, report in enumerate(reports):
        fields = {c.tag.lower(): (c.text or "").strip() for c in report if not len(c)}
        try:
            at = unix_time(int(fields.get("timestamp", ""), 0))
            mac = hex_int(fields.get("subdeviceguid") or fields.get("metermacid") or "0")
        except ValueError:
            upload.ignored.append(f"report {n}: Timestamp is not Unix seconds or SubdeviceGuid is not hex")
            continue
        found = readings_in(report, at, mac)
        readings = [r for r in (found.demand, found.summation, found.price) if r is not None]
        if not readings:
            upload.ignored.append(f"report {n} holds no reading (empty or unknown variables)")
        for reading in readings:
            _plausible(upload, reading, now)
    return upload


def _rfa_xml(root: Element, now: float) -> Upload:
    fragments = list(root) if root.tag.lower() == "rainforest" else [root]
    upload = Upload()
    for fragment in fragments:
        name = fragment.tag.lower()
        if name == "historydata":
            _history(fragment, upload, now)
            continue
        nested = len(fragment) and any(len(child) for child in fragment)
        if nested and name in READING_FRAGMENTS:
            raise BadUpload(f"the {fragment.tag} fragment is nested deeper than RFA XML goes.")
        if nested:  # a fragment we do not read (ReadAttributesResponse, ...): said, not refused
            upload.ignored.append(f"{fragment.tag[:40]} is nested: not kept")
            continue
        _rfa_fragment(upload, fragment.tag, [(c.tag, (c.text or "").strip()) for c in fragment], now)
    return upload


def _rfa_fragment(upload: Upload, tag: str, children: list[tuple[str, str]], now: float) -> None:
    """One flat fragment: a reading, or kept for the device's record."""
    name = tag.lower()
    if name not in READING_FRAGMENTS:
        upload.kept[tag] = {child: text[:200] for child, text in children}
        return
    try:
        reading = _fragment(name, {child.lower(): text for child, text in children})
    except DeviceError as exc:  # a fragment that lacks a field or has one that is not hex
        upload.ignored.append(f"{tag}: {exc}")
        return
    if reading is not None:
        _plausible(upload, reading, now)


def _history(fragment: Element, upload: Upload, now: float) -> None:
    """An EAGLE-100's answer to get_history_data, pushed: a HistoryData fragment of summation and
    demand entries, each a reading of its own time (one without a time is no history)."""
    entries = list(fragment)
    if len(entries) > MAX_REPORTS:
        raise BadUpload(
            f"a HistoryData fragment holds at most {MAX_REPORTS} entries, this one {len(entries)}."
        )
    for n, entry in enumerate(entries):
        name = entry.tag.lower()
        if any(len(child) for child in entry):
            raise BadUpload(f"the {entry.tag} entry of HistoryData is nested deeper than RFA XML goes.")
        if name not in HISTORY_ENTRIES:
            upload.ignored.append(f"HistoryData entry {n} ({entry.tag[:40]}) is not a reading")
            continue
        try:
            reading = history_entry(name, {c.tag.lower(): (c.text or "").strip() for c in entry})
        except DeviceError as exc:
            upload.ignored.append(f"HistoryData entry {n}: {exc}")
            continue
        if reading.device_time is None or not plausible_time(reading.device_time, now):
            upload.ignored.append(f"HistoryData entry {n} has no plausible time")
            continue
        upload.history.append(reading)


def _fragment(name: str, fields: dict[str, str]) -> Reading | None:
    if name == "instantaneousdemand":
        return demand_from(name, fields)
    if name == "pricecluster":
        price = price_from(name, fields)
        return price if price.price is not None else None
    return summation_from(name, fields)


def _eagle200_json(text: bytes, now: float) -> Upload:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadUpload(f"the body is malformed JSON ({exc.msg}).") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("body"), list):
        raise BadUpload('EAGLE-200 JSON must be an object with a "body" list of reports.')
    reports = doc["body"]
    if len(reports) > MAX_REPORTS:
        raise BadUpload(f"a batch holds at most {MAX_REPORTS} reports, this one {len(reports)}.")
    upload = Upload()
    for n, report in enumerate(reports):
        if not isinstance(report, dict):
            upload.ignored.append(f"report {n} is not an object")
            continue
        try:
            reading = _report(report)
        except (KeyError, TypeError, ValueError) as exc:
            upload.ignored.append(f"report {n} ({str(report.get('dataType'))[:40]}): {exc!s:.100}")
            continue
        if reading is None:
            upload.kept[str(report.get("dataType"))[:40]] = (
                {str(k)[:40]: str(v)[:200] for k, v in (report.get("data") or {}).items()}
                if isinstance(report.get("data"), dict)
                else {}
            )
            continue
        _plausible(upload, reading, now)
    return upload


def _number(data: dict[str, Any], *names: str) -> float | None:
    for name in names:
        value = data.get(name)
        if value is None or value == "" or isinstance(value, bool):
            continue
        result = float(value)  # ValueError / TypeError: a reason for the report
        if not math.isfinite(result):
            raise ValueError(f"{name} is not a finite number")
        return result
    return None


def _report(report: dict[str, Any]) -> Reading | None:
    kind = report.get("dataType")
    data = report.get("data")
    if kind not in ("InstantaneousDemand", "CurrentSummation", "Price"):
        return None  # Message and anything newer: kept for the record
    if not isinstance(data, dict):
        raise ValueError("data is not an object")
    stamp = report.get("timestamp")
    if (
        not isinstance(stamp, str | int)
        or isinstance(stamp, bool)
        or not (str(stamp).isascii() and str(stamp).isdigit())
    ):
        raise ValueError("timestamp is not Unix milliseconds")
    at = int(stamp) // 1000
    mac = int(str(report.get("subdeviceGuid") or "0"), 16)
    if kind == "InstantaneousDemand":
        kw = _number(data, "demand")
        if kw is None:
            raise ValueError("demand is missing")
        return MeterDemand(at, round(kw - WRAP_KW, 6) if kw >= HALF_WRAP_KW else kw, mac)
    if kind == "CurrentSummation":
        delivered = _number(data, "summationDelivered")
        if delivered is None:
            raise ValueError("summationDelivered is missing")
        return MeterSummation(at, delivered, _number(data, "summationReceived"), mac)
    price = _number(data, "price", "Price")
    digits = _number(data, "PriceTrailingDigits")
    if price is None or digits == 255 or price == 0xFFFFFFFF:
        return None
    tier = _number(data, "PriceTier", "tier")
    currency = data.get("currency", data.get("PriceCurrency", ""))
    return MeterPrice(
        at, price, currency_code(str(currency)) if currency else "", int(tier) if tier is not None else None,
        str(data.get("PriceRateLabel", data.get("rateLabel", "")))[:60], mac,
    )  # fmt: skip
