"""The emulator's taxa: a small tree of organisms, their names, and which GeneIDs each one has.

A taxon's own genes are an arithmetic run of GeneIDs (``base + i * step``) plus a few fixed
ones (the real TP53, BRCA1 and HLA-A for human, the thr operon for E. coli K-12): membership
is a constant-time test and nothing is built until a route asks, so the emulator starts as
fast with a 100 000-gene wheat as without it. Every member is a current gene of the universe
(``GeneUniverse.fate`` answers FOUND for it) whose report names the taxon.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

SPECIES = "SPECIES"
ABOVE_SPECIES_RANKS = frozenset({"GENUS", "FAMILY", "ORDER", "CLASS", "PHYLUM", "CLADE",
                                 "KINGDOM", "SUPERKINGDOM"})


@dataclass(frozen=True)
class Taxon:
    """One organism or group: names, rank, parent, and the genes annotated at it."""

    tax_id: int
    name: str  # scientific name
    common_name: str = ""
    rank: str = SPECIES
    parent: int | None = None
    gene_base: int = 0
    gene_step: int = 1
    gene_count: int = 0
    fixed_genes: tuple[int, ...] = ()
    aliases: tuple[str, ...] = ()  # further names the route accepts

    def __post_init__(self) -> None:
        last = self.gene_base + self.gene_step * (self.gene_count - 1)
        if self.gene_count and not (self.gene_base >= 1 and last < 2**31 - 1):
            raise ValueError(f"taxon {self.tax_id}: GeneIDs out of range")

    @property
    def above_species(self) -> bool:
        return self.rank in ABOVE_SPECIES_RANKS

    def own_genes(self) -> Iterator[int]:
        """The GeneIDs annotated at this taxon itself, fixed ones first, then the run."""
        yield from self.fixed_genes
        yield from range(self.gene_base, self.gene_base + self.gene_step * self.gene_count,
                         self.gene_step)

    def has_own(self, gene_id: int) -> bool:
        offset = gene_id - self.gene_base
        return (0 <= offset < self.gene_step * self.gene_count
                and offset % self.gene_step == 0) or gene_id in self.fixed_genes


def default_taxa() -> tuple[Taxon, ...]:
    """The emulator's organisms (tax IDs and names as NCBI's; gene numbers made up)."""
    return (
        Taxon(7742, "Vertebrata", rank="CLADE"),
        Taxon(40674, "Mammalia", "mammals", rank="CLASS", parent=7742),
        Taxon(9605, "Homo", rank="GENUS", parent=40674),
        Taxon(9606, "Homo sapiens", "human", parent=9605, gene_base=10_001, gene_step=13,
              gene_count=1_997, fixed_genes=(7157, 672, 3105)),
        Taxon(10088, "Mus", rank="GENUS", parent=40674),
        Taxon(10090, "Mus musculus", "house mouse", parent=10088, gene_base=100_003,
              gene_step=17, gene_count=1_500, aliases=("mouse",)),
        Taxon(7955, "Danio rerio", "zebrafish", parent=7742, gene_base=30_000_001,
              gene_step=29, gene_count=1_200),
        Taxon(7227, "Drosophila melanogaster", "fruit fly", gene_base=31_000_003, gene_step=31,
              gene_count=1_000),
        Taxon(562, "Escherichia coli", "E. coli"),  # its genes sit at the strain below
        Taxon(511145, "Escherichia coli str. K-12 substr. MG1655", rank="STRAIN", parent=562,
              gene_base=948_001, gene_step=3, gene_count=4_296,
              fixed_genes=(944742, 945803, 947498, 945198)),
        # a 100 000-gene species with nine-digit GeneIDs, as real wheat has
        Taxon(4565, "Triticum aestivum", "bread wheat", gene_base=120_000_007, gene_step=7,
              gene_count=100_000, aliases=("wheat",)),
    )


@dataclass
class TaxonTree:
    """The taxa, found by tax ID or any of their names (case-insensitive)."""

    taxa: tuple[Taxon, ...] = field(default_factory=default_taxa)

    def __post_init__(self) -> None:
        self._by_id = {taxon.tax_id: taxon for taxon in self.taxa}
        self._by_name: dict[str, Taxon] = {}
        for taxon in self.taxa:
            for name in (taxon.name, taxon.common_name, *taxon.aliases):
                if name:
                    self._by_name[name.casefold()] = taxon
        self._children: dict[int, list[Taxon]] = {}
        for taxon in self.taxa:
            if taxon.parent is not None:
                self._children.setdefault(taxon.parent, []).append(taxon)
        # the genes' owners, by the range their run spans: fate() asks for every GeneID
        self._spans = sorted((t.gene_base, t.gene_base + t.gene_step * t.gene_count, t)
                             for t in self.taxa if t.gene_count)
        self._fixed = {gene_id: t for t in self.taxa for gene_id in t.fixed_genes}

    def find(self, query: str) -> Taxon | None:
        """The taxon a tax ID or a name names (as the API's ``taxon`` takes either)."""
        text = query.strip()
        if text.isascii() and text.isdigit():
            return self._by_id.get(int(text))
        return self._by_name.get(text.casefold())

    def owner(self, gene_id: int) -> Taxon | None:
        """The taxon at which ``gene_id`` is annotated, if any."""
        if (fixed := self._fixed.get(gene_id)) is not None:
            return fixed
        for low, high, taxon in self._spans:
            if low <= gene_id < high:
                return taxon if taxon.has_own(gene_id) else None
        return None

    def subtree(self, taxon: Taxon) -> Iterator[Taxon]:
        """``taxon`` and every taxon below it, parents before children."""
        yield taxon
        for child in self._children.get(taxon.tax_id, ()):
            yield from self.subtree(child)

    @functools.cached_property
    def species_with_genes(self) -> tuple[Taxon, ...]:
        return tuple(t for t in self.taxa if t.gene_count or t.fixed_genes)
