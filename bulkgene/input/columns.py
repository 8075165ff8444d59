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
_SHOWN_TEXT_CHARS = 80
_GENE_ID_NAMES = frozenset({"geneid", "ncbigeneid", "entrezgeneid", "entrezid", "entrez",
                            "ncbigeneformerlyentrezgeneid", "entrezgene", "ncbigene"})
# numeric columns of common tables that hold something else: read as GeneIDs, they fetch
# the wrong genes and say "done" (taxonomy IDs are the usual one: gene_info's column 1).
# Matched by the words of a name, not by whole names: gene2refseq says
# start_position_on_the_genomic_accession and RNA_nucleotide_gi, gene_history
# Discontinue_Date, gene_orthologs Other_tax_id, BioMart "Gene start (bp)", UCSC txStart.
_TAXONOMY = "taxonomy IDs (9606 is human)"
_NOT_GENE_ID_WORDS = {
    **dict.fromkeys(("tax", "taxid", "taxon", "taxonomy", "taxonid", "organism"), _TAXONOMY),
    **dict.fromkeys(("pubmed", "pmid"), "PubMed IDs"),
    **dict.fromkeys(("mim", "omim"), "OMIM numbers"),
    **dict.fromkeys(("hgnc",), "HGNC IDs"),
    **dict.fromkeys(("gi",), "GenBank gi numbers"),
    **dict.fromkeys(("start", "end", "stop", "begin", "position", "pos", "bp", "chromosome",
                     "chr", "chrom", "coordinate", "coordinates", "offset", "strand"),
                    "genome coordinates"),
    **dict.fromkeys(("length", "len", "size", "count", "exons", "width"), "lengths or counts"),
    **dict.fromkeys(("date", "year", "time", "timestamp"), "dates"),
}


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-()#]", "", name.lower())


def _words(name: str) -> list[str]:
    """``start_position_on_the_genomic_accession`` -> start, position, on, ...; a camelCase
    word both whole and split (``PubMed_ID`` -> pubmed, pub, med, id; ``txStart``)."""
    words = []
    for piece in re.split(r"[^A-Za-z0-9]+", name):
        if piece:
            words.append(piece.lower())
            parts = re.sub(r"([a-z])([A-Z])", r"\1 \2", piece).lower().split()
            if len(parts) > 1:
                words.extend(parts)
    return words


def is_gene_id_name(name: str) -> bool:
    """Whether a header names the GeneID column (``GeneID``, ``Entrez``, ``entrezgene``, ...)."""
    return _normal(name) in _GENE_ID_NAMES


def _names_gene_ids(name: str) -> bool:
    """A name that says GeneIDs, also of other genes (``Other_GeneID``,
    ``Discontinued_GeneID``): never refused, though not picked by itself."""
    normal = _normal(name)
    return (normal in _GENE_ID_NAMES or "entrez" in normal
            or (normal.endswith("geneid") and "ensembl" not in normal))


def is_tax_id_name(name: str) -> bool:
    return not_gene_ids(name) == _TAXONOMY


def not_gene_ids(name: str) -> str | None:
    """What a column of this name holds if its words say it is a numeric non-GeneID column
    (taxonomy IDs, coordinates, gi numbers, dates, ...), else None."""
    if _names_gene_ids(name):
        return None
    words = _words(name)
    if "id" in words and "gene" in words:  # "NCBI gene ID" and the like
        return None
    for word in words:
        if (meaning := _NOT_GENE_ID_WORDS.get(word)) is not None:
            return meaning
    return None


def gene_id_column_names(names: list[str]) -> list[int]:
    """The columns of a header line whose names say GeneIDs (the picked one, then others)."""
    return [i for i, n in enumerate(names) if _names_gene_ids(n)]


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


def shown_text(raw: bytes) -> str:
    """A line as it may appear in a report: truncated, escaped, one TSV field."""
    text = raw[: _SHOWN_TEXT_CHARS * 4].decode("utf-8", "backslashreplace")
    if len(text) > _SHOWN_TEXT_CHARS:
        text = text[:_SHOWN_TEXT_CHARS] + "..."
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)
