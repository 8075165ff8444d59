"""Cells with their types: GeneIDs, counts and positions as integers, lists as lists.

The JSON carries 64-bit numbers as strings (NCBI's uint64); a table should not. The same
conversion feeds JSON lines, Arrow, Parquet and pandas. Arrow is an optional extra.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from bulkgene.errors import MissingExtra, StateError
from bulkgene.results.table import Column, RowBatch


def _integer(column: Column, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise StateError(f"the {column.name} field holds {value!r}, not an integer: the shards "
                     "hold something NCBI's schema doesn't allow (run bulkgene verify)")


def typed_cell(column: Column, cell: Any) -> Any:
    """One cell typed: integers for an int column, a list for a list column."""
    if column.kind != "int" or cell is None:
        return cell
    if column.is_list:
        return [_integer(column, value) for value in cell]
    return _integer(column, cell)


def typed_column(column: Column, cells: list[Any]) -> list[Any]:
    """A column's cells typed (strings pass as they are)."""
    if column.kind != "int":
        return cells
    return [typed_cell(column, cell) for cell in cells]


def typed_columns(batch: RowBatch) -> list[list[Any]]:
    """Every column of ``batch`` as typed values."""
    return [typed_column(column, cells)
            for column, cells in zip(batch.columns, batch.cells, strict=True)]


def import_pyarrow(wanted_for: str) -> ModuleType:
    """pyarrow, or MissingExtra naming the extra that installs it."""
    try:
        import pyarrow
    except ImportError:
        raise MissingExtra("pyarrow", "parquet", wanted_for) from None
    module: ModuleType = pyarrow
    return module


def arrow_schema(columns: list[Column]) -> Any:
    pa = import_pyarrow("an Arrow table")
    fields = []
    for column in columns:
        kind = pa.int64() if column.kind == "int" else pa.string()
        fields.append(pa.field(column.name, pa.list_(kind) if column.is_list else kind))
    return pa.schema(fields)


def arrow_batch(batch: RowBatch, schema: Any) -> Any:
    """``batch`` as a pyarrow RecordBatch of ``schema``."""
    pa = import_pyarrow("an Arrow table")
    arrays = [pa.array(values, type=field.type)
              for values, field in zip(typed_columns(batch), schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
