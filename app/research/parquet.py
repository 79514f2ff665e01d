"""Parquet files written as the rows come: row groups of ROW_GROUP_ROWS, zstd, statistics on.

pyarrow writes them (the Arrow project's own implementation, which DuckDB, Spark, Trino and
Athena read): a row group goes to disk as soon as it is full, so memory is one row group per
open file, however large the cart or the day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from app.research.schema import Columns

ROW_GROUP_ROWS = 128 * 1024
COMPRESSION: Final = "zstd"


class KindWriter:
    """One kind's rows into one Parquet file; the file exists only once a row arrived."""

    def __init__(
        self,
        path: Path,
        kind: str,
        sorted_by: tuple[str, ...] = ("time",),
        on_table: Callable[[pa.Table], None] | None = None,
    ) -> None:
        self.path, self.kind = path, kind
        self.columns = Columns(kind)
        self.rows = 0
        self._sorted_by = sorted_by
        self._on_table = on_table  # sees each row group as it is written (compaction digests them)
        self._writer: pq.ParquetWriter | None = None

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.columns.add(record)
            self.rows += 1
            if len(self.columns) >= ROW_GROUP_ROWS:
                self._flush()

    def close(self) -> int:
        """Write what is left and close the file; returns the rows written."""
        if len(self.columns):
            self._flush()
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

    def _flush(self) -> None:
        table = self.columns.table()
        if self._on_table is not None:
            self._on_table(table)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            order = [pq.SortingColumn(table.schema.get_field_index(name)) for name in self._sorted_by]
            self._writer = pq.ParquetWriter(
                self.path, table.schema, compression=COMPRESSION, write_statistics=True, sorting_columns=order
            )
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
