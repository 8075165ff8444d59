"""NCBI's gene table fields: each mnemonic's JSON path in a gene report, column title, type.

The mnemonics are the names NCBI's ``dataformat tsv gene --fields`` and the API's
``table_fields`` take; the titles are the column headers NCBI writes for them. Which pairs
were seen in NCBI's own output and which are inferred is in docs/ncbi-gene-fields.md. One
table serves the emulator's server-side TSV (``bulkgene.testing.tabular``) and
``bulkgene export``, so the two can be compared byte for byte.

A path names keys of the gene descriptor (``v2reportsGeneDescriptor``) joined by dots; a key
marked ``[]`` holds a list, whose items the rest of the path continues into. A field whose
path has a list may hold several values (``is_list``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

Kind = Literal["str", "int"]
Evidence = Literal["seen", "inferred"]


@dataclass(frozen=True)
class GeneField:
    """One column of a gene table."""

    mnemonic: str
    path: str
    title: str
    kind: Kind
    meaning: str
    # "seen": mnemonic and title both appear in NCBI's own output; "inferred": see the docs
    evidence: Evidence = "seen"

    @cached_property
    def segments(self) -> tuple[tuple[str, bool], ...]:
        """The path as (key, holds a list) pairs."""
        return tuple((part.removesuffix("[]"), part.endswith("[]"))
                     for part in self.path.split("."))

    @property
    def is_list(self) -> bool:
        return "[]" in self.path


def _field(mnemonic: str, path: str, title: str, meaning: str, kind: Kind = "str",
           evidence: Evidence = "seen") -> GeneField:
    return GeneField(mnemonic, path, title, kind, meaning, evidence)


_RANGE = "annotations[].genomic_locations[]"
_GO = "gene_ontology"

FIELD_LIST: tuple[GeneField, ...] = (
    _field("gene-id", "gene_id", "NCBI GeneID", "the gene's NCBI GeneID", "int"),
    _field("symbol", "symbol", "Symbol", "the gene symbol"),
    _field("description", "description", "Description", "the gene's name"),
    _field("tax-id", "tax_id", "Taxonomic ID", "NCBI Taxonomy ID of the organism", "int"),
    _field("tax-name", "taxname", "Taxonomic Name", "scientific name of the organism"),
    _field("common-name", "common_name", "Common Name", "common name of the organism"),
    _field("gene-type", "type", "Gene Type", "PROTEIN_CODING, ncRNA, PSEUDO, ..."),
    _field("orientation", "orientation", "Orientation",
           "strand of the gene relative to the genome (plus, minus)"),
    _field("chromosomes", "chromosomes[]", "Chromosomes", "chromosomes the gene is on"),
    _field("synonyms", "synonyms[]", "Synonyms", "other symbols of the gene"),
    _field("ensembl-geneids", "ensembl_gene_ids[]", "Ensembl GeneIDs", "Ensembl gene IDs"),
    _field("omim-ids", "omim_ids[]", "OMIM IDs", "OMIM entries of the gene"),
    _field("swissprot-accessions", "swiss_prot_accessions[]", "SwissProt Accessions",
           "UniProtKB/Swiss-Prot accessions of its proteins"),
    _field("name-authority", "nomenclature_authority.authority", "Nomenclature Authority",
           "the nomenclature authority (HGNC, MGI, ...)", evidence="inferred"),
    _field("name-id", "nomenclature_authority.identifier", "Nomenclature ID",
           "the authority's ID for the gene (HGNC:11998, ...)"),
    _field("transcript-count", "transcript_count", "Transcripts",
           "number of transcripts of the gene", "int"),
    _field("protein-count", "protein_count", "Proteins",
           "number of proteins the gene encodes", "int"),
    _field("group-id", "gene_groups[].id", "Gene Group Identifier",
           "the gene's ortholog group (the GeneID naming it)"),
    _field("group-method", "gene_groups[].method", "Gene Group Method",
           "how the group was made (NCBI Ortholog)"),
    _field("summary-description", "summary[].description", "Summary",
           "RefSeq's summary of the gene", evidence="inferred"),
    _field("annotation-assembly-accession", "annotations[].assembly_accession",
           "Annotation Assembly Accession", "assembly of each annotation (GCF_...)",
           evidence="inferred"),
    _field("annotation-assembly-name", "annotations[].assembly_name",
           "Annotation Assembly Name", "assembly name of each annotation (GRCh38.p14)",
           evidence="inferred"),
    _field("annotation-release-name", "annotations[].annotation_name",
           "Annotation Release Name", "name of each annotation release", evidence="inferred"),
    _field("annotation-release-date", "annotations[].annotation_release_date",
           "Annotation Release Date", "date of each annotation release"),
    _field("annotation-genomic-range-accession", f"{_RANGE}.genomic_accession_version",
           "Annotation Genomic Range Accession",
           "sequence (NC_...) of each annotated location"),
    _field("annotation-genomic-range-seq-name", f"{_RANGE}.sequence_name",
           "Annotation Genomic Range Sequence Name",
           "chromosome or sequence name of each annotated location", evidence="inferred"),
    _field("annotation-genomic-range-range-start", f"{_RANGE}.genomic_range.begin",
           "Annotation Genomic Range Start", "start of each annotated location", "int"),
    _field("annotation-genomic-range-range-stop", f"{_RANGE}.genomic_range.end",
           "Annotation Genomic Range Stop", "end of each annotated location", "int"),
    _field("annotation-genomic-range-range-orientation", f"{_RANGE}.genomic_range.orientation",
           "Annotation Genomic Range Orientation",
           "strand of each annotated location", evidence="inferred"),
    _field("go-mf-id", f"{_GO}.molecular_functions[].go_id", "Gene Ontology MF ID",
           "GO molecular function terms (GO:...)", evidence="inferred"),
    _field("go-mf-name", f"{_GO}.molecular_functions[].name", "Gene Ontology MF Name",
           "GO molecular function names", evidence="inferred"),
    _field("go-bp-id", f"{_GO}.biological_processes[].go_id", "Gene Ontology BP ID",
           "GO biological process terms", evidence="inferred"),
    _field("go-bp-name", f"{_GO}.biological_processes[].name", "Gene Ontology BP Name",
           "GO biological process names", evidence="inferred"),
    _field("go-bp-reference-pmid", f"{_GO}.biological_processes[].reference.pmids[]",
           "Gene Ontology BP Reference PMID",
           "PubMed IDs supporting the GO biological processes", "int", evidence="inferred"),
    _field("go-cc-id", f"{_GO}.cellular_components[].go_id", "Gene Ontology CC ID",
           "GO cellular component terms", evidence="inferred"),
    _field("go-cc-name", f"{_GO}.cellular_components[].name", "Gene Ontology CC Name",
           "GO cellular component names", evidence="inferred"),
)

FIELDS: dict[str, GeneField] = {item.mnemonic: item for item in FIELD_LIST}

# what a report holds when it is asked for with returned_content IDS_ONLY or COUNTS_ONLY
# (NCBI's OpenAPI spec: "abbreviated report with GeneIDs" / "with GeneIDs, transcript and
# protein counts"; docs/ncbi-gene-fields.md); COMPLETE holds every field
HELD_BY_CONTENT: dict[str, tuple[str, ...]] = {
    "IDS_ONLY": ("gene-id",),
    "COUNTS_ONLY": ("gene-id", "transcript-count", "protein-count"),
}


def held(returned_content: str) -> tuple[str, ...]:
    """The mnemonics a report of ``returned_content`` can fill."""
    return HELD_BY_CONTENT.get(returned_content, tuple(FIELDS))


# the emulator's (and dataformat's) columns when no table_fields are asked for
DEFAULT_TABLE_FIELDS = ("gene-id", "symbol", "description", "tax-id", "tax-name", "gene-type")
# multi-valued cells in NCBI's TSV are joined with commas (docs/ncbi-gene-fields.md: inferred)
NCBI_LIST_SEPARATOR = ","


def unknown_fields(names: list[str] | tuple[str, ...]) -> list[str]:
    """The names in ``names`` that are no gene table mnemonic."""
    return [name for name in names if name not in FIELDS]


def _aliases() -> dict[str, str]:
    """Other names of a field, lower-cased: the mnemonic with underscores, NCBI's column
    title ("NCBI GeneID"), and the JSON key of a top-level field ("gene_id", "taxname")."""
    aliases: dict[str, str] = {}
    for item in FIELD_LIST:
        names = [item.mnemonic, item.mnemonic.replace("-", "_"), item.title]
        if "." not in item.path:
            names.append(item.path.removesuffix("[]"))
        for name in names:
            other = aliases.setdefault(name.lower(), item.mnemonic)
            if other != item.mnemonic:  # pragma: no cover - the table's own consistency
                raise AssertionError(f"{name!r} names both {other} and {item.mnemonic}")
    return aliases


ALIASES = _aliases()


def resolve(name: str) -> str | None:
    """The mnemonic ``name`` stands for (itself, or an alias), None if it names no field."""
    if name in FIELDS:
        return name
    return ALIASES.get(name.strip().lower())


# mygene's field names (querymany's fields=) and what the gene table calls them: suggested,
# never taken silently (mygene's values come from other sources and may differ)
MYGENE_NAMES = {"entrezgene": "gene-id", "_id": "gene-id", "name": "description",
                "taxid": "tax-id", "type_of_gene": "gene-type", "alias": "synonyms",
                "summary": "summary-description", "mim": "omim-ids", "hgnc": "name-id",
                "ensembl.gene": "ensembl-geneids", "uniprot.swiss-prot": "swissprot-accessions",
                "genomic_pos": "annotation-genomic-range-range-start", "go.bp": "go-bp-id",
                "go.mf": "go-mf-id", "go.cc": "go-cc-id", "map_location": "chromosomes"}


def _words(name: str) -> list[str]:
    return [word for word in re.split(r"[-_\s]+", name.lower()) if word]


def suggest(name: str, others: tuple[str, ...] = ()) -> list[str]:
    """Up to three mnemonics (or ``others``) ``name`` may have meant, closest first."""
    import difflib

    candidates = [*others, *FIELDS]
    hinted = MYGENE_NAMES.get(name.strip().lower())
    close = [hinted] if hinted else []
    close += difflib.get_close_matches(name.lower(), [*others, *ALIASES], n=3, cutoff=0.6)
    found = [ALIASES.get(match, match) for match in close]
    words = _words(name)
    if words:  # every word of it in a mnemonic: genomic-range-start, go-mf-pmid
        found += [c for c in candidates if all(any(w.startswith(word) for w in _words(c))
                                               for word in words)]
    return list(dict.fromkeys(found))[:3]
