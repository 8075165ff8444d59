"""Every GeneID written once: the set of GeneIDs seen that verify and the readers check against.

A gene is written once however many GeneIDs of the list it answers (a merged or followed
gene answers several), so a GeneID met twice in a run's shards means files changed
outside bulkgene. Readers stream the shards anyway; a roaring bitmap of what they have
seen costs a few bytes per gene and a bulk insert per block of lines.
"""

from __future__ import annotations

from pathlib import Path

from pyroaring import BitMap

from bulkgene.errors import StateError
from bulkgene.input.idset import MAX_GENE_ID


class SeenGeneIds:
    """GeneIDs seen so far: a bitmap for int32 IDs, a set for anything larger."""

    def __init__(self) -> None:
        self._bitmap = BitMap()
        self._large: set[int] = set()

    def __contains__(self, gene_id: int) -> bool:
        if 0 < gene_id <= MAX_GENE_ID:
            return gene_id in self._bitmap
        return gene_id in self._large

    def add(self, gene_id: int) -> bool:
        """Record ``gene_id``; False if it was seen before."""
        if 0 < gene_id <= MAX_GENE_ID:
            try:
                self._bitmap.add_checked(gene_id)
            except KeyError:
                return False
            return True
        if gene_id in self._large:
            return False
        self._large.add(gene_id)
        return True

    def add_all(self, gene_ids: list[int]) -> int | None:
        """Record every GeneID of a block; the first one seen before (or twice in the
        block), None if none was. Nothing is recorded when one was."""
        if gene_ids and min(gene_ids) > 0 and max(gene_ids) <= MAX_GENE_ID:
            block = BitMap(gene_ids)
            if len(block) == len(gene_ids) and not self._bitmap.intersect(block):
                self._bitmap |= block
                return None
        seen_here: set[int] = set()
        for gene_id in gene_ids:
            if gene_id in seen_here or gene_id in self:
                return gene_id
            seen_here.add(gene_id)
        for gene_id in gene_ids:
            self.add(gene_id)
        return None


def written_twice(gene_id: int, shard: Path, out_dir: Path) -> StateError:
    """The error of a reader that met ``gene_id`` a second time, in ``shard``."""
    return StateError(
        f"GeneID {gene_id} is written twice in the run in {out_dir} (again in {shard}): "
        "bulkgene writes each gene once, so the shards were changed outside bulkgene and "
        f"what they hold can't be trusted. Run `bulkgene verify {out_dir}` to see every "
        "problem; to repair, put back the directory from a backup, or fetch the list again "
        "with --restart (the old run is moved aside, nothing is deleted)")
