"""The accounting of a run (summary.json and the last line on stderr), and the exit code it implies."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from bulkgene.errors import EXIT_FAILED_BATCHES, EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK


@dataclass
class Summary:
    """requested = found + missing + failed + pending + unverified; the rest are beside it.

    ``unverified`` is non-zero only for TSV without a GeneID column, where the rows can't
    say which IDs they answer.

    ``requested`` and what adds up to it are this task's share; ``duplicates`` and
    ``rejected`` describe the whole input, so every task of an array reports the same.
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
        text = (f"requested {self.requested} = found {self.found} + missing {self.missing} + "
                f"failed {self.failed}")
        if self.pending:
            text += f" + pending {self.pending}"
        if self.unverified:
            text += f" + unverified {self.unverified} (TSV without a gene-id column)"
        text += (f"; {self.records} records, {self.duplicates} duplicates, {self.rejected} "
                 f"rejected lines, {self.requests} requests ({self.retries} retries, "
                 f"{self.throttled} throttled) in {self.elapsed_s:.1f} s")
        return text
