"""What missing.tsv says in sum: its rows, and how many of them the server refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bulkgene import durable
from bulkgene.layout import MISSING_NAME
from bulkgene.model import REJECTED_BY_SERVER

_REFUSED = REJECTED_BY_SERVER.encode()


@dataclass(frozen=True)
class MissingCounts:
    """``rows`` of missing.tsv (its header aside), ``refused`` of them REJECTED_BY_SERVER."""

    rows: int
    refused: int


def missing_counts(directory: Path) -> MissingCounts | None:
    """The counts of ``directory``'s missing.tsv, None if it has none."""
    path = directory / MISSING_NAME
    if not path.exists():
        return None
    lines = refused = 0
    with durable.open_read(path) as handle:
        for line in handle:
            lines += 1
            # gene_id, reason (and after `bulkgene explain`, the history's columns)
            fields = line.rstrip(b"\r\n").split(b"\t", 2)
            refused += len(fields) > 1 and fields[1] == _REFUSED
    return MissingCounts(max(0, lines - 1), refused)  # an empty file: no header either


def mostly_refused_message(refused: int, answered: int, recorded: bool = True) -> str:
    """What to say about a run the server refused most of, and what to do; ``recorded``:
    the refusals are rows of missing.tsv (else the run stopped before committing them)."""
    if recorded:
        said = (f"the server refused {refused} GeneIDs one by one (REJECTED_BY_SERVER in "
                f"{MISSING_NAME}) and answered only {answered}: that is not")
    else:
        said = (f"the server refused {refused} GeneIDs one by one and answered only "
                f"{answered}, so the run stopped in the middle of its batches: the refusals "
                "of the batches in flight were not recorded (their GeneIDs are still "
                f"pending, not in {MISSING_NAME}). That is not")
    return (f"{said} a few bad IDs in the list, and no result. Either the list holds "
            "something other than GeneIDs NCBI "
            "takes (another column of a table: --column; other identifiers: convert them "
            "first), or the server refuses nearly everything (check --base-url; `bulkgene "
            "doctor`). Fix the cause, then fetch again with --restart.")
