"""Row batches to bytes: TSV and CSV with NCBI's column titles, JSON lines, Parquet.

TSV cells are what NCBI's server-side TSV shows (``bulkgene.ncbi.gene_table.cell_text``),
with list values joined by the chosen separator; CSV quotes instead of replacing tabs and
line breaks; JSON lines and Parquet are typed (GeneIDs and counts as integers, lists as
lists; Parquet through pyarrow, the ``parquet`` extra).
"""

from __future__ import annotations

import csv
import io
from typing import Any, BinaryIO, Protocol

import orjson

from bulkgene.ncbi.gene_table import cell_text
from bulkgene.results.table import Column, RowBatch
from bulkgene.results.typed import arrow_batch, arrow_schema, import_pyarrow, typed_columns

_PARQUET_ROWS_PER_GROUP = 16384  # a row group is buffered whole: this bounds it


class TableWriter(Protocol):
    def write(self, batch: RowBatch) -> None: ...

    def close(self) -> None: ...


class TsvWriter:
    """Tab-separated, one header line of NCBI's titles; cells never hold a tab or newline."""

    def __init__(self, handle: BinaryIO, columns: list[Column], separator: str) -> None:
        self._handle = handle
        self._separator = separator
        handle.write(("\t".join(column.title for column in columns) + "\n").encode())

    def write(self, batch: RowBatch) -> None:
        separator = self._separator
        rendered = [[cell_text(cell, separator) for cell in cells] for cells in batch.cells]
        text = "".join("\t".join(row) + "\n" for row in zip(*rendered, strict=True))
        self._handle.write(text.encode())

    def close(self) -> None:
        pass


class CsvWriter:
    """Comma-separated (RFC 4180 quoting), one header line of NCBI's titles."""

    def __init__(self, handle: BinaryIO, columns: list[Column], separator: str) -> None:
        self._handle = handle
        self._separator = separator
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\n")
        self._csv.writerow([column.title for column in columns])
        self._flush()

    def _flush(self) -> None:
        self._handle.write(self._buffer.getvalue().encode())
        self._buffer.seek(0)
        self._buffer.truncate()

    def write(self, batch: RowBatch) -> None:
        separator = self._separator
        rendered = [[separator.join(map(str, cell)) if isinstance(cell, list)
                     else "" if cell is None else str(cell) for cell in cells]
                    for cells in batch.cells]
        self._csv.writerows(zip(*rendered, strict=True))
        self._flush()

    def close(self) -> None:
        pass


class JsonLinesWriter:
    """One JSON object per row, keyed by mnemonic, typed."""

    def __init__(self, handle: BinaryIO, columns: list[Column]) -> None:
        self._handle = handle
        self._names = [column.name for column in columns]

    def write(self, batch: RowBatch) -> None:
        names = self._names
        lines = [orjson.dumps(dict(zip(names, row, strict=True))) + b"\n"
                 for row in zip(*typed_columns(batch), strict=True)]
        self._handle.write(b"".join(lines))

    def close(self) -> None:
        pass


class ParquetWriter:
    """Parquet through pyarrow: GeneID int64, counts integers, lists as list columns."""

    def __init__(self, handle: BinaryIO, columns: list[Column]) -> None:
        pa = import_pyarrow("Parquet output")
        import pyarrow.parquet as pq

        self._pa = pa
        self._schema = arrow_schema(columns)
        self._writer = pq.ParquetWriter(handle, self._schema, compression="zstd")
        self._pending: list[Any] = []
        self._pending_rows = 0

    def write(self, batch: RowBatch) -> None:
        self._pending.append(arrow_batch(batch, self._schema))
        self._pending_rows += batch.row_count
        if self._pending_rows >= _PARQUET_ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(self._pa.Table.from_batches(self._pending, self._schema))
            self._pending.clear()
            self._pending_rows = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
