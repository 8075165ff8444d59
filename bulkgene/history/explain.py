"""``bulkgene explain DIR``: every missing and replaced GeneID of a run, explained from NCBI's gene history.

For every task directory of DIR (one, or all of an array's), under that task's lock: finish
a report rewrite a kill interrupted, then read the committed rows of missing.tsv and
replaced.tsv (anything past the committed length belongs to an unfinished batch, which a
resumed fetch cuts back and fetches again) and collect their GeneIDs. The history file is
read once for the GeneIDs of all tasks together (history/chains.py). Then each task's two
reports are rewritten with five more columns (``history current_gene_id discontinued_on
symbol tax_id``) through output/rewrite.py, the checkpoint's counts of missing rows by class
changing in the same commit, and summary.json is brought up to date (an array's merged
DIR/missing.tsv, replaced.tsv and summary.json too). Running it again
explains every row afresh (a newer history may know more); rows a later fetch appends
carry empty explanation fields until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import orjson

from bulkgene import durable, layout
from bulkgene.errors import EXIT_INTERRUPTED, Interrupted, StateError
from bulkgene.history.chains import HISTORY_CLASSES, MAX_HOPS, Explained, HistoryClass, explain_ids
from bulkgene.history.source import HistorySource, LocalHistory, Progress, obtain
from bulkgene.input.idset import IdBitmap
from bulkgene.output import checkpoint as ckpt
from bulkgene.output import rewrite
from bulkgene.output.checkpoint import Checkpoint
from bulkgene.output.lock import RunLock
from bulkgene.output.rewrite import committed_rows
from bulkgene.results import merge

log = logging.getLogger("bulkgene")

_REPORTS = ((layout.MISSING_NAME, layout.MISSING_HEADER),
            (layout.REPLACED_NAME, layout.REPLACED_HEADER))


RowClass = Literal[HistoryClass, "REFUSED"]
# a missing GeneID the server refused and the history doesn't list: REFUSED, not
# NOT_IN_HISTORY, which says NCBI most likely never had it (layout.class_for_reason)
ROW_CLASSES: tuple[RowClass, ...] = (*HISTORY_CLASSES, "REFUSED")


def _no_rows() -> dict[RowClass, int]:
    return dict.fromkeys(ROW_CLASSES, 0)


@dataclass
class ExplainReport:
    """What explaining a directory found: classes of its missing and replaced GeneIDs."""

    out_dir: Path
    history: LocalHistory
    tasks: int = 0
    missing: dict[RowClass, int] = field(default_factory=_no_rows)
    replaced: dict[RowClass, int] = field(default_factory=_no_rows)
    rows: int = 0  # rows of the history file
    malformed: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    too_long: list[int] = field(default_factory=list)
    passes: int = 0

    def line(self) -> str:
        """The one-line account of what was explained."""
        missing = sum(self.missing.values())
        replaced = sum(self.replaced.values())
        refused = (f", {self.missing['REFUSED']} refused by the server and not in the history "
                   "(never answered: bulkgene retry)" if self.missing["REFUSED"] else "")
        return (f"explained {missing} missing GeneIDs: {self.missing['DISCONTINUED']} "
                f"discontinued, {self.missing['REPLACED']} replaced by a live GeneID, "
                f"{self.missing['NOT_IN_HISTORY']} not in the history{refused}; and {replaced} "
                f"GeneIDs the API answered with another GeneID, {self.replaced['REPLACED']} of "
                "them replaced by a live GeneID in the history too")


@dataclass
class _Task:
    directory: Path
    checkpoint: Checkpoint
    lock: RunLock


@contextlib.contextmanager
def locked_tasks(out_dir: Path) -> Iterator[list[_Task]]:
    """Every task of ``out_dir``, each locked and with no report rewrite pending."""
    directories = layout.task_directories(out_dir)
    if not directories:
        raise StateError(f"{out_dir} holds no bulkgene run (no checkpoint.json): pass the "
                         "--out directory of a fetch")
    tasks: list[_Task] = []
    try:
        for directory in directories:
            lock = RunLock(directory)
            lock.acquire()  # a fetch running there: refused with who holds it
            try:
                state = ckpt.load(directory)
                if state is None:
                    raise StateError(f"{directory} has no checkpoint.json: its run never "
                                     "started; run its fetch first")
                tasks.append(_Task(directory, rewrite.finish(directory, state), lock))
            except BaseException:
                lock.release()
                raise
        yield tasks
    finally:
        for task in tasks:
            task.lock.release()


def _gene_ids(task: _Task, into: IdBitmap) -> None:
    for name, _ in _REPORTS:
        length = task.checkpoint.file_lengths.get(name, 0)
        for row in committed_rows(task.directory / name, length):
            into.add(int(row.split(b"\t", 1)[0]))


def _writer(source: Path, length: int, header: bytes, explained: Explained,
            counts: dict[RowClass, int]) -> Callable[[BinaryIO], None]:
    missing = header == layout.MISSING_HEADER  # its second field is the reason

    def write(handle: BinaryIO) -> None:
        handle.write(layout.explained_header(header))
        lines: list[bytes] = []
        for row in committed_rows(source, length):
            fields = row.split(b"\t", 2)
            explanation = explained.explanation(int(fields[0]))
            text = explanation.fields()
            history: RowClass = explanation.history
            if (missing and history == "NOT_IN_HISTORY"
                    and fields[1] == layout.REFUSED_REASON):
                history = "REFUSED"
                text = b"REFUSED" + text[len(b"NOT_IN_HISTORY"):]
            counts[history] += 1
            lines.append(fields[0] + b"\t" + fields[1] + b"\t" + text + b"\n")
            if len(lines) >= 8192:
                handle.write(b"".join(lines))
                lines.clear()
        handle.write(b"".join(lines))
    return write


def _explain_task(task: _Task, explained: Explained, report: ExplainReport) -> None:
    counts = {name: _no_rows() for name, _ in _REPORTS}
    writers = {name: _writer(task.directory / name, task.checkpoint.file_lengths.get(name, 0),
                             header, explained, counts[name])
               for name, header in _REPORTS}
    missing = counts[layout.MISSING_NAME]

    def update(state: Checkpoint) -> None:
        state.totals.missing_discontinued = missing["DISCONTINUED"]
        state.totals.missing_replaced = missing["REPLACED"]
        state.totals.missing_not_in_history = missing["NOT_IN_HISTORY"]
        state.totals.missing_refused = missing["REFUSED"]

    task.checkpoint = rewrite.replace(task.directory, task.checkpoint, writers, update)
    for name, tally in ((layout.MISSING_NAME, report.missing),
                        (layout.REPLACED_NAME, report.replaced)):
        for history, count in counts[name].items():
            tally[history] += count
    update_summary(task.directory, task.checkpoint)


# summary.json's counts that a rewrite of the reports may change (found + missing stays)
_REWRITTEN_COUNTS = ("found", "missing", "replaced", "missing_discontinued", "missing_replaced",
                     "missing_not_in_history", "missing_refused", "followed", "refused")


def update_summary(directory: Path, state: Checkpoint) -> None:
    """summary.json with the counts a report rewrite changed (if there is one yet)."""
    path = directory / layout.SUMMARY_NAME
    try:
        summary = orjson.loads(durable.read_bytes(path))
    except (OSError, StateError, orjson.JSONDecodeError):
        return  # the next run writes it
    if not isinstance(summary, dict):
        return
    for name in _REWRITTEN_COUNTS:
        summary[name] = getattr(state.totals, name)
    durable.write_atomically(path, orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")


def explain_with(out_dir: Path, history: LocalHistory, max_hops: int = MAX_HOPS,
                 stop: threading.Event | None = None) -> ExplainReport:
    """Explain every task of ``out_dir`` from the local history file (a thread's work).

    Once ``stop`` is set it raises Interrupted at the next safe point: while the history is
    read (nothing changed yet), or between two tasks' rewrites (each is whole or untouched).
    """
    report = ExplainReport(out_dir, history)
    with locked_tasks(out_dir) as tasks:
        wanted = IdBitmap()
        for task in tasks:
            _gene_ids(task, wanted)
        try:
            explained = explain_ids(history.path, history.name, wanted, max_hops, stop)
        except Interrupted as exc:
            raise Interrupted(f"{exc}: no report was changed") from None
        for done, task in enumerate(tasks):
            if stop is not None and stop.is_set():
                raise Interrupted(f"the reports were being rewritten: {_tasks(done)} of "
                                  f"{len(tasks)} explained, the others untouched")
            _explain_task(task, explained, report)
        report.tasks = len(tasks)
    report.rows, report.passes = explained.rows, explained.passes
    report.malformed, report.examples = explained.malformed, explained.examples
    report.cycles, report.too_long = explained.cycles, explained.too_long
    _rebuild_merged(out_dir)
    return report


def _tasks(count: int) -> str:
    return f"{count} task" + ("" if count == 1 else "s")


def _rebuild_merged(out_dir: Path) -> None:
    """An array's merged DIR/missing.tsv, replaced.tsv and summary.json follow its tasks'
    (results/merge.py): after explaining the array, or one task of a complete one."""
    if merge.is_array(out_dir):
        merge.rebuild_merged(out_dir)
    elif (merge.is_array(out_dir.parent) and out_dir in layout.task_directories(out_dir.parent)
          and merge.merged_summary(out_dir.parent)["complete"]):
        merge.rebuild_merged(out_dir.parent)


def _check_unlocked(out_dir: Path) -> None:
    """StateError now, before a long download, if a process is writing a task of ``out_dir``
    (the locks are taken for real, and held, once the history is here)."""
    for directory in layout.task_directories(out_dir):
        lock = RunLock(directory)
        lock.acquire()  # a fetch running there: refused with who holds it
        lock.release()


class _Stop:
    """SIGTERM/SIGINT/SIGHUP while explaining: the first stops at the next safe point (the
    download is cancelled, the partial body kept), a second one at once (every step is
    safe to kill)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal = ""
        self.download: asyncio.Future[LocalHistory] | None = None

    def receive(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            os.write(2, f"bulkgene: {name} again: stopping at once; every file is whole "
                        "(what a step left half-done is finished or undone by the next "
                        "start). Run the same command again.\n".encode())
            os._exit(EXIT_INTERRUPTED)
        self.signal = name
        self.event.set()
        if self.download is not None:
            self.download.cancel()


class _Downloaded:
    """The download's progress callback that also remembers how far it got."""

    def __init__(self, on_download: Progress | None) -> None:
        self.on_download = on_download
        self.done = 0
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        if self.on_download is not None:
            self.on_download(done, total)

    def so_far(self) -> str:
        if not self.done:
            return "nothing had arrived yet"
        total = f" of {self.total / 1e6:.1f}" if self.total else ""
        return f"{self.done / 1e6:.1f}{total} MB had arrived, and are kept in the cache"


async def explain(out_dir: Path, source: HistorySource, on_download: Progress | None = None,
                  max_hops: int = MAX_HOPS, *, handle_signals: bool = False) -> ExplainReport:
    """Explain every missing and replaced GeneID of the run in ``out_dir``.

    The history is had first (downloaded into the cache if need be, reporting to
    ``on_download``), then read under the tasks' locks. Raises HistoryError or StateError;
    with ``handle_signals``, SIGTERM/SIGINT/SIGHUP raise Interrupted (exit 75) saying what
    they interrupted, at the next safe point.
    """
    from bulkgene.run.download import held_signals

    if not layout.task_directories(out_dir):
        raise StateError(f"{out_dir} holds no bulkgene run (no checkpoint.json): pass the "
                         "--out directory of a fetch")
    _check_unlocked(out_dir)
    stop = _Stop()
    progress = _Downloaded(on_download)
    with held_signals(stop.receive if handle_signals else None):
        stop.download = asyncio.ensure_future(obtain(source, progress, stop.event))
        try:
            history = await stop.download
        except asyncio.CancelledError:
            if not stop.event.is_set():
                raise
            raise Interrupted(
                f"{stop.signal} while the gene history was being downloaded from "
                f"{source.location} ({progress.so_far()}): no report was changed, and "
                "running the same command again resumes the download") from None
        except Interrupted as exc:  # a thread of the download saw the signal
            raise Interrupted(f"{stop.signal} while {exc}: no report was changed, and "
                              "running the same command again goes on from there") from None
        finally:
            stop.download = None
        try:
            if stop.event.is_set():
                raise Interrupted("the gene history was about to be read: no report was "
                                  "changed")
            return await asyncio.to_thread(explain_with, out_dir, history, max_hops,
                                           stop.event)
        except Interrupted as exc:
            kept = " (the downloaded copy is kept in the cache)" if source.is_url else ""
            raise Interrupted(f"{stop.signal} while {exc}; running the same command again "
                              f"explains every report{kept}") from None
