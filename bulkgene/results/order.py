"""A run's rows in the order of the list asked for, one per GeneID asked for: mygene's shape.

The shards hold genes in the order batches were committed, which is not the list's order,
and a gene merged from two requested IDs is one record. ``bulkgene.fetch`` returns what
``querymany`` users expect instead: rows in the order of the IDs given, one per ID (the
merged gene once for each of its IDs), indexed by that ID. The list's order is its plan
(``plan.ids``: the unique GeneIDs in the order first given); IDs a run grew by later
(``--add``) come after them.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bulkgene import durable, layout
from bulkgene.errors import StateError


def list_order(out_dir: Path) -> array[int]:
    """The run's unique requested GeneIDs in the order of its list (empty if unreadable)."""
    ids = array("I")
    for place in (out_dir, out_dir.parent):
        try:
            ids.frombytes(durable.read_bytes(place / layout.PLAN_IDS))
        except (OSError, StateError, ValueError):
            continue
        if sys.byteorder != "little":
            ids.byteswap()
        break
    return ids


def sort_records(records: Iterable[dict[str, Any]], order: array[int],
                 queries: Callable[[int], list[int]]) -> list[dict[str, Any]]:
    """``records`` sorted by where the first GeneID each answers stands in ``order``."""
    position = {gene_id: index for index, gene_id in enumerate(order)}
    last = len(order)

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        number, record = item
        gene = record.get("gene", record)
        try:
            asked = queries(int(gene["gene_id"]))
        except (KeyError, TypeError, ValueError):
            return last, number
        return min((position.get(q, last) for q in asked), default=last), number

    return [record for _, record in sorted(enumerate(records), key=key)]


NOT_FETCHED = "NOT_FETCHED"  # a partial run's GeneID that is neither found nor missing yet


def by_query(table: Any, order: array[int]) -> Any:
    """A pyarrow Table with a ``query`` column, one row per GeneID asked for (a list of
    them split into rows), sorted by where that GeneID stands in ``order``. With a
    ``missing_reason`` column, a GeneID of the list that has no row (a partial run's failed
    or pending ones) gets one saying NOT_FETCHED: every GeneID asked for has a row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    index = table.schema.get_field_index("query")
    column = table.column(index)
    if pa.types.is_list(column.type):
        flat = column.combine_chunks()
        table = table.take(pc.list_parent_indices(flat)).set_column(
            index, pa.field("query", pa.int64()), pc.list_flatten(flat))
    listed = pa.array(order, type=pa.int64())
    if "missing_reason" in table.column_names:
        unfetched = pc.filter(listed, pc.invert(pc.is_in(listed, value_set=table.column(index))))
        if len(unfetched):
            rows = {name: (unfetched if name == "query" else
                           pa.array([NOT_FETCHED] * len(unfetched)) if name == "missing_reason"
                           else pa.nulls(len(unfetched), table.schema.field(name).type))
                    for name in table.column_names}
            table = pa.concat_tables([table, pa.table(rows, schema=table.schema)])
    positions = pc.fill_null(pc.index_in(table.column(index), value_set=listed), len(order))
    rows = pa.array(range(table.num_rows), type=pa.int64())
    keyed = table.append_column("__position", positions).append_column("__row", rows)
    ordered = keyed.sort_by([("__position", "ascending"), ("__row", "ascending")])
    return ordered.drop_columns(["__position", "__row"])
