"""A run as a flat table: one row per record (or per item of an exploded field), in batches.

Columns are NCBI's gene table fields (``bulkgene.ncbi.fields``), ``query`` (the requested
GeneIDs a record answers: the old ID for a replaced gene) and, with missing rows, the
columns of missing.tsv as ``missing_<name>``. Cells hold the raw values as the JSON has
them (GeneIDs as strings; ``query`` as ints): a list for a list column, else one value or
None; writers render or type them. Rows
come in batches of a fixed size, so memory stays the same whatever the run's size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from bulkgene import layout
from bulkgene.errors import ConfigError, StateError
from bulkgene.ncbi.fields import FIELDS, HELD_BY_CONTENT, GeneField, Kind, held, resolve, suggest
from bulkgene.ncbi.gene_table import GeneDecoder, Node, getter, items, values
from bulkgene.results.once import SeenGeneIds, written_twice
from bulkgene.results.reports import QueryMap, read_report
from bulkgene.results.rundir import TaskFiles, read_blocks

QUERY = "query"
MISSING_PREFIX = "missing_"
DEFAULT_FIELDS = (QUERY, "gene-id", "symbol", "description", "tax-id", "tax-name", "gene-type",
                  "chromosomes")
ROWS_PER_BATCH = 2048
_GENE_ID = FIELDS["gene-id"]


@dataclass(frozen=True)
class Column:
    """One column of the table: its name (a mnemonic), header title, type, and source."""

    name: str
    title: str
    kind: Kind
    is_list: bool
    gene_field: GeneField | None = None  # None: query or a missing.tsv column


@dataclass
class RowBatch:
    """Up to ROWS_PER_BATCH rows, column by column: ``cells[c][r]`` is the cell of row r,
    a list of values for a list column, else one value or None."""

    columns: list[Column]
    cells: list[list[list[Any]]]

    @property
    def row_count(self) -> int:
        return len(self.cells[0]) if self.cells else 0


ALL = "all"


def default_fields(returned_content: str = "COMPLETE") -> tuple[str, ...]:
    """The default columns, less those a reduced report (IDS_ONLY, COUNTS_ONLY) can't fill."""
    if returned_content not in HELD_BY_CONTENT:
        return DEFAULT_FIELDS
    return (QUERY, *held(returned_content))


def content_of(tasks: list[TaskFiles]) -> str:
    """The returned content the run's reports were asked for with (every task's is one)."""
    return next((task.returned_content for task in tasks), "COMPLETE")


def field_names(fields: list[str] | tuple[str, ...] | str | None,
                returned_content: str = "COMPLETE") -> list[str]:
    """The mnemonics ``fields`` names: a list of names, or one str (one name, or several
    split by commas or line breaks); ``all`` for every field; aliases (NCBI's column
    titles, the JSON keys) become their mnemonic. ConfigError naming what is wrong, with the
    closest names for an unknown one."""
    if fields is None:
        return list(default_fields(returned_content))
    if isinstance(fields, str):
        names = [name.strip() for name in re.split(r"[,\n]", fields) if name.strip()]
    elif isinstance(fields, (list, tuple)) and all(isinstance(name, str) for name in fields):
        names = [name.strip() for name in fields]
    else:
        raise ConfigError(f"fields must be field names (a list of str, or one str), not "
                          f"{fields!r}: `bulkgene export --list-fields` lists them")
    if not names:
        raise ConfigError("no field given (fields is empty): name at least one, leave it out "
                          f"for the default ({', '.join(DEFAULT_FIELDS)}), or say 'all'")
    if ALL in names:
        if names != [ALL]:
            raise ConfigError("'all' stands for every field: give it alone")
        return [QUERY, *FIELDS]
    resolved: list[str] = []
    for name in names:
        mnemonic = QUERY if name.lower() == QUERY else resolve(name)
        if mnemonic is None:
            close = suggest(name, (QUERY,))
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown field {name!r}{hint}: `bulkgene export --list-fields` "
                              "lists them (NCBI's dataformat mnemonics)")
        resolved.append(mnemonic)
    duplicates = sorted({name for name in resolved if resolved.count(name) > 1})
    if duplicates:
        raise ConfigError(f"field(s) {', '.join(duplicates)} given twice")
    return resolved


def choose_columns(fields: list[str] | tuple[str, ...] | str | None,
                   returned_content: str = "COMPLETE") -> list[Column]:
    """The columns for ``fields`` (see ``field_names``); ConfigError for a field that reports
    of ``returned_content`` can't fill (the column would be empty, and look like data)."""
    names = field_names(fields, returned_content)
    unheld = [name for name in names if name != QUERY and name not in held(returned_content)]
    if unheld:
        raise ConfigError(
            f"the run was fetched with --returned-content {returned_content}, whose reports "
            f"hold only {', '.join(held(returned_content))}: {', '.join(unheld)} would be "
            f"empty. Ask for {', '.join((QUERY, *held(returned_content)))} only, or fetch the "
            "reports again with --returned-content COMPLETE into another --out")
    columns = []
    for name in names:
        if name == QUERY:
            columns.append(Column(QUERY, "Query", "int", True))
        else:
            item = FIELDS[name]
            columns.append(Column(name, item.title, item.kind, item.is_list, item))
    return columns


def _list_prefix(explode: GeneField) -> tuple[tuple[str, bool], ...]:
    """``explode``'s path up to and including its innermost list: the items rows are made of."""
    segments = explode.segments
    last = max(position for position, (_, many) in enumerate(segments) if many)
    return segments[:last + 1]


def _aligned(column: GeneField, prefix: tuple[tuple[str, bool], ...]
             ) -> tuple[int, tuple[tuple[str, bool], ...]]:
    """How many of the exploded lists ``column`` lies in (k), and its path below the k-th:
    a column under the same lists takes its values from the same item as the row."""
    own = column.segments
    depth = cut = 0
    for position, (segment, other) in enumerate(zip(own, prefix, strict=False)):
        if segment != other:
            break
        if segment[1]:
            depth += 1
            cut = position + 1
    return depth, own[cut:] if depth else own


class TableReader:
    """Reads a run's records (and its missing IDs) as row batches of the chosen columns."""

    def __init__(self, tasks: list[TaskFiles], columns: list[Column], *,
                 explode: str | None = None, with_missing: bool = False) -> None:
        json_tasks = [task for task in tasks if not task.tsv]
        if len(json_tasks) != len(tasks):
            raise ConfigError(
                "this run was fetched with --format tsv: its shards are NCBI's table already "
                "(their columns are the --table-field ones). A table of other fields needs the "
                "reports as JSON: fetch them again without --format tsv into another --out")
        self.tasks = tasks
        self._missing = read_report(tasks, layout.MISSING_NAME) if with_missing else None
        extra = [Column(MISSING_PREFIX + name, MISSING_PREFIX + name, "str", False)
                 for name in (self._missing.columns if self._missing else [])
                 if name != "gene_id"]
        if with_missing and not any(c.name == MISSING_PREFIX + "reason" for c in extra):
            extra.insert(0, Column(MISSING_PREFIX + "reason", MISSING_PREFIX + "reason", "str",
                                   False))
        self._explode_name = explode
        self._explode: GeneField | None = None
        if explode is not None:
            explode = QUERY if explode.lower() == QUERY else (resolve(explode) or explode)
            self._explode_name = explode
            if explode != QUERY and explode not in FIELDS:
                close = suggest(explode, (QUERY,))
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                raise ConfigError(f"--explode {explode!r} is not a field{hint}: `bulkgene "
                                  "export --list-fields` lists them")
            if not any(c.name == explode for c in columns):
                raise ConfigError(f"--explode {explode} names a field that is not among the "
                                  "columns: add it to --fields")
            if explode != QUERY:
                self._explode = FIELDS[explode]
                if not self._explode.is_list:
                    raise ConfigError(f"--explode {explode}: that field holds one value per "
                                      "gene; only list fields can be exploded")
        if explode == QUERY:
            columns = [replace(c, is_list=False) if c.name == QUERY else c for c in columns]
        elif self._explode is not None:
            # a column under the exploded lists has one value per row unless a list remains
            prefix = _list_prefix(self._explode)
            columns = [replace(c, is_list=any(many for _, many in
                                              _aligned(c.gene_field, prefix)[1]))
                       if c.gene_field is not None and _aligned(c.gene_field, prefix)[0] else c
                       for c in columns]
        self.columns = columns + extra
        self._needs_query = any(c.name == QUERY for c in columns)
        gene_fields = [c.gene_field for c in columns if c.gene_field is not None]
        self._fields = [*gene_fields, _GENE_ID]
        self._gene_id = getter(_GENE_ID)
        if self._explode is not None:
            self._fields.append(self._explode)
        self._queries: QueryMap | None = QueryMap(tasks) if self._needs_query else None

    def batches(self, rows_per_batch: int = ROWS_PER_BATCH) -> Iterator[RowBatch]:
        """Every row, about ``rows_per_batch`` at a time: records task after task, shard
        after shard, in the order written; then the missing IDs."""
        if self._explode_name is None:
            yield from self._column_batches(rows_per_batch)
        else:
            yield from self._row_batches(self._exploded_rows(), rows_per_batch)
        if self._missing is not None:
            yield from self._row_batches(self._missing_rows(), rows_per_batch)

    def _genes(self, rows_per_batch: int) -> Iterator[list[Node]]:
        """The records' genes (decoded as far as the columns need), a block at a time."""
        seen = SeenGeneIds()  # a gene is written once, whatever it answers: else tampered
        for task in self.tasks:
            decoder = GeneDecoder(self._fields, task.gene_only)
            pending: list[Node] = []
            for shard in task.shards():
                for block in read_blocks(shard, task.length(shard.name)):
                    try:
                        decoded = decoder.decode_lines(block)
                    except (msgspec.DecodeError, ValueError, AttributeError) as exc:
                        raise StateError(
                            f"{shard} holds a line that is not a gene report ({exc}): the "
                            "shard was changed outside bulkgene; run bulkgene verify on the "
                            "directory") from None
                    genes = [gene for gene in decoded if gene is not None]
                    try:  # map, not a call per gene: this runs for every record read
                        gene_ids = list(map(int, map(self._gene_id, genes)))
                    except (ValueError, TypeError):
                        gene_ids = [self._gene_id_of(gene) for gene in genes]  # names it
                    again = seen.add_all(gene_ids)
                    if again is not None:
                        raise written_twice(again, shard, task.verify_dir)
                    pending.extend(genes)
                    while len(pending) >= rows_per_batch:
                        yield pending[:rows_per_batch]
                        del pending[:rows_per_batch]
            if pending:
                yield pending

    def _column_batches(self, rows_per_batch: int) -> Iterator[RowBatch]:
        """One row per record, built a column at a time (the fast path)."""
        getters = [getter(c.gene_field) if c.gene_field is not None else None
                   for c in self.columns]
        for genes in self._genes(rows_per_batch):
            cells: list[list[Any]] = []
            for column, get in zip(self.columns, getters, strict=True):
                if get is not None:
                    cells.append([get(gene) for gene in genes])
                elif column.name == QUERY:
                    cells.append([self._gene_queries(gene) for gene in genes])
                else:  # a missing.tsv column: empty for records
                    cells.append([None] * len(genes))
            yield RowBatch(self.columns, cells)

    def _row_batches(self, rows: Iterator[list[Any]], rows_per_batch: int
                     ) -> Iterator[RowBatch]:
        batch = RowBatch(self.columns, [[] for _ in self.columns])
        for row in rows:
            for column_cells, value in zip(batch.cells, row, strict=True):
                column_cells.append(value)
            if batch.row_count >= rows_per_batch:
                yield batch
                batch = RowBatch(self.columns, [[] for _ in self.columns])
        if batch.row_count:
            yield batch

    def _gene_id_of(self, gene: Node) -> int:
        found = self._gene_id(gene)
        try:
            return int(found)
        except (ValueError, TypeError):
            raise StateError(f"a record without a readable gene_id ({found!r}) is in the "
                             "shards: run bulkgene verify on the directory") from None

    def _gene_queries(self, gene: Node) -> list[int]:
        assert self._queries is not None
        return self._queries.queries(self._gene_id_of(gene))

    def _empty(self, column: Column) -> Any:
        return [] if column.is_list else None

    def _exploded_rows(self) -> Iterator[list[Any]]:
        """One row per item of the exploded field (per asked-for GeneID with ``query``)."""
        if self._explode_name == QUERY:
            getters = [getter(c.gene_field) if c.gene_field is not None else None
                       for c in self.columns]
            for genes in self._genes(ROWS_PER_BATCH):
                for gene in genes:
                    base = [get(gene) if get is not None else self._empty(column)
                            for column, get in zip(self.columns, getters, strict=True)]
                    asked: list[int | None] = [*self._gene_queries(gene)] or [None]
                    for query in asked:
                        yield [query if column.name == QUERY else value
                               for column, value in zip(self.columns, base, strict=True)]
            return
        assert self._explode is not None
        prefix = _list_prefix(self._explode)
        plans = [(column, *(_aligned(column.gene_field, prefix) if column.gene_field
                            else (0, ()))) for column in self.columns]
        for genes in self._genes(ROWS_PER_BATCH):
            for gene in genes:
                queries = self._gene_queries(gene) if self._needs_query else []
                chains: list[tuple[Node, ...] | None] = [*items(gene, prefix)] or [None]
                for chain in chains:
                    row: list[Any] = []
                    for column, depth, below in plans:
                        if column.name == QUERY:
                            row.append(queries)
                        elif column.gene_field is None:
                            row.append(None)
                        else:
                            if depth == 0:
                                found = values(gene, below)
                            elif chain is None:
                                found = []
                            else:
                                found = values(chain[depth - 1], below)
                            row.append(found if column.is_list
                                       else (found[0] if found else None))
                    yield row

    def _missing_rows(self) -> Iterator[list[Any]]:
        assert self._missing is not None
        for report_row in self._missing.rows():
            try:
                gene_id = int(report_row.get("gene_id", ""))
            except ValueError:
                continue
            row: list[Any] = []
            for column in self.columns:
                if column.name == QUERY:
                    row.append(gene_id if not column.is_list else [gene_id])
                elif column.gene_field is not None:
                    # no record: nothing is known (null), unlike a record with no synonyms ([])
                    row.append(None)
                else:
                    row.append(report_row.get(column.name[len(MISSING_PREFIX):]) or None)
            yield row
