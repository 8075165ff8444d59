"""The emulator's TSV answers: ``table_fields`` mnemonics, NCBI's column titles, header modes.

The columns come from the one table of gene fields (``bulkgene.ncbi.fields``; what is
verified of it is in docs/ncbi-gene-fields.md), the same that ``bulkgene export`` uses.
Multi-valued cells are joined with commas. Like the JSON-lines answer, a TSV answer holds
every row of the request at once; the header mode decides whether the header leads the
first internal page only, every page of ``page_size`` rows, or never.
"""

from __future__ import annotations

from typing import Any

from bulkgene.ncbi.fields import DEFAULT_TABLE_FIELDS, FIELDS, NCBI_LIST_SEPARATOR, unknown_fields
from bulkgene.ncbi.gene_table import cell, cell_text

__all__ = ["render", "unknown_fields"]


def render(genes: list[dict[str, Any]], fields: list[str], header_mode: str,
           page_size: int) -> bytes:
    """The TSV body for ``genes`` in order, with the header as ``header_mode`` places it."""
    columns = [FIELDS[name] for name in (fields or DEFAULT_TABLE_FIELDS)]
    header = "\t".join(column.title for column in columns)
    lines: list[str] = []
    for start in range(0, max(len(genes), 1), page_size):
        if header_mode == "INCLUDE_TABULAR_HEADER_ALWAYS" or (
                start == 0 and header_mode != "INCLUDE_TABULAR_HEADER_NEVER"):
            lines.append(header)
        for gene in genes[start:start + page_size]:
            lines.append("\t".join(cell_text(cell(gene, column), NCBI_LIST_SEPARATOR)
                                   for column in columns))
    return "".join(line + "\n" for line in lines).encode()
