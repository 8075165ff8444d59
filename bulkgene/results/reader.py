"""``bulkgene.open(DIR)``: a finished run as one object, every task together.

>>> run = bulkgene.open("genes")                     # doctest: +SKIP
>>> run.summary["found"], len(run.missing())          # doctest: +SKIP
>>> df = run.to_frame(fields=["query", "gene-id", "symbol", "tax-name"])  # doctest: +SKIP

Records stream from the shards (only what each checkpoint committed); tables are built a
batch of rows at a time through Arrow, so a frame of ten fields costs the frame, not the
JSON it came from. A run that does not hold the whole list (failed batches, interrupted,
still running, one task of an array) is read only with ``partial=True``, as ``bulkgene
export`` exports one only with ``--partial``: part of a list must not pass for the whole.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from bulkgene import layout
from bulkgene.errors import (
    BulkgeneError,
    IncompleteRun,
    MissingExtra,
    StateError,
    in_library_words,
)
from bulkgene.results import order
from bulkgene.results.account import completeness, run_summary
from bulkgene.results.once import SeenGeneIds, written_twice
from bulkgene.results.reports import QueryMap, read_report
from bulkgene.results.rundir import TaskFiles, read_blocks, tasks_of
from bulkgene.results.table import QUERY, TableReader, choose_columns, content_of, field_names
from bulkgene.results.typed import arrow_batch, arrow_schema, import_pyarrow

_INTEGER_COLUMNS = frozenset({"gene_id", "requested_gene_id", "returned_gene_id",
                              "current_gene_id", "tax_id"})
Fields = list[str] | tuple[str, ...] | str | None


def _typed_row(row: dict[str, str]) -> dict[str, Any]:
    return {name: int(value) if name in _INTEGER_COLUMNS and value.isdigit()
            else (value or None) for name, value in row.items()}


def _gene_id(record: Any, gene_only: bool, shard: Path) -> int:
    """The GeneID of a shard's record (a report match's gene, or the gene itself)."""
    gene = record if gene_only or not isinstance(record, dict) else record.get("gene")
    found = gene.get("gene_id") if isinstance(gene, dict) else None
    if isinstance(found, str) and found.isdigit():
        return int(found)
    raise StateError(f"{shard} holds a record without a readable gene_id ({found!r}): the "
                     "shard was changed outside bulkgene; run bulkgene verify on the directory")


def _iterated_in_library_words(items: Iterator[Any]) -> Iterator[Any]:
    """``items``, the errors met while iterating (a shard read lazily) in library words."""
    try:
        yield from items
    except BulkgeneError as exc:
        raise in_library_words(exc) from None


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _library_words(method: _Method) -> _Method:
    """Errors of a reading method in the library's words (``explode=``, not ``--explode``)."""
    @functools.wraps(method)
    def read(*args: Any, **kwargs: Any) -> Any:
        try:
            result = method(*args, **kwargs)
        except BulkgeneError as exc:
            raise in_library_words(exc) from None
        return _iterated_in_library_words(result) if isinstance(result, Iterator) else result

    return cast(_Method, read)


class RunResults:
    """A run directory read back: records, side reports and accounting of every task.

    ``partial``: read a run that does not hold the whole list (else IncompleteRun says why).
    """

    def __init__(self, out_dir: str | PathLike[str], *, partial: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.partial = partial
        self._tasks: list[TaskFiles] = tasks_of(self.out_dir)

    def _whole(self) -> None:
        """IncompleteRun unless the run holds the whole list (or ``partial`` was asked for)."""
        if self.partial:
            return
        reasons = completeness(self.out_dir)
        if reasons:
            raise IncompleteRun(
                f"{self.out_dir} does not hold the whole list, so reading it as if it did "
                f"would hide what is not there: {'; '.join(reasons[:3])}. Finish the fetch "
                "(call bulkgene.fetch again with the same arguments, or re-run its command), "
                "or pass partial=True (bulkgene.open(DIR, partial=True)) to read what is "
                "committed so far", reasons)

    def __repr__(self) -> str:
        summary = self.summary
        state = "complete" if summary["complete"] else "incomplete"
        return (f"<bulkgene run {str(self.out_dir)!r}: {summary['tasks']} task(s), "
                f"requested {summary['requested']}, {summary['found']} found, "
                f"{summary['missing']} missing, {state}>")

    @property
    def summary(self) -> dict[str, Any]:
        """The accounting of the whole run as committed now, from the checkpoints (every
        task of an array added up; tasks not run yet count their share as pending).

        ``requested = found + missing + failed + pending``; ``complete`` and, when it is
        False, ``incomplete`` (why, and what to do); network counts are every run's
        together (``requests_all_runs``, ...); ``latest_run_elapsed_s`` is the latest run's.
        """
        return run_summary(self.out_dir)

    @_library_words
    def records(self, *, list_order: bool = False) -> Iterator[dict[str, Any]]:
        """Every record as the API sent it (a report match, or the gene with --record
        gene), task after task, shard after shard; a match's ``query`` is the GeneIDs of
        the list its gene answers, as export's ``query`` column (itself if asked for, and
        every ID replaced by it); with ``list_order``, in the order of the list asked for
        (by the first GeneID each answers; read into memory to sort)."""
        self._whole()
        for task in self._tasks:
            if task.tsv:
                raise ValueError(f"{task.directory} was fetched with --format tsv: its shards "
                                 "are a table, not records (read them with pandas.read_csv)")
        queries = QueryMap(self._tasks).queries
        if not list_order:
            return self._records(queries)
        return iter(order.sort_records(self._records(queries), order.list_order(self.out_dir),
                                       queries))

    def _records(self, queries: Callable[[int], list[int]]) -> Iterator[dict[str, Any]]:
        """The records, each GeneID once (else the shards were tampered with), a report
        match's ``query`` the GeneIDs of the list it answers, as export's ``query`` column
        gives them: the server's names only the ID each request asked it for."""
        seen = SeenGeneIds()
        for task in self._tasks:
            for shard in task.shards():
                for block in read_blocks(shard, task.length(shard.name)):
                    try:
                        records = [orjson.loads(line) for line in block.splitlines()]
                    except orjson.JSONDecodeError as exc:
                        raise StateError(
                            f"{shard} holds a line that is not JSON ({exc}): the shard was "
                            "changed outside bulkgene; run bulkgene verify on the directory"
                        ) from None
                    gene_ids = [_gene_id(record, task.gene_only, shard) for record in records]
                    again = seen.add_all(gene_ids)
                    if again is not None:
                        raise written_twice(again, shard, task.verify_dir)
                    for record, gene_id in zip(records, gene_ids, strict=True):
                        if not task.gene_only and "query" in record:
                            record["query"] = [str(query) for query in queries(gene_id)]
                        yield record

    @_library_words
    def missing(self) -> list[dict[str, Any]]:
        """missing.tsv of every task, a dict per missing GeneID: ``gene_id``, ``reason``,
        and any explanation columns (``history``, ``current_gene_id``, ...)."""
        self._whole()
        return [_typed_row(row) for row in read_report(self._tasks, layout.MISSING_NAME).rows()]

    @_library_words
    def replaced(self) -> list[dict[str, Any]]:
        """replaced.tsv of every task, a dict per replaced GeneID asked for:
        ``{'requested_gene_id': 3558, 'returned_gene_id': 1000001779, ...}`` (a list, not a
        mapping: two requested IDs may have been merged into one gene)."""
        self._whole()
        return [_typed_row(row) for row in read_report(self._tasks, layout.REPLACED_NAME).rows()]

    @_library_words
    def table(self, fields: Fields = None, *, explode: str | None = None,
              with_missing: bool = False) -> TableReader:
        """The rows of a flat table, in batches (see ``bulkgene export --list-fields``)."""
        self._whole()
        return TableReader(self._tasks, choose_columns(fields, content_of(self._tasks)),
                           explode=explode, with_missing=with_missing)

    @_library_words
    def to_arrow(self, fields: Fields = None, *, explode: str | None = None,
                 with_missing: bool = False, by_query: bool = False) -> Any:
        """A pyarrow Table of ``fields`` (NCBI mnemonics and ``query``): GeneIDs int64,
        counts integers, lists as list columns. Needs the ``parquet`` extra.

        ``by_query``: one row per GeneID asked for, in the order of the list, its ``query``
        column first and a single int (mygene's ``querymany`` shape)."""
        pa = import_pyarrow("bulkgene.open(...).to_arrow()")
        names = field_names(fields, content_of(self._tasks))
        if by_query:
            names = [QUERY, *(name for name in names if name != QUERY)]
        reader = self.table(names, explode=explode, with_missing=with_missing)
        schema = arrow_schema(reader.columns)
        batches = [arrow_batch(batch, schema) for batch in reader.batches()]
        table = pa.Table.from_batches(batches, schema=schema)
        return order.by_query(table, order.list_order(self.out_dir)) if by_query else table

    @_library_words
    def to_frame(self, fields: Fields = None, *, explode: str | None = None,
                 with_missing: bool = False, by_query: bool = False) -> Any:
        """A pandas DataFrame of ``fields``, one row per record (or exploded item); with
        ``by_query``, one row per GeneID asked for, in the order of the list, indexed by it
        (``query``, as mygene's ``querymany(..., as_dataframe=True)``).

        Columns keep Arrow's types (``int64[pyarrow]``, lists as lists), so an absent value
        is missing, not a float. Needs the ``pandas`` extra.
        """
        try:
            import pandas as pd
        except ImportError:
            raise MissingExtra("pandas", "pandas", "bulkgene.open(...).to_frame()") from None
        table = self.to_arrow(fields, explode=explode, with_missing=with_missing,
                              by_query=by_query)
        frame = table.to_pandas(types_mapper=pd.ArrowDtype)
        return frame.set_index(QUERY) if by_query else frame


def open_run(out_dir: str | PathLike[str], *, partial: bool = False) -> RunResults:
    """The run in ``out_dir`` (one run or an array's tasks) as one object; with
    ``partial=True`` one that does not hold the whole list can be read too."""
    if not isinstance(out_dir, (str, PathLike)):
        raise TypeError(f"bulkgene.open() takes a directory path, not {type(out_dir).__name__}")
    if not isinstance(partial, bool):
        raise TypeError(f"partial must be True or False, not {type(partial).__name__} {partial!r}")
    try:
        return RunResults(out_dir, partial=partial)
    except BulkgeneError as exc:
        raise in_library_words(exc) from None
