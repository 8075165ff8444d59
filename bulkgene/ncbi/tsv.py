"""TSV answers (``text/tab-separated-values``): the header, rows as records, the GeneID column.

The server may repeat its header before every internal page (INCLUDE_TABULAR_HEADER_ALWAYS);
bulkgene keeps the first line as the header and drops its repeats, so a shard gets the
header once at the top and never mid-file. Accounting needs a GeneID column (``gene-id``):
with it, found and missing are exact. A TSV row doesn't say which query it answers, so a row
for a GeneID nobody asked for (a replaced ID's new gene) is kept only while requested IDs
without a row of their own can explain it, and the client then asks which of them it
answers (``attribute``); without a GeneID column nothing can be known, and the summary
counts those IDs as ``unverified`` instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

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
    reasons: dict[int, str] = field(default_factory=dict)  # why an ID has no row, if known
    repeated: int = 0  # rows dropped because their GeneID had a row already

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
                        whole.repeated += 1
                        continue
                    written.add(record.gene_id)
                whole.records.append(record)
            whole.answered.update(part.answered)
            whole.reasons.update(part.reasons)
            whole.repeated += part.repeated
        return whole

    def may_hold_replacements(self) -> bool:
        """Whether some requested IDs without a row may be answered by another ID's row: a
        row nobody asked for, or a gene's row sent twice (two IDs merged into it)."""
        return self.repeated > 0 or any(
            r.gene_id is not None and not r.queries for r in self.records)

    def attribute(self, answered_by: Mapping[int, int]) -> None:
        """Give rows the requested IDs they answer (requested ID -> GeneID, as the server
        said in JSON); those IDs are then found."""
        queries: dict[int, set[int]] = {}
        for requested, gene_id in answered_by.items():
            queries.setdefault(gene_id, set()).add(requested)
        for position, record in enumerate(self.records):
            if record.gene_id is not None and record.gene_id in queries:
                asked = tuple(sorted(queries[record.gene_id] | set(record.queries)))
                self.records[position] = replace(record, queries=asked)
                self.answered.update(asked)


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
            answer.repeated += 1  # merged IDs answered by one gene: one row is enough
            continue
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
