"""The emulator's world of genes: who exists, who is gone or replaced, and their reports.

Everything is a pure function of (seed, GeneID), so the tests can ask the same universe
what the server will answer. GeneIDs 7157 (TP53), 672 (BRCA1) and 3105 (HLA-A) are served
verbatim from a real NCBI response; every other known ID gets a synthetic, schema-valid
report of 1-8 KB in NCBI's field order, with 64-bit fields as strings and empty fields left out.
The genes of the emulator's taxa (testing/taxa.py) are always current, and their reports name
their taxon.
"""

from __future__ import annotations

import enum
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson

from bulkgene.testing.taxa import Taxon, TaxonTree

MASK64 = (1 << 64) - 1
REAL_RECORDS_FILE = "gene_id_7157_672_3105.trimmed.json"
# IDs above this are unknown to NCBI today (the largest GeneIDs are around 1.3e8).
DEFAULT_MAX_KNOWN_ID = 200_000_000
# Replacement targets live in a range no real input uses, so they never collide by accident.
REPLACEMENT_BASE = 1_000_000_000
# The middle GeneID of a two-step history chain (A -> B -> C or A -> B -> -) is B = this + A:
# above every known ID and below the replacement targets, so B is never a real list's ID.
INTERMEDIATE_BASE = 700_000_000
_CHAINED_ORIGINS_BELOW = REPLACEMENT_BASE - INTERMEDIATE_BASE


class Fate(enum.Enum):
    """What the server does with a requested GeneID."""

    FOUND = "found"
    UNKNOWN = "unknown"
    DISCONTINUED = "discontinued"
    REPLACED = "replaced"


@dataclass(frozen=True, slots=True)
class HistoryStep:
    """One row of the emulator's gene_history: ``gene_id`` was discontinued on ``date``
    (YYYYMMDD), replaced by ``successor`` (None: without a replacement)."""

    gene_id: int
    successor: int | None
    date: int


class Content(enum.Enum):
    """The API's ``returned_content``."""

    COMPLETE = "COMPLETE"
    IDS_ONLY = "IDS_ONLY"
    COUNTS_ONLY = "COUNTS_ONLY"


def mix(value: int) -> int:
    """splitmix64: a fast, well-spread 64-bit hash of an integer."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


@functools.cache
def real_reports() -> dict[int, dict[str, Any]]:
    """The real v2 gene descriptors shipped with the emulator, by GeneID."""
    text = resources.files("bulkgene.testing").joinpath("data").joinpath(REAL_RECORDS_FILE).read_text("utf-8")
    page = json.loads(text)
    return {int(report["gene"]["gene_id"]): report["gene"] for report in page["reports"]}


_SPECIES = (
    ("9606", "Homo sapiens", "human", "NC_0000", "GCF_000001405.40", "GRCh38.p14"),
    ("10090", "Mus musculus", "house mouse", "NC_0000", "GCF_000001635.27", "GRCm39"),
    ("7955", "Danio rerio", "zebrafish", "NC_0071", "GCF_049306965.1", "GRCz12tu"),
    ("7227", "Drosophila melanogaster", "fruit fly", "NT_0334", "GCF_000001215.4", "Release 6"),
    ("511145", "Escherichia coli str. K-12 substr. MG1655", "", "NC_0009", "GCF_000005845.2",
     "ASM584v2"),
)
_TYPES = ("PROTEIN_CODING",) * 6 + ("ncRNA", "PSEUDO", "tRNA", "snoRNA", "OTHER")
_WORDS = (
    "kinase", "receptor", "binding", "protein", "factor", "domain", "containing", "family",
    "member", "subunit", "transporter", "regulator", "zinc", "finger", "ubiquitin", "ligase",
    "channel", "associated", "mitochondrial", "ribosomal", "homolog", "like", "alpha", "beta",
)
_GO_TERMS = (
    ("GO:0005515", "protein binding"), ("GO:0003677", "DNA binding"),
    ("GO:0006357", "regulation of transcription by RNA polymerase II"),
    ("GO:0005634", "nucleus"), ("GO:0005737", "cytoplasm"), ("GO:0016020", "membrane"),
)


def _words(h: int, count: int) -> str:
    return " ".join(_WORDS[(h >> (5 * i)) % len(_WORDS)] for i in range(count))


_VARIANTS = 4096
_ID = "@@ID@@"
_ID11 = "@@ID11@@"
_HEX = "@@HEX@@"


@functools.cache
def _variant_template(variant: int, seed: int) -> bytes:
    """A COMPLETE descriptor with placeholders where the GeneID goes; 1-8 KB once filled."""
    h = mix(variant ^ (seed << 32))
    h2 = mix(h)
    tax_id, taxname, common, seq_prefix, assembly, assembly_name = _SPECIES[h % len(_SPECIES)]
    is_ecoli = tax_id == "511145"
    gene_type = _TYPES[(h >> 8) % len(_TYPES)]
    orientation = "plus" if h & 1 else "minus"
    chromosome = "ANONYMOUS" if is_ecoli else str(1 + (h >> 16) % 22)
    symbol = f"b{variant:04d}" if is_ecoli else f"G{_HEX}{'ABCDEFGH'[(h >> 3) % 8]}"
    start = 10_000 + (h2 % 200_000_000)
    length = 500 + (h2 >> 32) % 80_000
    target_bytes = 1150 + (h2 >> 8) % 6250
    gene: dict[str, Any] = {
        "gene_id": _ID,
        "symbol": symbol,
        "description": _words(h2, 3 + (h >> 20) % 4),
        "tax_id": tax_id,
        "taxname": taxname,
    }
    if common:  # proto3 JSON omits empty strings
        gene["common_name"] = common
    gene["type"] = gene_type
    gene["orientation"] = orientation
    gene["chromosomes"] = [chromosome]
    if not is_ecoli:
        gene["nomenclature_authority"] = {"authority": "HGNC", "identifier": f"HGNC:{_ID}"}
        gene["ensembl_gene_ids"] = [f"ENSG{_ID11}"]
        if h & 0x10:
            gene["omim_ids"] = [str(100000 + variant)]
        gene["synonyms"] = [f"{symbol}{n}" for n in range(1 + (h >> 24) % 4)]
    exon_count = max(1, (target_bytes - 1000) // 64)
    exons = []
    position = start
    for order in range(exon_count):
        exon_length = 50 + mix(h2 + order) % 400
        exon: dict[str, Any] = {"begin": str(position), "end": str(position + exon_length)}
        exon["orientation"] = orientation
        if order:  # order 0 is the proto default and so omitted
            exon["order"] = order
        exons.append(exon)
        position += exon_length + 100 + mix(h + order) % 2000
    chromosome_number = int(chromosome) if chromosome.isdigit() else 96
    gene["annotations"] = [{
        "assembly_accession": assembly,
        "assembly_name": assembly_name,
        "annotation_name": f"{assembly}-RS_2025_08",
        "annotation_release_date": "2025-08-01",
        "genomic_locations": [{
            "genomic_accession_version": f"{seq_prefix}{chromosome_number:02d}.1",
            "sequence_name": chromosome,
            "genomic_range": {"begin": str(start), "end": str(start + length),
                              "orientation": orientation},
            "exons": exons,
        }],
    }]
    transcripts = 1 + (h >> 28) % 12
    gene["transcript_count"] = transcripts
    if gene_type == "PROTEIN_CODING":
        gene["protein_count"] = transcripts
        gene["transcript_type_counts"] = [{"type": "PROTEIN_CODING", "count": transcripts}]
    else:
        gene["transcript_type_counts"] = [{"type": "NON_CODING", "count": transcripts}]
    gene["gene_groups"] = [{"id": _ID, "method": "NCBI Ortholog"}]
    if (h >> 4) & 3:
        go_id, go_name = _GO_TERMS[(h >> 40) % len(_GO_TERMS)]
        gene["gene_ontology"] = {
            "assigned_by": "GOA",
            "molecular_functions": [{
                "name": go_name, "go_id": go_id, "evidence_code": "IEA", "qualifier": "enables",
                "reference": {"pmids": [str(10_000_000 + h % 30_000_000)]},
            }],
        }
    if is_ecoli:
        gene["locus_tag"] = symbol
    gene["map_locations"] = [{"map_type": "Cytogenetic", "map_value": f"{chromosome}q{h % 40}"}]
    return orjson.dumps(gene)


def _species_fields(tax_id: str, taxname: str, common_name: str) -> bytes:
    """The descriptor's organism fields as they sit in a template's bytes."""
    fields: dict[str, str] = {"tax_id": tax_id, "taxname": taxname}
    if common_name:  # proto3 JSON omits empty strings
        fields["common_name"] = common_name
    return orjson.dumps(fields)[1:-1]


@functools.cache
def _variant_species_fields(variant: int, seed: int) -> bytes:
    tax_id, taxname, common = _SPECIES[mix(variant ^ (seed << 32)) % len(_SPECIES)][:3]
    return _species_fields(tax_id, taxname, common)


@functools.cache
def _variant_types(seed: int) -> tuple[str, ...]:
    """The gene type of every template variant (what ``type`` its descriptor says)."""
    return tuple(_TYPES[(mix(variant ^ (seed << 32)) >> 8) % len(_TYPES)]
                 for variant in range(_VARIANTS))


def synthetic_gene_type(gene_id: int, seed: int) -> str:
    """The ``type`` of ``gene_id``'s synthetic descriptor, without building it."""
    return _variant_types(seed)[mix(gene_id ^ seed) % _VARIANTS]


def synthetic_gene_bytes(gene_id: int, seed: int, taxon: Taxon | None = None) -> bytes:
    """A deterministic COMPLETE descriptor of 1-8 KB for ``gene_id``, as JSON bytes; a gene
    of one of the emulator's taxa names that taxon."""
    variant = mix(gene_id ^ seed) % _VARIANTS
    template = _variant_template(variant, seed)
    if taxon is not None:
        template = template.replace(
            _variant_species_fields(variant, seed),
            _species_fields(str(taxon.tax_id), taxon.name, taxon.common_name), 1)
    return (
        template.replace(_ID11.encode(), b"%011d" % gene_id)
        .replace(_HEX.encode(), b"%X" % gene_id)
        .replace(_ID.encode(), b"%d" % gene_id)
    )


def synthetic_gene(gene_id: int, seed: int, taxon: Taxon | None = None) -> dict[str, Any]:
    """The synthetic descriptor of ``gene_id`` as a dict."""
    gene: dict[str, Any] = orjson.loads(synthetic_gene_bytes(gene_id, seed, taxon))
    return gene


def reduce_gene(gene: dict[str, Any], content: Content) -> dict[str, Any]:
    """The descriptor as ``returned_content`` shapes it."""
    if content is Content.IDS_ONLY:
        return {"gene_id": gene["gene_id"]}
    if content is Content.COUNTS_ONLY:
        keys = ("gene_id", "transcript_count", "protein_count", "transcript_type_counts")
        return {key: gene[key] for key in keys if key in gene}
    return gene


@dataclass
class GeneUniverse:
    """Which GeneIDs exist and what each one's report looks like."""

    seed: int = 0
    unknown_per_mille: int = 20
    discontinued_per_mille: int = 10
    replaced_per_mille: int = 10
    max_known_id: int = DEFAULT_MAX_KNOWN_ID
    unknown: frozenset[int] = frozenset()
    discontinued: frozenset[int] = frozenset()
    replaced: dict[int, int] = field(default_factory=dict)
    taxa: TaxonTree = field(default_factory=TaxonTree)
    _cache: dict[tuple[int, Content], bytes] = field(default_factory=dict, repr=False)
    _listings: dict[tuple[int, bool, tuple[str, ...]], list[int]] = field(
        default_factory=dict, repr=False)

    def fate(self, gene_id: int) -> Fate:
        """What the server answers for ``gene_id``."""
        if gene_id in self.replaced:
            return Fate.REPLACED
        if gene_id in self.unknown:
            return Fate.UNKNOWN
        if gene_id in self.discontinued:
            return Fate.DISCONTINUED
        if (gene_id in real_reports() or gene_id >= REPLACEMENT_BASE or gene_id in self.targets()
                or self.taxa.owner(gene_id) is not None):
            return Fate.FOUND
        if INTERMEDIATE_BASE < gene_id < REPLACEMENT_BASE:
            # the middle of a two-step chain is answered as its own row says
            tail = self.history(gene_id)
            if not tail:
                return Fate.UNKNOWN
            return Fate.DISCONTINUED if tail[-1].successor is None else Fate.REPLACED
        if gene_id > self.max_known_id:
            return Fate.UNKNOWN
        roll = mix(gene_id ^ self.seed ^ 0x5EED) % 1000
        if roll < self.unknown_per_mille:
            return Fate.UNKNOWN
        roll -= self.unknown_per_mille
        if roll < self.discontinued_per_mille:
            return Fate.DISCONTINUED
        roll -= self.discontinued_per_mille
        if roll < self.replaced_per_mille:
            return Fate.REPLACED
        return Fate.FOUND

    def replacement(self, gene_id: int) -> int:
        """The current GeneID that a replaced ``gene_id`` was merged into."""
        if gene_id in self.replaced:
            return self.replaced[gene_id]
        if INTERMEDIATE_BASE < gene_id < REPLACEMENT_BASE and (tail := self.history(gene_id)):
            end = tail[-1].successor
            if end is not None:
                return end
        # pairs of neighbouring old IDs merge into one new gene, as merges do
        return REPLACEMENT_BASE + (gene_id >> 1) % (2**31 - 1 - REPLACEMENT_BASE)

    def history(self, gene_id: int) -> tuple[HistoryStep, ...]:
        """The rows of NCBI's gene_history that start at ``gene_id`` and follow its chain.

        Empty for a live or never-known GeneID. A discontinued ID ends in ``-``; a replaced one
        at the gene the API answers it with. A share of each takes two steps through a middle
        ID (``INTERMEDIATE_BASE + gene_id``). And a quarter of the IDs the API is silent about
        were replaced in the history by a live gene all the same: whether NCBI's API answers a
        replaced GeneID at all was never recorded (API-FACTS §9), so an explained run has
        missing IDs with a successor to fetch (``--follow-replaced``). IDs given explicitly
        (``discontinued``, ``replaced``) take one step, exactly as given.
        """
        if INTERMEDIATE_BASE < gene_id < REPLACEMENT_BASE:
            origin = self.history(gene_id - INTERMEDIATE_BASE)
            return origin[1:] if len(origin) == 2 and origin[1].gene_id == gene_id else ()
        date = self._history_date(gene_id)
        if gene_id in self.replaced:
            return (HistoryStep(gene_id, self.replaced[gene_id], date),)
        if gene_id in self.discontinued:
            return (HistoryStep(gene_id, None, date),)
        fate = self.fate(gene_id)
        if fate not in (Fate.DISCONTINUED, Fate.REPLACED):
            return ()
        roll = mix(gene_id ^ self.seed ^ 0x4157) % 100
        if fate is Fate.REPLACED:
            end: int | None = self.replacement(gene_id)
            two_steps = roll < 20
        elif roll < 25:  # silent in the API, replaced in the history
            end = REPLACEMENT_BASE + (mix(gene_id ^ 0x5AFE) >> 1) % (2**31 - 1 - REPLACEMENT_BASE)
            two_steps = roll < 8
        else:
            end = None
            two_steps = roll < 40
        if not two_steps or gene_id >= _CHAINED_ORIGINS_BELOW:
            return (HistoryStep(gene_id, end, date),)
        middle = INTERMEDIATE_BASE + gene_id
        return (HistoryStep(gene_id, middle, date),
                HistoryStep(middle, end, self._history_date(middle, after=date)))

    def _history_date(self, gene_id: int, after: int = 20050101) -> int:
        """A day after ``after`` (YYYYMMDD); E. coli's discontinued genes went on 2024-08-23,
        as NCBI's prokaryote genes outside reference genomes did."""
        if self.tax_id(gene_id) == 511145 and after < 20240823:
            return 20240823
        h = mix(gene_id ^ self.seed ^ 0xDA7E)
        year = max(after // 10000, 2005 + h % 20) + (1 if after > 20050101 else 0)
        return year * 10000 + (1 + (h >> 8) % 12) * 100 + 1 + (h >> 16) % 28

    def tax_id(self, gene_id: int) -> int:
        """The taxon of ``gene_id``'s synthetic report (what its history row names)."""
        real = real_reports().get(gene_id)
        if real is not None:
            return int(real["tax_id"])
        variant = mix(gene_id ^ self.seed) % _VARIANTS
        return int(_SPECIES[mix(variant ^ (self.seed << 32)) % len(_SPECIES)][0])

    def symbol(self, gene_id: int) -> str:
        """The symbol ``gene_id`` had (what its history row names)."""
        real = real_reports().get(gene_id)
        return str(real["symbol"]) if real is not None else f"G{gene_id:X}"

    def targets(self) -> frozenset[int]:
        """Explicitly configured replacement targets (served as found genes)."""
        return frozenset(self.replaced.values())

    def gene_type(self, gene_id: int) -> str:
        """The ``type`` the report of ``gene_id`` names (for the ``types`` filter, counts)."""
        real = real_reports().get(gene_id)
        return str(real.get("type", "UNKNOWN")) if real else synthetic_gene_type(gene_id, self.seed)

    def taxon_genes(self, taxon: Taxon, subtree: bool = False, types: tuple[str, ...] = ()
                    ) -> list[int]:
        """The GeneIDs annotated at ``taxon`` (and below it with ``subtree``) whose type is
        one of ``types`` (any without), in GeneID order: what its pages list, in order."""
        key = (taxon.tax_id, subtree, tuple(sorted(types)))
        if key not in self._listings:
            members = self.taxa.subtree(taxon) if subtree else iter([taxon])
            genes = sorted({gene_id for member in members for gene_id in member.own_genes()})
            if types:
                genes = [gene_id for gene_id in genes if self.gene_type(gene_id) in types]
            if len(self._listings) > 64:
                self._listings.clear()
            self._listings[key] = genes
        return self._listings[key]

    def order_key(self, gene_id: int) -> int:
        """Reports come back in this order: neither input nor numeric, like NCBI's."""
        return mix(gene_id ^ 0xC0FFEE)

    def gene_bytes(self, gene_id: int, content: Content, replaced_from: int | None = None) -> bytes:
        """The JSON bytes of ``gene_id``'s descriptor (cached; this is the emulator's hot path)."""
        key = (gene_id if replaced_from is None else -replaced_from, content)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        real = real_reports().get(gene_id)
        taxon = self.taxa.owner(gene_id) if real is None else None
        if replaced_from is None and content is Content.COMPLETE and real is None:
            return synthetic_gene_bytes(gene_id, self.seed, taxon)  # cheap enough not to cache
        gene = real or synthetic_gene(gene_id, self.seed, taxon)
        if replaced_from is not None:
            gene = _reorder_replaced({**gene, "replaced_gene_id": str(replaced_from)})
        cached = orjson.dumps(reduce_gene(gene, content))
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[key] = cached
        return cached


_FIELD_ORDER_AFTER_REPLACED = ("annotations", "transcript_count", "protein_count",
                               "transcript_type_counts", "gene_groups", "summary",
                               "gene_ontology", "locus_tag", "map_locations")


def _reorder_replaced(gene: dict[str, Any]) -> dict[str, Any]:
    """Move ``replaced_gene_id`` to its place in proto field order (before annotations)."""
    replaced = gene.pop("replaced_gene_id")
    ordered: dict[str, Any] = {}
    placed = False
    for key, value in gene.items():
        if not placed and key in _FIELD_ORDER_AFTER_REPLACED:
            ordered["replaced_gene_id"] = replaced
            placed = True
        ordered[key] = value
    if not placed:
        ordered["replaced_gene_id"] = replaced
    return ordered
