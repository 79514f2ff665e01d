"""Parquet files written as the rows come: row groups of ROW_GROUP_ROWS, zstd, statistics on.

pyarrow writes them (the Arrow project's own implementation, which DuckDB, Spark, Trino and
Athena read). Rows become Arrow columns BATCH_ROWS at a time (Python objects are ten times the
size), and a row group goes to disk as soon as it is full, so memory is one row group's columns
per open file, however large the cart or the day.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from app.research.schema import Columns

ROW_GROUP_ROWS = 128 * 1024
BATCH_ROWS = 16 * 1024  # rows gathered as Python objects before they become Arrow columns
COMPRESSION: Final = "zstd"
ZSTD_LEVEL = 6


class KindWriter:
    """One kind's rows into one Parquet file; the file exists only once a row arrived."""

    def __init__(
        self,
        path: Path,
        kind: str,
        sorted_by: tuple[str, ...] = ("time",),
        row_group_rows: int = ROW_GROUP_ROWS,
        schema: pa.Schema | None = None,
    ) -> None:
        self.path, self.kind = path, kind
        self.row_group_rows = row_group_rows
        self.columns = Columns(kind, schema)
        self.rows = 0
        self._sorted_by = sorted_by
        self._writer: pq.ParquetWriter | None = None
        self._batches: list[pa.Table] = []  # Arrow batches of the row group being gathered
        self._batched = 0

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.columns.add(record)
            self.rows += 1
            if len(self.columns) >= min(BATCH_ROWS, self.row_group_rows):
                self._batch()

    def add_table(self, table: pa.Table) -> None:
        """Rows already in this kind's columns (compaction's columnar reader makes them so)."""
        self._batch()
        self._batches.append(table)
        self._batched += table.num_rows
        self.rows += table.num_rows
        if self._batched >= self.row_group_rows:
            self._flush()

    def close(self) -> int:
        """Write what is left and close the file; returns the rows written."""
        self._batch()
        if self._batches:
            self._flush(final=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.rows

    def abort(self) -> None:
        """Close and remove a file that will not be finished."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.path.unlink(missing_ok=True)

    def size(self) -> int:
        """Bytes on disk so far (row groups written)."""
        return self.path.stat().st_size if self.path.exists() else 0

    def _batch(self) -> None:
        if len(self.columns):
            self._batches.append(self.columns.table())
            self._batched += self._batches[-1].num_rows
        if self._batched >= self.row_group_rows:
            self._flush()

    def _flush(self, final: bool = False) -> None:
        """Whole row groups of what is gathered (and the rest too when `final`)."""
        table = pa.concat_tables(self._batches)
        whole = table.num_rows if final else table.num_rows - table.num_rows % self.row_group_rows
        rest = table.slice(whole)
        self._batches, self._batched = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        if self._writer is None:
            self._writer = parquet_writer(self.path, table.schema, self._sorted_by)
        self._writer.write_table(table.slice(0, whole), row_group_size=self.row_group_rows)


def parquet_writer(path: Path, schema: pa.Schema, sorted_by: tuple[str, ...]) -> pq.ParquetWriter:
    """A Parquet file written the project's way: zstd, statistics, the encodings below."""
    path.parent.mkdir(parents=True, exist_ok=True)
    order = [pq.SortingColumn(schema.get_field_index(name)) for name in sorted_by]
    return pq.ParquetWriter(
        path, schema, compression=COMPRESSION, compression_level=ZSTD_LEVEL,
        write_statistics=True, sorting_columns=order, **_encodings(schema),
    )  # fmt: skip


def _encodings(schema: pa.Schema) -> dict[str, Any]:
    """Readings are series: times and counters rise by small steps (delta-encode them); values and
    strings repeat (meters report in steps of a watt: keep dictionaries for those). A fifth of the
    defaults' size on a day of 6-second readings."""
    encodings: dict[str, str] = {}
    dictionary: list[str] = []
    for f in schema:
        if pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type):
            encodings[f.name] = "DELTA_BINARY_PACKED"
        else:
            dictionary.append(f.name)
    return {"use_dictionary": dictionary, "column_encoding": encodings}
