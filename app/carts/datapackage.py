"""datapackage.json: every cart described as a Frictionless Data Package, which the
`frictionless validate` command (and any Data Package reader) checks: each table's fields, types,
units and missing values, and each other file's size and SHA-256."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from app.carts.tables import CSV_HEADER
from app.research.schema import UNITS, cart_schema

PROFILE = "data-package"
_CSV_TYPES = {
    "time_utc": ("datetime", "the reading's own time, UTC"),
    "demand_kw": ("number", UNITS["demand_kw"]),
    "cloud_id": ("string", "the device"),
    "participant_id": ("string", "the household's pseudonym in its study"),
    "device_time": ("integer", "the reading's own time, Unix seconds"),
    "polled_at": ("number", "when it reached us, Unix seconds"),
    "TimeStamp": ("integer", "the gateway's raw time (EAGLE-100: seconds since 2000)"),
    "Demand": ("integer", "the gateway's raw demand"),
    "Multiplier": ("integer", ""),
    "Divisor": ("integer", ""),
    "local_time": ("datetime", "the reading's time in the household's zone, with its offset"),
}  # fmt: skip
_COMPLETENESS = [
    ("hour_utc", "datetime", "the UTC hour"), ("polls_scheduled", "integer", "empty: not known"),
    ("polls_ok", "integer", "empty: not known"), ("readings", "integer", "distinct demand readings"),
    ("longest_gap_s", "number", "seconds"), ("duplicates_dropped", "integer", ""),
]  # fmt: skip
_DAYS = [
    ("local_day", "date", "the household's local day"), ("timezone", "string", "IANA"),
    ("polls_scheduled", "integer", "empty: not known"), ("polls_ok", "integer", "empty: not known"),
    ("readings", "integer", "distinct demand readings"), ("duplicates_dropped", "integer", ""),
]  # fmt: skip
_PARTICIPANTS = [
    ("participant_id", "string", ""), ("study", "string", ""), ("timezone", "string", "IANA"),
    ("state", "string", "enrolled, completed or withdrawn"), ("enrolled_from_utc", "datetime", ""),
    ("enrolled_until_utc", "datetime", "empty: open-ended"), ("demand_rows", "integer", ""),
    ("summation_rows", "integer", ""), ("price_rows", "integer", ""), ("hours_with_data", "integer", ""),
]  # fmt: skip


def _field(name: str, kind: str, description: str) -> dict[str, str]:
    return {"name": name, "type": kind, **({"description": description} if description else {})}


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", path.lower()).strip("-") or "file"


def _arrow(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind):
        return "datetime"
    if pa.types.is_integer(kind):
        return "integer"
    if pa.types.is_floating(kind):
        return "number"
    return "string"


def resource(name: str, path: Path, size: int, sha256: str, id_column: str) -> dict[str, Any]:
    """How one member of the cart is described."""
    base = {"name": _slug(name), "path": name, "bytes": size, "hash": f"sha256:{sha256}"}
    if name == "COMPLETENESS.csv":
        fields = [_field(id_column, "string", ""), *(_field(*f) for f in _COMPLETENESS)]
        return {**base, "type": "table", "format": "csv", "schema": {"fields": fields, "missingValues": [""]}}
    if name == "COMPLETENESS_DAYS.csv":
        fields = [_field(id_column, "string", ""), *(_field(*f) for f in _DAYS)]
        return {**base, "type": "table", "format": "csv", "schema": {"fields": fields, "missingValues": [""]}}
    if name == "participants.csv":
        fields = [_field(*f) for f in _PARTICIPANTS]
        return {**base, "type": "table", "format": "csv", "schema": {"fields": fields, "missingValues": [""]}}
    if name.endswith(".csv"):
        header = [id_column if h == "cloud_id" else h for h in CSV_HEADER]
        fields = [_field(h, *_CSV_TYPES[h]) for h in header]
        return {**base, "type": "table", "format": "csv", "schema": {"fields": fields, "missingValues": [""]}}
    if name.endswith(".parquet"):
        kind = Path(name).stem
        schema = cart_schema(kind, pseudonymous=id_column != "cloud_id")
        fields = [_field(f.name, _arrow(f.type), UNITS.get(f.name, "")) for f in schema]
        # its size and digest are in SHA256SUMS: frictionless reads Parquet without counting its bytes
        described = {k: v for k, v in base.items() if k not in ("bytes", "hash")}
        return {**described, "type": "table", "format": "parquet", "schema": {"fields": fields}}
    if name.endswith(".jl"):  # JSON lines whose fields depend on each line's kind (README.txt)
        return {**base, "type": "file", "format": "jsonl", "mediatype": "application/x-ndjson"}
    return {**base, "type": "file", "format": Path(name).suffix.lstrip(".") or "txt"}


def document(cart_id: str, fmt: str, described: Iterable[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {
            "name": f"rainforest-cart-{cart_id}".lower(),
            "title": f"Rainforest Logger cart {cart_id} ({fmt})",
            "profile": PROFILE,
            "resources": list(described),
        },
        option=orjson.OPT_INDENT_2,
    )
