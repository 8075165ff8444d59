"""The types the stages hand each other: a batch, its records and outcome, a run's account and progress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

import orjson

from bulkgene.errors import EXIT_FAILED_BATCHES, EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK

# the reason missing.tsv gives for a GeneID the server refused: a request naming it failed
# as a whole (400, or NCBI 18.23's 404), and so did one naming it alone
REJECTED_BY_SERVER = "REJECTED_BY_SERVER"


@dataclass(frozen=True, slots=True)
class OnBehalf:
    """Who a grown run's batch fetches for (input/segments.py): for each GeneID fetched, the
    GeneIDs it answers for, each with the row it had in missing.tsv before.

    ``rekey``: the fetched GeneIDs are live successors of replaced ones (--follow-replaced),
    and what comes back is recorded with the original GeneIDs as its query; otherwise they
    are fetched again for themselves (retry).
    """

    rekey: bool
    rows: Mapping[int, tuple[tuple[int, bytes], ...]]


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to 1000 GeneIDs fetched and committed together; ``index`` counts from 0."""

    index: int
    gene_ids: tuple[int, ...]
    behalf: OnBehalf | None = None  # set in a grown run's retry and follow batches


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
    followed: int = 0  # found through the live successor of a replaced GeneID
    # rows written to missing.tsv with an explanation, by class
    missing_discontinued: int = 0
    missing_replaced: int = 0
    missing_not_in_history: int = 0
    missing_refused: int = 0
    refused: int = 0  # rows written to missing.tsv as REJECTED_BY_SERVER


@dataclass(frozen=True)
class CommitReceipt:
    """What one commit made durable; the event loop applies it to the checkpoint it owns."""

    written: list[BatchWritten]
    failed: list[tuple[int, int]]  # (batch index, IDs in it)
    file_lengths: dict[str, int]

@dataclass
class Summary:
    """requested = found + missing + failed + pending + unverified; the rest are beside it.

    ``unverified`` is non-zero only for TSV without a GeneID column, where the rows can't
    say which IDs they answer.

    ``requested`` and what adds up to it are this task's share; ``duplicates`` and
    ``rejected`` describe the whole input, so every task of an array reports the same (its
    end line leaves them to the array's merged line, which counts them once).
    """

    out_dir: str
    requested: int = 0
    found: int = 0
    missing: int = 0
    failed: int = 0
    pending: int = 0
    unverified: int = 0
    duplicates: int = 0
    rejected: int = 0
    records: int = 0
    replaced: int = 0
    batches: int = 0
    batches_committed: int = 0
    batches_failed: int = 0
    failed_batch_indexes: list[int] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    bytes_received: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    error: str | None = None
    # missing GeneIDs by what NCBI's gene history says of them (`bulkgene explain`); the
    # rest of ``missing`` is not explained yet
    missing_discontinued: int = 0
    missing_replaced: int = 0
    missing_not_in_history: int = 0
    missing_refused: int = 0  # refused by the server, and the history doesn't list them
    followed: int = 0  # found through the live successor of a replaced GeneID
    # missing GeneIDs the server refused (REJECTED_BY_SERVER): never answered, and perhaps
    # live; `bulkgene retry` asks for them again
    refused: int = 0
    task_index: int = 0
    task_count: int = 1

    @property
    def explained(self) -> int:
        return (self.missing_discontinued + self.missing_replaced + self.missing_not_in_history
                + self.missing_refused)

    def reconciles(self) -> bool:
        return self.requested == (self.found + self.missing + self.failed + self.pending
                                  + self.unverified)

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.error is None and self.failed == 0 and self.pending == 0

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_FATAL
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.failed or self.pending:
            return EXIT_FAILED_BATCHES
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["complete"] = self.complete
        data["exit_code"] = self.exit_code
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"

    def line(self) -> str:
        """The one-line account printed at the end of every run."""
        text = (f"task {self.task_index} of {self.task_count}: " if self.task_count > 1 else "")
        text += self.account()
        # the list's duplicates and rejected lines belong to no one task: the array's
        # merged account states them once
        listed = (f", {self.duplicates} duplicates, {self.rejected} rejected lines"
                  if self.task_count == 1 else "")
        text += (f"; {self.records} records{listed}; this run: {self.requests} requests "
                 f"({self.retries} retries, {self.throttled} throttled) in {self.elapsed_s:.1f} s")
        if self.refused:  # never answered: they may be live genes, and a retry may get them
            text += (f"; {self.refused} GeneIDs refused by the server, never answered "
                     f"(bulkgene retry {self.run_dir})")
        return text

    def account(self) -> str:
        """``requested N = found + missing (by class) + failed [+ pending]``."""
        text = f"requested {self.requested} = found {self.found}"
        if self.followed:
            text += f" ({self.followed} through a replaced GeneID's live successor)"
        text += f" + missing {self.missing}"
        if self.explained:
            classes = [f"{self.missing_discontinued} discontinued",
                       f"{self.missing_replaced} replaced",
                       f"{self.missing_not_in_history} not in history"]
            if self.missing_refused:
                classes.append(f"{self.missing_refused} refused and not in history")
            if self.explained < self.missing:
                classes.append(f"{self.missing - self.explained} not explained")
            text += f" ({', '.join(classes)})"
        text += f" + failed {self.failed}"
        if self.pending:
            text += f" + pending {self.pending}"
        if self.unverified:
            text += f" + unverified {self.unverified} (TSV without a gene-id column)"
        return text

    @property
    def run_dir(self) -> str:
        """The directory commands such as ``bulkgene retry`` take: an array task's DIR."""
        where = PurePath(self.out_dir)
        return str(where.parent) if self.task_count > 1 else self.out_dir


@dataclass(frozen=True)
class Snapshot:
    """Where a running download stands now, as its progress callback hears it."""

    batches_done: int
    batches_failed: int
    batches_total: int
    ids_done: int
    ids_total: int
    found: int
    requests: int
    retries: int
    throttled: int
    elapsed_s: float
    ids_per_s: float

    @property
    def eta_s(self) -> float | None:
        remaining = self.ids_total - self.ids_done
        if remaining <= 0:
            return 0.0
        return remaining / self.ids_per_s if self.ids_per_s > 0 else None

    def line(self) -> str:
        """The progress as one plain line (a log line every 30 s where there is no terminal)."""
        percent = 100 * self.ids_done / self.ids_total if self.ids_total else 100.0
        return (f"{percent:5.1f}% batches {self.batches_done}/{self.batches_total}"
                f"{f' ({self.batches_failed} failed)' if self.batches_failed else ''}, "
                f"IDs {self.ids_done}/{self.ids_total}, {self.ids_per_s:.0f} IDs/s, "
                f"ETA {human_duration(self.eta_s)}; {self.retries} retried, "
                f"{self.throttled} throttled")


def human_duration(seconds: float | None) -> str:
    """``seconds`` as 42s, 3m07s or 2h05m; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
