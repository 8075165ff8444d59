"""TSV answers (``text/tab-separated-values``): the header, rows as records, the GeneID column.

The server may repeat its header before every internal page (INCLUDE_TABULAR_HEADER_ALWAYS);
bulkgene keeps the first line as the header and drops its repeats, so a shard gets the
header once at the top and never mid-file. Accounting needs a GeneID column (``gene-id``):
with it, found and missing are exact except that a replaced GeneID counts as missing (a
TSV row doesn't say which query it answers; a row for a GeneID nobody asked for is kept only
while requested IDs without a row of their own can explain it as their new gene); without it
they can't be known, and the
summary counts those IDs as ``unverified`` instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bulkgene.model import Record
from bulkgene.ncbi.pages import InvalidPage

GENE_ID_HEADER = b"NCBI GeneID"
GENE_ID_FIELD = "gene-id"


@dataclass
class TsvAnswer:
    """One batch's TSV answer, checked."""

    header: bytes | None
    records: list[Record] = field(default_factory=list)
    answered: set[int] = field(default_factory=set)
    accountable: bool = False

    @classmethod
    def merged(cls, _gene_ids: tuple[int, ...], parts: Sequence[TsvAnswer]) -> TsvAnswer:
        """One answer out of the answers for the parts of a batch; each gene once."""
        whole = cls(next((part.header for part in parts if part.header), None),
                    accountable=all(part.accountable for part in parts))
        written: set[int] = set()
        for part in parts:
            for record in part.records:
                if record.gene_id is not None:
                    if record.gene_id in written:
                        continue
                    written.add(record.gene_id)
                whole.records.append(record)
            whole.answered.update(part.answered)
        return whole


def parse_tsv(body: bytes, gene_ids: tuple[int, ...], has_header: bool,
              gene_id_column: int | None) -> TsvAnswer:
    """Split a TSV body into its header and rows; raises InvalidPage.

    ``gene_id_column`` is where the GeneID is when there is no header to find it by.
    """
    if body.lstrip()[:1] == b"<":
        raise InvalidPage("an HTML page came back instead of TSV")
    if body and not body.endswith(b"\n"):
        raise InvalidPage("the TSV ends in a torn line")
    lines = body.split(b"\n")[:-1]
    header = lines[0] if has_header and lines else None
    rows = [line for line in lines[1:] if line != header] if header is not None else lines
    width = header.count(b"\t") + 1 if header is not None else None
    if header is not None:
        columns = header.split(b"\t")
        gene_id_column = columns.index(GENE_ID_HEADER) if GENE_ID_HEADER in columns else None
    answer = TsvAnswer(header, accountable=gene_id_column is not None)
    requested = frozenset(gene_ids)
    seen: set[int] = set()
    unasked: list[Record] = []
    for row in rows:
        row_width = row.count(b"\t") + 1
        if width is not None and row_width != width:
            raise InvalidPage(f"a row has {row_width} columns, the header {width}")
        if gene_id_column is None:
            answer.records.append(Record(None, (), row + b"\n"))
            continue
        cells = row.split(b"\t")
        value = cells[gene_id_column] if gene_id_column < len(cells) else b""
        if not value.isdigit():
            raise InvalidPage(f"{value[:20]!r} in the GeneID column is not a GeneID")
        gene_id = int(value)
        if gene_id in seen:
            continue  # merged IDs answered by one gene: one row is enough
        seen.add(gene_id)
        if gene_id in requested:
            answer.answered.add(gene_id)
            answer.records.append(Record(gene_id, (gene_id,), row + b"\n"))
        else:  # a replaced ID's new gene, or a stranger: a row can't say which
            unasked.append(Record(gene_id, (), row + b"\n"))
    # each requested ID answered by another GeneID explains at most one such row
    if len(unasked) > len(requested) - len(answer.answered):
        raise InvalidPage(f"{len(unasked)} rows are for GeneIDs nobody asked for, more than the "
                          f"{len(requested) - len(answer.answered)} requested IDs that could "
                          "have been replaced")
    answer.records.extend(unasked)
    return answer
