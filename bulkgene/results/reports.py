"""The side reports of every task read as one: missing.tsv, replaced.tsv, and who asked for a gene.

A report is read only up to the length its task's checkpoint committed, as the shards are:
rows a killed run appended after it, or anyone else's, are not the run's. ``bulkgene
explain`` adds columns to every row (``history``, ``current_gene_id``, ...) by a rewrite the
checkpoint commits too (output/rewrite.py), so a task's report has a fetch's header or an
explained one, and the run's report takes the union of its tasks' columns. What the disk
holds is untrusted: a report that is not a regular file, is gone while its checkpoint
committed rows, or holds a malformed row within its committed length is a StateError.
"""

from __future__ import annotations

import bisect
import os
import stat
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bulkgene import durable, layout
from bulkgene.errors import StateError
from bulkgene.input.idset import IdBitmap
from bulkgene.results.explained import row_problem
from bulkgene.results.rundir import TaskFiles, read_blocks

_HEADERS = {layout.MISSING_NAME: layout.MISSING_HEADER,
            layout.REPLACED_NAME: layout.REPLACED_HEADER}


@dataclass(frozen=True)
class _Source:
    """One task's report: where its committed version is, how long, and what to verify."""

    path: Path
    length: int
    run_dir: Path


@dataclass
class Report:
    """One side report of the whole run: the union of its tasks' columns, and its rows."""

    name: str
    columns: list[str] = field(default_factory=list)
    sources: list[_Source] = field(default_factory=list)

    def rows(self) -> Iterator[dict[str, str]]:
        """Each committed row as column -> text, task after task (a column a task lacks is
        ''); StateError for a row that is not what bulkgene writes."""
        for source in self.sources:
            header: list[str] | None = None
            explained = False
            number = 0
            for block in read_blocks(source.path, source.length):
                for line in block.splitlines():
                    number += 1
                    if header is None:
                        header, explained = _header_of(line, source, self.name)
                        continue
                    fields = line.split(b"\t")
                    problem = _row_problem(fields, self.name, explained)
                    if problem is not None:
                        raise _malformed(source, number, problem)
                    row = dict.fromkeys(self.columns, "")
                    row.update(zip(header, (cell.decode() for cell in fields), strict=True))
                    yield row


def _malformed(source: _Source, number: int, problem: str) -> StateError:
    return StateError(
        f"{source.path}:{number}: {problem}. bulkgene never writes such a row: the report was "
        f"changed outside bulkgene. Run `bulkgene verify {source.run_dir}` to see every "
        "problem; to repair, put the file back from a backup, or fetch the list again with "
        "--restart (the old run is moved aside, nothing is deleted)")


def _header_of(line: bytes, source: _Source, name: str) -> tuple[list[str], bool]:
    """The columns of a report's first line, and whether it is explained."""
    own = _HEADERS[name]
    if line + b"\n" not in (own, layout.explained_header(own)):
        raise _malformed(source, 1, "its header is neither a fetch's nor an explained one")
    return line.decode().split("\t"), line + b"\n" != own


def _row_problem(fields: list[bytes], name: str, explained: bool) -> str | None:
    """What is wrong with a committed row (verify's checks, results/explained.py), or None."""
    try:
        for cell in fields:
            cell.decode()
    except UnicodeDecodeError:
        return "not UTF-8 text"
    ids = fields[:1] if name == layout.MISSING_NAME else fields[:2]
    if len(fields) < 2 or not all(cell.isdigit() for cell in ids):
        return f"{' and '.join(_HEADERS[name].decode().split()[:len(ids)])} not a GeneID"
    if explained:
        return row_problem(fields, name == layout.MISSING_NAME)
    return None if len(fields) == 2 else f"{len(fields)} columns, not 2"


def _committed_source(task: TaskFiles, name: str) -> _Source | None:
    """Task's report ``name`` as its checkpoint committed it; None if it committed none."""
    path = task.report_path(name)
    length = task.length(name)
    what_to_do = (f"Run `bulkgene verify {task.verify_dir}` to see every problem; to repair, "
                  "put the file back from a backup, or fetch the list again with --restart "
                  "(the old run is moved aside, nothing is deleted)")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        if length > 0:
            raise StateError(f"{path} is gone, but its checkpoint committed {length} bytes of "
                             f"it: what it said is lost. {what_to_do}") from None
        return None
    if not stat.S_ISREG(mode):
        raise StateError(f"{path} is not a regular file (a FIFO, a link, a directory...): "
                         f"bulkgene's report was replaced outside bulkgene, so what it said "
                         f"can't be read. {what_to_do}")
    return _Source(path, length, task.verify_dir) if length > 0 else None


def read_report(tasks: list[TaskFiles], name: str) -> Report:
    """``name`` (missing.tsv or replaced.tsv) of every task, as one report."""
    report = Report(name)
    for task in tasks:
        source = _committed_source(task, name)
        if source is None:
            continue
        with durable.open_read(source.path) as handle:
            first = handle.readline(min(source.length, 1 << 16))
        if first.endswith(b"\n"):
            header, _ = _header_of(first.rstrip(b"\n"), source, name)
            for column in header:
                if column not in report.columns:
                    report.columns.append(column)
        report.sources.append(source)
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
