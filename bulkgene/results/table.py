"""A run as a flat table: one row per record (or per item of an exploded field), in batches.

Columns are NCBI's gene table fields (``bulkgene.ncbi.fields``), ``query`` (the requested
GeneIDs a record answers: the old ID for a replaced gene) and, with missing rows, the
columns of missing.tsv as ``missing_<name>``. Every cell is a list of raw values as the
JSON has them (GeneIDs as strings; ``query`` as ints); writers render or type them. Rows
come in batches of a fixed size, so memory stays the same whatever the run's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from bulkgene import layout
from bulkgene.errors import ConfigError, StateError
from bulkgene.ncbi.fields import FIELDS, GeneField, Kind
from bulkgene.ncbi.gene_table import GeneDecoder, Node, items, values
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
    """Up to ROWS_PER_BATCH rows, column by column: ``cells[c][r]`` is a list of values."""

    columns: list[Column]
    cells: list[list[list[Any]]]

    @property
    def row_count(self) -> int:
        return len(self.cells[0]) if self.cells else 0


def choose_columns(fields: list[str] | tuple[str, ...] | None) -> list[Column]:
    """The columns for ``fields`` (mnemonics, or ``query``); ConfigError naming the unknown."""
    names = list(fields) if fields else list(DEFAULT_FIELDS)
    unknown = [name for name in names if name != QUERY and name not in FIELDS]
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(map(repr, unknown))}: "
                          "`bulkgene export --list-fields` lists them")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"field(s) {', '.join(duplicates)} given twice")
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
        self._with_missing = with_missing
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
            if explode != QUERY and explode not in FIELDS:
                raise ConfigError(f"--explode {explode!r} is not a field: `bulkgene export "
                                  "--list-fields` lists them")
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
        if self._explode is not None:
            self._fields.append(self._explode)
        self._queries: QueryMap | None = QueryMap(tasks) if self._needs_query else None

    def batches(self, rows_per_batch: int = ROWS_PER_BATCH) -> Iterator[RowBatch]:
        """Every row, ``rows_per_batch`` at a time: records task after task, shard after
        shard, in the order written; then the missing IDs."""
        batch = self._new_batch()
        for row in self._rows():
            for column_cells, cell in zip(batch.cells, row, strict=True):
                column_cells.append(cell)
            if batch.row_count >= rows_per_batch:
                yield batch
                batch = self._new_batch()
        if batch.row_count:
            yield batch

    def _new_batch(self) -> RowBatch:
        return RowBatch(self.columns, [[] for _ in self.columns])

    def record_count(self) -> int:
        """Records in the shards (lines with a gene), read without building rows."""
        decoder_by_shape: dict[bool, GeneDecoder] = {}
        total = 0
        for task in self.tasks:
            decoder = decoder_by_shape.setdefault(
                task.gene_only, GeneDecoder([_GENE_ID], task.gene_only))
            for shard in task.shards():
                for block in read_blocks(shard, task.length(shard.name)):
                    total += sum(1 for gene in decoder.decode_lines(block) if gene is not None)
        return total

    def _rows(self) -> Iterator[list[list[Any]]]:
        row_maker = self._row_maker()
        for task in self.tasks:
            decoder = GeneDecoder(self._fields, task.gene_only)
            for shard in task.shards():
                for block in read_blocks(shard, task.length(shard.name)):
                    for gene in decoder.decode_lines(block):
                        if gene is not None:
                            yield from row_maker(gene)
        if self._missing is not None:
            yield from self._missing_rows()

    def _gene_queries(self, gene: Node) -> list[Any]:
        assert self._queries is not None
        found = values(gene, _GENE_ID.segments)
        try:
            gene_id = int(found[0])
        except (IndexError, ValueError, TypeError):
            raise StateError(f"a record without a readable gene_id ({found!r}) is in the "
                             "shards: run bulkgene verify on the directory") from None
        return list(self._queries.queries(gene_id))

    def _row_maker(self) -> Callable[[Node], Iterator[list[list[Any]]]]:
        extra = len(self.columns) - sum(1 for c in self.columns if c.gene_field or
                                        c.name == QUERY)
        empty_extra: list[list[Any]] = [[] for _ in range(extra)]
        plain = [(c.name == QUERY, c.gene_field.segments if c.gene_field else ())
                 for c in self.columns[:len(self.columns) - extra]]

        def whole_rows(gene: Node) -> Iterator[list[list[Any]]]:
            queries = self._gene_queries(gene) if self._needs_query else []
            row = [queries if is_query else values(gene, segments)
                   for is_query, segments in plain]
            if self._explode_name == QUERY:
                for query in queries or [None]:
                    yield [[query] if is_query else cell for (is_query, _), cell
                           in zip(plain, row, strict=True)] + [[] for _ in empty_extra]
                return
            yield row + [[] for _ in empty_extra]

        if self._explode is None:
            return whole_rows
        explode = self._explode
        prefix_segments = _list_prefix(explode)
        aligned = [(is_query, *(_aligned(c.gene_field, prefix_segments) if c.gene_field
                                else (0, ())))
                   for (is_query, _), c in zip(plain, self.columns, strict=False)]

        def exploded_rows(gene: Node) -> Iterator[list[list[Any]]]:
            queries = self._gene_queries(gene) if self._needs_query else []
            chains: list[tuple[Node, ...] | None] = [*items(gene, prefix_segments)] or [None]
            for chain in chains:
                row: list[list[Any]] = []
                for is_query, depth, below in aligned:
                    if is_query:
                        row.append(queries)
                    elif depth == 0:
                        row.append(values(gene, below))
                    elif chain is None:
                        row.append([])
                    else:
                        row.append(values(chain[depth - 1], below))
                yield row + [[] for _ in empty_extra]

        return exploded_rows

    def _missing_rows(self) -> Iterator[list[list[Any]]]:
        assert self._missing is not None
        extra_names = [c.name[len(MISSING_PREFIX):] for c in self.columns
                       if c.gene_field is None and c.name != QUERY]
        for report_row in self._missing.rows():
            try:
                gene_id = int(report_row.get("gene_id", ""))
            except ValueError:
                continue
            row: list[list[Any]] = []
            for column in self.columns:
                if column.name == QUERY:
                    row.append([gene_id])
                elif column.gene_field is None:
                    continue
                else:
                    row.append([])
            row.extend([[report_row[name]] if report_row.get(name) else []
                        for name in extra_names])
            yield row
