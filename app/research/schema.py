"""The typed columns of each line kind, shared by Parquet carts and the compacted archive.

`time` is the reading's own time (`device_time`) and `polled_at` when it reached us, both UTC
timestamps in milliseconds. Values keep their units (kW, kWh, price per kWh in `currency`); the
device's raw fields stay the integers the lines hold (decoded from the gateway's hex). A column a
line does not have (an EAGLE-200 sends no `Multiplier`) is null, never zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

TIME = pa.timestamp("ms", tz="UTC")
KINDS = ("demand", "summation", "price")

_HEAD: list[tuple[str, pa.DataType]] = [("cloud_id", pa.string()), ("time", TIME)]
_TAIL: list[tuple[str, pa.DataType]] = [("polled_at", TIME), ("source", pa.string())]
_VALUES: dict[str, list[tuple[str, pa.DataType]]] = {
    "demand": [
        ("demand_kw", pa.float64()),
        ("DeviceMacId", pa.uint64()), ("MeterMacId", pa.uint64()), ("TimeStamp", pa.int64()),
        ("Demand", pa.int64()), ("Multiplier", pa.int64()), ("Divisor", pa.int64()),
        ("DigitsRight", pa.int32()), ("DigitsLeft", pa.int32()), ("SuppressLeadingZero", pa.string()),
    ],
    "summation": [
        ("delivered_kwh", pa.float64()), ("received_kwh", pa.float64()),
        ("DeviceMacId", pa.uint64()), ("MeterMacId", pa.uint64()), ("TimeStamp", pa.int64()),
        ("SummationDelivered", pa.int64()), ("SummationReceived", pa.int64()),
        ("Multiplier", pa.int64()), ("Divisor", pa.int64()),
    ],
    "price": [
        ("price", pa.float64()), ("currency", pa.string()), ("tier", pa.int32()), ("rate_label", pa.string()),
        ("DeviceMacId", pa.uint64()), ("MeterMacId", pa.uint64()), ("TimeStamp", pa.int64()),
    ],
}  # fmt: skip
SCHEMAS = {kind: pa.schema([*_HEAD, *_VALUES[kind], *_TAIL]) for kind in KINDS}
UNITS = {
    "demand_kw": "kW, signed: negative is power sent to the grid (solar)",
    "delivered_kwh": "kWh, the meter's total from the grid (only rises, but after a meter reset)",
    "received_kwh": "kWh, the meter's total to the grid",
    "price": "per kWh, in `currency`",
}


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _float(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _millis(value: Any) -> int | None:
    return round(value * 1000) if type(value) in (int, float) else None


_CONVERT: dict[pa.DataType, Callable[[Any], Any]] = {
    pa.string(): _str, pa.float64(): _float, pa.uint64(): _int, pa.int64(): _int, pa.int32(): _int,
    TIME: _millis,
}  # fmt: skip


NAMING = frozenset({"DeviceMacId", "MeterMacId"})  # columns that identify a household's hardware


def cart_schema(kind: str, pseudonymous: bool = False) -> pa.Schema:
    """A cart's columns of a kind: the archive's, with `local_time` (ISO 8601 in the household's
    zone, with its offset) after `time`; a pseudonymous cart's name the household by
    `participant_id` and drop the MAC addresses."""
    fields: list[pa.Field[Any]] = []
    for f in SCHEMAS[kind]:
        if pseudonymous and f.name in NAMING:
            continue
        fields.append(pa.field("participant_id", pa.string()) if pseudonymous and f.name == "cloud_id" else f)
        if f.name == "time":
            fields.append(pa.field("local_time", pa.string()))
    return pa.schema(fields)


class Columns:
    """Rows of one kind gathered as Python lists, one per column, until `table()`."""

    def __init__(self, kind: str, schema: pa.Schema | None = None) -> None:
        self.kind = kind
        self.schema = SCHEMAS[kind] if schema is None else schema
        self._fields = [(f.name, _CONVERT[f.type]) for f in self.schema]
        self._time_fields = {"time": "device_time"}  # column → the line's field it comes from
        self.data: list[list[Any]] = [[] for _ in self._fields]

    def __len__(self) -> int:
        return len(self.data[0])

    def add(self, record: dict[str, Any]) -> None:
        """One line (a dict as the hourly files hold it) as a row; wrong types become null."""
        for column, (name, convert) in zip(self.data, self._fields, strict=True):
            column.append(convert(record.get(self._time_fields.get(name, name))))

    def table(self) -> pa.Table:
        """The rows so far as an Arrow table, and a fresh start."""
        arrays = [
            pa.array(column, type=field.type) for column, field in zip(self.data, self.schema, strict=True)
        ]
        self.data = [[] for _ in self._fields]
        return pa.Table.from_arrays(arrays, schema=self.schema)
