"""A batch: up to 1000 GeneIDs fetched and committed together, numbered the same on every run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to 1000 GeneIDs fetched and committed together; ``index`` counts from 0."""

    index: int
    gene_ids: tuple[int, ...]
