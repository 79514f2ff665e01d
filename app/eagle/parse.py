"""Pure functions from an EAGLE-100 reply body (XML or JSON) to a reading.

Element names are case-insensitive on the wire, so documents are read into dicts keyed by
lower-case names. XML is parsed only after the body passed a size bound, and with no DTDs, no
entity expansion and no external references (`xml_root`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import TypeVar
from xml.etree import ElementTree
from xml.etree.ElementTree import Element, ParseError

import orjson
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from app.eagle.readings import (
    NO_PRICE,
    DemandReading,
    NetworkInfo,
    PriceReading,
    SummationReading,
    hex_int,
    signed_hex,
)
from app.errors import (
    DeviceAuthError,
    DeviceBadReply,
    DeviceReplyError,
    DeviceUnavailable,
)

MAX_REPLY_BYTES = 64 * 1024
MAX_HISTORY_BYTES = 4 * 1024 * 1024  # a day of one-minute summations is about 600 KB
NO_TRAILING_DIGITS = 255  # PriceTrailingDigits 255: the price is unset
T = TypeVar("T")

_AUTH_WORDS = ("auth", "password", "credential", "login", "invalid user", "unknown user")
_OFFLINE_WORDS = ("offline", "not connected", "unreachable", "unable to connect", "no response")


def parse_document(body: bytes) -> tuple[str, dict[str, str]]:
    """The root element's lower-case name and its children's text, keyed by lower-case name."""
    if len(body) > MAX_REPLY_BYTES:
        raise DeviceBadReply(f"reply of {len(body)} bytes exceeds the {MAX_REPLY_BYTES}-byte bound")
    text = body.strip()
    if not text:
        raise DeviceBadReply("empty reply")
    first = text[:1]
    if first == b"<":
        root, fields = _parse_xml(text)
    elif first in (b"{", b'"'):
        root, fields = _parse_json(text)
    else:
        raise DeviceBadReply(f"reply is neither XML nor JSON (starts {text[:20]!r})")
    if root == "error":
        raise_device_error(fields)
    return root, fields


# The relay's replies are one flat element of simple children. Bodies that match this strict
# shape exactly (no declarations, no attributes, no entities, no nesting) are read with two
# regular expressions; anything else, hostile or merely unusual, goes through defusedxml.
_NAME = rb"[A-Za-z][A-Za-z0-9_]*"
_CHILDREN = rb"(?:\s*<" + _NAME + rb">[^<&]*</" + _NAME + rb">)*"  # simple children, text only
_FLAT_DOC = re.compile(rb"<(" + _NAME + rb")>(" + _CHILDREN + rb")\s*</\1>")
_FLAT_CHILD = re.compile(rb"<(" + _NAME + rb")>([^<&]*)</(" + _NAME + rb")>")


def _parse_flat(text: bytes) -> tuple[str, dict[str, str]] | None:
    doc = _FLAT_DOC.fullmatch(text)
    if doc is None:
        return None
    fields: dict[str, str] = {}
    for name, value, closing in _FLAT_CHILD.findall(doc.group(2)):
        if name != closing:
            return None  # mismatched tags: let the real parser report it
        fields[name.decode().lower()] = value.decode("utf-8", "replace").strip()
    return doc.group(1).decode().lower(), fields


# An uploader's usual body: an optional XML declaration, an optional envelope element with plain
# attributes (`<rainforest macId="0x…" timestamp="…s">`), and one flat fragment. Anything the
# full parser would read otherwise (a control character, a carriage return it would normalise,
# `]]>`, a duplicate attribute, text that is not UTF-8) is left to it.
_FLAT_UPLOAD = re.compile(
    rb'(?:<\?xml version="1\.0"(?: encoding="[Uu][Tt][Ff]-8")?\?>)?\s*'
    rb"(?:<(" + _NAME + rb")((?:\s+" + _NAME + rb'="[^"<&]*")*)\s*>\s*)?'
    rb"<(" + _NAME + rb")>(" + _CHILDREN + rb")\s*</\3>"
    rb"\s*(?:</(" + _NAME + rb")>)?"
)
_ATTRIBUTE_NAME = re.compile(rb"(" + _NAME + rb")=")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def flat_fragment(text: bytes) -> tuple[str | None, str, list[tuple[str, str]]] | None:
    """(envelope name or None, fragment name, its children's (name, stripped text) in order) of a
    body of exactly that shape, names as sent; None for anything else, for xml_root to read."""
    doc = _FLAT_UPLOAD.fullmatch(text)
    if doc is None or b"\r" in text or b"]]>" in text or _CONTROL.search(text) is not None:
        return None
    try:
        text.decode()  # all of it UTF-8, attributes too
    except UnicodeDecodeError:
        return None
    envelope, attributes, fragment, children, closing = doc.groups()
    if envelope != closing:  # an envelope opened and closed alike, or neither
        return None
    if attributes:
        names = _ATTRIBUTE_NAME.findall(attributes)
        if len(set(names)) != len(names):
            return None
    found: list[tuple[str, str]] = []
    for name, value, end in _FLAT_CHILD.findall(children):
        if name != end:
            return None
        found.append((name.decode(), value.decode().strip()))
    return (envelope.decode() if envelope else None), fragment.decode(), found


def _parse_xml(text: bytes) -> tuple[str, dict[str, str]]:
    flat = _parse_flat(text)
    if flat is not None:
        return flat
    root = xml_root(text)
    fields = {child.tag.lower(): (child.text or "").strip() for child in root}
    if not fields and root.text and root.text.strip():
        fields["text"] = root.text.strip()
    return root.tag.lower(), fields


def json_root(text: bytes) -> tuple[str, object]:
    """A JSON reply's one root name and its body; HistoryData and friends arrive without the
    outer braces."""
    if text[:1] == b'"':
        text = b"{" + text + b"}"
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DeviceBadReply(f"reply is malformed JSON: {exc}") from exc
    if not isinstance(doc, dict) or len(doc) != 1:
        raise DeviceBadReply("JSON reply must be one object with a single root name")
    ((name, body),) = doc.items()
    return str(name), body


def xml_root(text: bytes) -> Element:
    """The root of an XML reply, parsed with no DTDs, entities or external references. Every one
    of those is declared with `<!` (a DOCTYPE, an ENTITY), so a document without `<!` can hold
    none (a reference to an undeclared entity is a parse error) and goes to the standard
    library's parser directly; one with it (also a comment or CDATA) goes to defusedxml, which
    refuses the declarations. defusedxml sets a parser up for each document, which costs twice
    the parse of a gateway's usual reply."""
    try:
        if b"<!" not in text:
            root: Element = ElementTree.fromstring(text)
        else:
            root = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise DeviceBadReply(f"reply XML uses a forbidden construct ({type(exc).__name__})") from exc
    except ParseError as exc:
        raise DeviceBadReply(f"reply is malformed XML: {exc}") from exc
    return root


def _parse_json(text: bytes) -> tuple[str, dict[str, str]]:
    name, body = json_root(text)
    if isinstance(body, str):
        return name.lower(), {"text": body}
    if not isinstance(body, dict):
        raise DeviceBadReply(f"JSON reply's {name} is not an object")
    return name.lower(), {str(k).lower(): "" if v is None else str(v) for k, v in body.items()}


def raise_device_error(fields: dict[str, str]) -> None:
    """Turn an `<Error>` reply into the matching DeviceError."""
    message = next(
        (fields[k] for k in ("text", "description", "message", "reason") if fields.get(k)),
        " ".join(v for v in fields.values() if v) or "device returned an empty <Error>",
    )
    lowered = message.lower()
    if any(word in lowered for word in _AUTH_WORDS):
        raise DeviceAuthError(message)
    if any(word in lowered for word in _OFFLINE_WORDS):
        raise DeviceUnavailable(message)
    raise DeviceReplyError(message)


def _expect(root: str, fields: dict[str, str], name: str, build: Callable[[], T]) -> T:
    if root != name.lower():
        raise DeviceBadReply(f"expected a {name} reply, got {root}")
    try:
        return build()
    except KeyError as exc:
        raise DeviceBadReply(f"{name} reply lacks {exc.args[0]}") from None
    except ValueError as exc:
        raise DeviceBadReply(f"{name} reply has a field that is not hex ({exc})") from None


def _hex(fields: dict[str, str], name: str, default: str | None = None) -> int:
    value = fields.get(name.lower(), default)
    if value is None:
        raise KeyError(name)
    try:
        return hex_int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}") from None


def parse_demand(body: bytes) -> DemandReading:
    """InstantaneousDemand reply → DemandReading."""
    return demand_from(*parse_document(body))


def demand_from(root: str, f: dict[str, str]) -> DemandReading:
    """An InstantaneousDemand element's fields (lower-case names) → DemandReading."""

    def build() -> DemandReading:
        demand = f.get("demand")
        if demand is None:
            raise KeyError("Demand")
        try:
            signed = signed_hex(demand)
        except ValueError:
            raise ValueError(f"Demand={demand!r}") from None
        return DemandReading(
            device_mac_id=_hex(f, "DeviceMacId"),
            meter_mac_id=_hex(f, "MeterMacId", "0x0"),
            timestamp=_hex(f, "TimeStamp"),
            demand=signed,
            multiplier=_hex(f, "Multiplier", "0x1"),
            divisor=_hex(f, "Divisor", "0x1"),
            digits_right=_hex(f, "DigitsRight", "0x0"),
            digits_left=_hex(f, "DigitsLeft", "0x0"),
            suppress_leading_zero=f.get("suppressleadingzero", ""),
        )

    return _expect(root, f, "InstantaneousDemand", build)


def parse_summation(body: bytes) -> SummationReading:
    """CurrentSummation (or CurrentSummationDelivered) reply → SummationReading."""
    return summation_from(*parse_document(body))


def summation_from(root: str, f: dict[str, str]) -> SummationReading:
    """A CurrentSummation (or CurrentSummationDelivered) element's fields → SummationReading."""
    if root == "currentsummationdelivered":
        root = "currentsummation"
    return _expect(root, f, "CurrentSummation", partial(_summation, f))


def parse_price(body: bytes) -> PriceReading:
    """PriceCluster reply → PriceReading (0xffffffff means no price)."""
    return price_from(*parse_document(body))


def price_from(root: str, f: dict[str, str]) -> PriceReading:
    """A PriceCluster element's fields → PriceReading (0xffffffff means no price)."""

    def build() -> PriceReading:
        raw = _hex(f, "Price")
        digits = _hex(f, "TrailingDigits", "0x0")
        unset = raw == NO_PRICE or digits == NO_TRAILING_DIGITS
        return PriceReading(
            device_mac_id=_hex(f, "DeviceMacId"),
            meter_mac_id=_hex(f, "MeterMacId", "0x0"),
            timestamp=_hex(f, "TimeStamp"),
            price=None if unset else raw / 10**digits,
            currency=_hex(f, "Currency", "0x0"),
            tier=_tier(f.get("tier", "0x0")),
            rate_label=f.get("ratelabel", ""),
        )

    return _expect(root, f, "PriceCluster", build)


def _tier(value: str) -> int:
    """A price tier: hex as the manuals send it (0x01), or decimal as some gateways do (10)."""
    text = value.strip()
    try:
        return int(text, 16) if text[:2] in ("0x", "0X") else int(text)
    except ValueError:
        raise ValueError(f"Tier={value!r}") from None


_NETWORK_FIELDS = (
    "DeviceMacId", "InstallCode", "LinkKey", "FWVersion", "HWVersion", "ImageType",
    "Manufacturer", "ModelId", "DateCode",
)  # fmt: skip


def parse_network_info(body: bytes) -> NetworkInfo:
    """NetworkInfo reply → NetworkInfo (identity strings as sent)."""
    root, f = parse_document(body)
    named = {name: f[name.lower()] for name in _NETWORK_FIELDS if name.lower() in f}
    return _expect(root, f, "NetworkInfo", lambda: NetworkInfo(_hex(f, "DeviceMacId"), named))


def parse_history(body: bytes) -> list[SummationReading | DemandReading]:
    """HistoryData reply (CurrentSummation / CurrentSummationDelivered and InstantaneousDemand
    entries, XML or brace-less JSON) → their readings, in the order sent."""
    if len(body) > MAX_HISTORY_BYTES:
        raise DeviceBadReply(f"history reply of {len(body)} bytes exceeds the {MAX_HISTORY_BYTES}-byte bound")
    text = body.strip()
    if text[:1] == b"<":
        root, entries = _history_xml(text)
    elif text[:1] in (b"{", b'"'):
        root, entries = _history_json(text)
    else:
        raise DeviceBadReply(f"history reply is neither XML nor JSON (starts {text[:20]!r})")
    if root == "error":
        raise_device_error(entries[0][1] if entries else {})
    if root != "historydata":
        raise DeviceBadReply(f"expected a HistoryData reply, got {root}")
    return [history_entry(name, fields) for name, fields in entries]


def history_entry(name: str, fields: dict[str, str]) -> SummationReading | DemandReading:
    """One entry of a HistoryData fragment (its tag, lower-case, and its fields)."""
    if name == "instantaneousdemand":
        return demand_from(name, fields)
    return _expect("currentsummation", fields, "CurrentSummation", partial(_summation, fields))


def _summation(f: dict[str, str]) -> SummationReading:
    return SummationReading(
        device_mac_id=_hex(f, "DeviceMacId", "0x0"),
        meter_mac_id=_hex(f, "MeterMacId", "0x0"),
        timestamp=_hex(f, "TimeStamp"),
        summation_delivered=_hex(f, "SummationDelivered"),
        summation_received=_hex(f, "SummationReceived", "0x0"),
        multiplier=_hex(f, "Multiplier", "0x1"),
        divisor=_hex(f, "Divisor", "0x1"),
    )


HISTORY_ENTRIES = ("currentsummation", "currentsummationdelivered", "instantaneousdemand")


def _history_xml(text: bytes) -> tuple[str, list[tuple[str, dict[str, str]]]]:
    root = xml_root(text)
    if root.tag.lower() == "error":
        return "error", [("error", {c.tag.lower(): (c.text or "").strip() for c in root})]
    entries = [
        (child.tag.lower(), {c.tag.lower(): (c.text or "").strip() for c in child})
        for child in root
        if child.tag.lower() in HISTORY_ENTRIES
    ]
    return root.tag.lower(), entries


def _history_json(text: bytes) -> tuple[str, list[tuple[str, dict[str, str]]]]:
    name, body = json_root(text)
    if name.lower() == "error":
        fields = {str(k).lower(): str(v) for k, v in body.items()} if isinstance(body, dict) else {}
        return "error", [("error", fields)]
    if not isinstance(body, dict):
        raise DeviceBadReply("HistoryData is not an object")
    out: list[tuple[str, dict[str, str]]] = []
    for key, found in body.items():
        if key.lower() not in HISTORY_ENTRIES:
            continue
        items: list[object] = found if isinstance(found, list) else [found]
        for item in items:
            if not isinstance(item, dict):
                raise DeviceBadReply(f"HistoryData's {key} entries must be objects")
            out.append((key.lower(), {str(k).lower(): str(v) for k, v in item.items()}))
    return name.lower(), out
