"""The emulator's TSV answers: ``table_fields`` mnemonics, NCBI's column names, header modes.

Column names verified from real ``dataformat`` output: NCBI GeneID, Symbol, Description,
Taxonomic Name, Proteins, Gene Group Method, Gene Group Identifier, Ensembl GeneIDs,
Synonyms. The others follow the same style but were not seen (docs/ncbi-api.md §8). Multi-valued
fields are joined with commas. Like the JSON-lines answer, a TSV answer holds every row of
the request at once; the header mode decides whether the header leads the first internal
page only, every page of ``page_size`` rows, or never.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Gene = dict[str, Any]


def _join(key: str) -> Callable[[Gene], str]:
    return lambda gene: ",".join(map(str, gene.get(key, [])))


def _group(key: str) -> Callable[[Gene], str]:
    return lambda gene: str((gene.get("gene_groups") or [{}])[0].get(key, ""))


def _authority(key: str) -> Callable[[Gene], str]:
    return lambda gene: str(gene.get("nomenclature_authority", {}).get(key, ""))


def _plain(key: str) -> Callable[[Gene], str]:
    return lambda gene: str(gene.get(key, ""))


COLUMNS: dict[str, tuple[str, Callable[[Gene], str]]] = {
    "gene-id": ("NCBI GeneID", _plain("gene_id")),
    "symbol": ("Symbol", _plain("symbol")),
    "description": ("Description", _plain("description")),
    "tax-id": ("Taxonomic ID", _plain("tax_id")),
    "tax-name": ("Taxonomic Name", _plain("taxname")),
    "common-name": ("Common Name", _plain("common_name")),
    "gene-type": ("Gene Type", _plain("type")),
    "chromosomes": ("Chromosomes", _join("chromosomes")),
    "orientation": ("Orientation", _plain("orientation")),
    "synonyms": ("Synonyms", _join("synonyms")),
    "ensembl-geneids": ("Ensembl GeneIDs", _join("ensembl_gene_ids")),
    "omim-ids": ("OMIM IDs", _join("omim_ids")),
    "swissprot-accessions": ("SwissProt Accessions", _join("swiss_prot_accessions")),
    "transcript-count": ("Transcripts", _plain("transcript_count")),
    "protein-count": ("Proteins", _plain("protein_count")),
    "group-id": ("Gene Group Identifier", _group("id")),
    "group-method": ("Gene Group Method", _group("method")),
    "name-authority": ("Nomenclature Authority", _authority("authority")),
    "name-id": ("Nomenclature ID", _authority("identifier")),
}
DEFAULT_FIELDS = ("gene-id", "symbol", "description", "tax-id", "tax-name", "gene-type")


def unknown_fields(fields: list[str]) -> list[str]:
    return [name for name in fields if name not in COLUMNS]


def render(genes: list[Gene], fields: list[str], header_mode: str, page_size: int) -> bytes:
    """The TSV body for ``genes`` in order, with the header as ``header_mode`` places it."""
    names = fields or list(DEFAULT_FIELDS)
    header = "\t".join(COLUMNS[name][0] for name in names)
    lines: list[str] = []
    for start in range(0, max(len(genes), 1), page_size):
        if header_mode == "INCLUDE_TABULAR_HEADER_ALWAYS" or (
                start == 0 and header_mode != "INCLUDE_TABULAR_HEADER_NEVER"):
            lines.append(header)
        for gene in genes[start:start + page_size]:
            cells = (COLUMNS[name][1](gene) for name in names)
            lines.append("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in cells))
    return "".join(line + "\n" for line in lines).encode()
