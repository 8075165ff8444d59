"""Header lines of ID tables: which column names GeneIDs, and which names numbers that are not.

NCBI's tab files (``gene_info``, ``gene2refseq``, ...) start with ``#tax_id<TAB>GeneID...``;
exports from Entrez, BioMart and spreadsheets name the column ``Entrez``, ``entrezgene``,
``NCBI gene (formerly Entrezgene) ID`` and so on. Names are compared without case, spaces,
``_ - ( )`` and a leading ``#``.
"""

from __future__ import annotations

import re
import shlex

from bulkgene.errors import InputError

FIELD_QUOTES = b" \t\"'"
_GENE_ID_NAMES = frozenset({"geneid", "ncbigeneid", "entrezgeneid", "entrezid", "entrez",
                            "ncbigeneformerlyentrezgeneid", "entrezgene", "ncbigene"})
# numeric columns of common tables that hold something else: read as GeneIDs, they fetch
# the wrong genes and say "done" (taxonomy IDs are the usual one: gene_info's column 1)
_TAXONOMY = "taxonomy IDs (9606 is human)"
_NOT_GENE_ID_NAMES = {
    **dict.fromkeys(("taxid", "taxonomyid", "taxon", "taxonid", "ncbitaxid", "ncbitaxonid",
                     "organismid"), _TAXONOMY),
    **dict.fromkeys(("pubmedid", "pubmed", "pmid"), "PubMed IDs"),
    **dict.fromkeys(("mim", "mimnumber", "omim", "omimid", "mimid"), "OMIM numbers"),
    **dict.fromkeys(("hgncid", "hgnc"), "HGNC IDs"),
    **dict.fromkeys(("start", "end", "stop", "begin", "position", "startposition",
                     "endposition", "chromosome", "chr", "chrom"), "genome coordinates"),
}


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-()#]", "", name.lower())


def is_gene_id_name(name: str) -> bool:
    """Whether a header names the GeneID column (``GeneID``, ``Entrez``, ``entrezgene``, ...)."""
    return _normal(name) in _GENE_ID_NAMES


def is_tax_id_name(name: str) -> bool:
    return _NOT_GENE_ID_NAMES.get(_normal(name)) == _TAXONOMY


def not_gene_ids(name: str) -> str | None:
    """What a column of this name holds if it is a known numeric non-GeneID column, else None."""
    return _NOT_GENE_ID_NAMES.get(_normal(name))


def header_names(line: bytes) -> list[str]:
    """A possible header line's field names (a leading ``#`` dropped).

    A ``#`` line is a header only if tab- or comma-separated (NCBI's are tab-separated):
    a prose comment that mentions GeneID is not.
    """
    stripped = line.strip()
    text = stripped.lstrip(b"#").strip()
    if b"\t" in text:
        fields = text.split(b"\t")
    elif b"," in text:
        fields = text.split(b",")
    elif not stripped.startswith(b"#"):
        fields = text.split()
    else:
        return []
    return [f.strip(FIELD_QUOTES).decode("utf-8", "replace") for f in fields]


def parse_column(column: str | None) -> int | str | None:
    """``--column``: a 1-based index (as a 0-based int), a header name, or None (automatic)."""
    if column is None:
        return None
    text = column.strip()
    if text.isdigit():
        if int(text) < 1:
            raise InputError(f"--column {column}: columns count from 1 (the first is 1)")
        return int(text) - 1
    if not text:
        raise InputError("--column is empty: give a column number (1, 2, ...) or a header name")
    return text


def refuse_numbered_non_gene_column(source: str, line: bytes, index: int) -> None:
    """``--column N`` whose header line names something that is never GeneIDs: refused, since
    ``--column 1`` on ``gene_info`` (a 0-based habit) fetched its tax IDs as genes and said
    done. Choosing the column by its name is taken as meaning it."""
    names = header_names(line)
    if len(names) <= index or (meaning := not_gene_ids(names[index])) is None:
        return
    gene_column = next((i for i, n in enumerate(names) if is_gene_id_name(n)), None)
    where = (f"the GeneIDs are in column {gene_column + 1} ({names[gene_column]}): pass "
             f"--column {gene_column + 1}" if gene_column is not None
             else "choose the GeneID column with --column N (counted from 1)")
    raise InputError(
        f"{source}: --column {index + 1} is the column its header line names "
        f"{names[index]!r}: {meaning}, not GeneIDs. Columns count from 1; {where}. If column "
        f"{index + 1} does hold GeneIDs, choose it by its name: --column {shlex.quote(names[index])}")
