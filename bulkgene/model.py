"""The types the stages hand each other: a batch, the records of its answer, its outcome."""

from __future__ import annotations

from dataclasses import dataclass

# the reason missing.tsv gives for a GeneID the server refused: a request naming it failed
# as a whole (400, or NCBI 18.23's 404), and so did one naming it alone
REJECTED_BY_SERVER = "REJECTED_BY_SERVER"


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to 1000 GeneIDs fetched and committed together; ``index`` counts from 0."""

    index: int
    gene_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Record:
    """One line to write: its GeneID (None: a TSV without one), the IDs it answers."""

    gene_id: int | None
    queries: tuple[int, ...]
    line: bytes

    @property
    def is_replacement(self) -> bool:
        """The gene answers only other IDs (merged or replaced): none of its queries is itself."""
        return self.gene_id is not None and self.gene_id not in self.queries


@dataclass(frozen=True)
class BatchOutcome:
    """A batch fetched completely: what to write and how to account for it."""

    batch: Batch
    records: list[Record]
    found: int
    missing: list[tuple[int, str]]
    header: bytes | None = None  # TSV: the header line, for the top of a new shard
    unverified: int = 0  # TSV without a GeneID column: IDs neither found nor missing


@dataclass(frozen=True)
class BatchFailure:
    """A batch that could not be fetched after every retry; a re-run tries it again."""

    batch: Batch
    reason: str


BatchResult = BatchOutcome | BatchFailure


@dataclass(frozen=True)
class BatchWritten:
    """What the writer durably wrote for one outcome: the counts the checkpoint adds."""

    batch_index: int
    found: int
    missing: int
    replaced: int
    records: int
    unverified: int


@dataclass(frozen=True)
class CommitReceipt:
    """What one commit made durable; the event loop applies it to the checkpoint it owns."""

    written: list[BatchWritten]
    failed: list[tuple[int, int]]  # (batch index, IDs in it)
    file_lengths: dict[str, int]
