"""``bulkgene.open(DIR)``: a finished (or running) run as one object, every task together.

>>> run = bulkgene.open("genes")                     # doctest: +SKIP
>>> run.summary["found"], len(run.missing())          # doctest: +SKIP
>>> df = run.to_frame(fields=["query", "gene-id", "symbol", "tax-name"])  # doctest: +SKIP

Records stream from the shards (only what each checkpoint committed); tables are built a
batch of rows at a time through Arrow, so a frame of ten fields costs the frame, not the
JSON it came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Any

import orjson

from bulkgene import layout
from bulkgene.errors import MissingExtra
from bulkgene.results import merge
from bulkgene.results.reports import read_report
from bulkgene.results.rundir import TaskFiles, read_blocks, tasks_of
from bulkgene.results.table import TableReader, choose_columns
from bulkgene.results.typed import arrow_batch, arrow_schema, import_pyarrow

_INTEGER_COLUMNS = frozenset({"gene_id", "requested_gene_id", "returned_gene_id",
                              "current_gene_id", "tax_id"})


def _typed_row(row: dict[str, str]) -> dict[str, Any]:
    return {name: int(value) if name in _INTEGER_COLUMNS and value.isdigit()
            else (value or None) for name, value in row.items()}


class RunResults:
    """A run directory read back: records, side reports and accounting of every task."""

    def __init__(self, out_dir: str | PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self._tasks: list[TaskFiles] = tasks_of(self.out_dir)

    def __repr__(self) -> str:
        return (f"<bulkgene run {str(self.out_dir)!r}: {len(self._tasks)} task(s), "
                f"{self.summary.get('found', 0)} found, {self.summary.get('missing', 0)} "
                "missing>")

    @property
    def summary(self) -> dict[str, Any]:
        """The accounting of the whole run (every task of an array added up)."""
        return merge.merged_summary(self.out_dir)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record as the API sent it (a report match, or the gene with --record
        gene), task after task, shard after shard."""
        for task in self._tasks:
            if task.tsv:
                raise ValueError(f"{task.directory} was fetched with --format tsv: its shards "
                                 "are a table, not records (read them with pandas.read_csv)")
            for shard in task.shards():
                for block in read_blocks(shard, task.length(shard.name)):
                    for line in block.splitlines():
                        yield orjson.loads(line)

    def missing(self) -> list[dict[str, Any]]:
        """missing.tsv of every task: gene_id, reason, and any explanation columns."""
        return [_typed_row(row) for row in read_report(self._tasks, layout.MISSING_NAME).rows()]

    def replaced(self) -> list[dict[str, Any]]:
        """replaced.tsv of every task: requested_gene_id -> returned_gene_id."""
        return [_typed_row(row) for row in read_report(self._tasks, layout.REPLACED_NAME).rows()]

    def table(self, fields: list[str] | tuple[str, ...] | None = None, *,
              explode: str | None = None, with_missing: bool = False) -> TableReader:
        """The rows of a flat table, in batches (see ``bulkgene export --list-fields``)."""
        return TableReader(self._tasks, choose_columns(fields), explode=explode,
                           with_missing=with_missing)

    def to_arrow(self, fields: list[str] | tuple[str, ...] | None = None, *,
                 explode: str | None = None, with_missing: bool = False) -> Any:
        """A pyarrow Table of ``fields`` (NCBI mnemonics and ``query``): GeneIDs int64,
        counts integers, lists as list columns. Needs the ``parquet`` extra."""
        pa = import_pyarrow("bulkgene.open(...).to_arrow()")
        reader = self.table(fields, explode=explode, with_missing=with_missing)
        schema = arrow_schema(reader.columns)
        batches = [arrow_batch(batch, schema) for batch in reader.batches()]
        return pa.Table.from_batches(batches, schema=schema)

    def to_frame(self, fields: list[str] | tuple[str, ...] | None = None, *,
                 explode: str | None = None, with_missing: bool = False) -> Any:
        """A pandas DataFrame of ``fields``, one row per record (or exploded item).

        Columns keep Arrow's types (``int64[pyarrow]``, lists as lists), so an absent value
        is missing, not a float. Needs the ``pandas`` extra.
        """
        try:
            import pandas as pd
        except ImportError:
            raise MissingExtra("pandas", "pandas", "bulkgene.open(...).to_frame()") from None
        table = self.to_arrow(fields, explode=explode, with_missing=with_missing)
        return table.to_pandas(types_mapper=pd.ArrowDtype)


def open_run(out_dir: str | PathLike[str]) -> RunResults:
    """The run in ``out_dir`` (one run or an array's tasks) as one object."""
    if not isinstance(out_dir, (str, PathLike)):
        raise TypeError(f"bulkgene.open() takes a directory path, not {type(out_dir).__name__}")
    return RunResults(out_dir)
