"""The side reports of every task read as one: missing.tsv, replaced.tsv, and who asked for a gene.

Another part of bulkgene may add columns to these reports (gene_history's explanation:
``history``, ``current_gene_id``, ...) and rewrite them, so a report is read whole (to its
last complete line) rather than to the length a checkpoint committed, and readers take
whatever columns its header names.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bulkgene import durable, layout
from bulkgene.errors import StateError
from bulkgene.input.idset import IdBitmap
from bulkgene.results.rundir import TaskFiles, read_blocks


@dataclass
class Report:
    """One side report of the whole run: the union of its tasks' columns, and its rows."""

    columns: list[str] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)

    def rows(self) -> Iterator[dict[str, str]]:
        """Each row as column -> text, task after task (a column a task lacks is '')."""
        for path in self.sources:
            header: list[str] | None = None
            for block in read_blocks(path, _size(path), torn_tail_ok=True):
                for line in block.decode("utf-8", "replace").splitlines():
                    cells = line.split("\t")
                    if header is None:
                        header = cells
                        continue
                    row = dict.fromkeys(self.columns, "")
                    row.update(zip(header, cells, strict=False))
                    yield row


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _header(path: Path) -> list[str]:
    with durable.open_read(path) as handle:
        first = handle.readline(1 << 16)
    if not first.endswith(b"\n"):
        return []
    return first.decode("utf-8", "replace").rstrip("\n").split("\t")


def read_report(tasks: list[TaskFiles], name: str) -> Report:
    """``name`` (missing.tsv or replaced.tsv) of every task, as one report."""
    report = Report()
    for task in tasks:
        path = task.directory / name
        if _size(path) <= 0:
            continue
        for column in _header(path):
            if column not in report.columns:
                report.columns.append(column)
        report.sources.append(path)
    return report


def _requested_ids(tasks: list[TaskFiles]) -> IdBitmap | None:
    """The run's requested GeneIDs (its input plan), None if the plan can't be read."""
    for task in tasks[:1]:
        for place in (task.directory, task.directory.parent):
            try:
                return IdBitmap.from_bytes(durable.read_bytes(place / layout.PLAN_BITMAP))
            except (OSError, ValueError, StateError):
                continue
    return None


class QueryMap:
    """Which requested GeneIDs each written gene answers: itself if it was asked for, and
    every ID replaced by it (replaced.tsv of every task). 16 bytes per replaced ID."""

    def __init__(self, tasks: list[TaskFiles]) -> None:
        pairs: list[tuple[int, int]] = []
        for row in read_report(tasks, layout.REPLACED_NAME).rows():
            try:
                pairs.append((int(row["returned_gene_id"]), int(row["requested_gene_id"])))
            except (KeyError, ValueError):
                continue
        pairs.sort()
        self._returned = array("q", (returned for returned, _ in pairs))
        self._requested = array("q", (requested for _, requested in pairs))
        del pairs
        targets = set(self._returned)
        requested = _requested_ids(tasks) if targets else None
        # a replacement target that was itself asked for answers itself too
        self._asked_targets = (frozenset(t for t in targets if t in requested)
                               if requested is not None else frozenset())

    def queries(self, gene_id: int) -> list[int]:
        """The requested GeneIDs ``gene_id``'s record answers, ascending."""
        start = bisect.bisect_left(self._returned, gene_id)
        end = bisect.bisect_right(self._returned, gene_id, lo=start)
        if start == end:
            return [gene_id]
        old = list(self._requested[start:end])
        if gene_id in self._asked_targets:
            old.append(gene_id)
        return sorted(set(old))
