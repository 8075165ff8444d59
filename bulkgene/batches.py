"""Cut a stream of unique GeneIDs into numbered batches; batch b is the same on every run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to 1000 GeneIDs fetched and committed together; ``index`` counts from 0."""

    index: int
    gene_ids: tuple[int, ...]


def make_batches(gene_ids: Iterable[int], batch_size: int) -> Iterator[Batch]:
    """Consecutive batches of ``batch_size`` IDs (the last may be shorter)."""
    iterator = iter(gene_ids)
    index = 0
    while chunk := tuple(islice(iterator, batch_size)):
        yield Batch(index, chunk)
        index += 1
