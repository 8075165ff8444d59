"""``bulkgene status``: progress and accounting of every task of a directory, read from disk only."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bulkgene import durable
from bulkgene.config import TaskSpec
from bulkgene.errors import StateError
from bulkgene.input import plan as idplan
from bulkgene.input.taxon_fixed import listing_progress
from bulkgene.layout import (
    CHECKPOINT_NAME,
    LOCK_NAME,
    SUMMARY_NAME,
    TASK_DIR_PREFIX,
    task_dir_name,
    task_directories,
)
from bulkgene.output import checkpoint as ckpt
from bulkgene.output.lock import lock_running


@dataclass
class TaskStatus:
    """One task directory as its plan, checkpoint, summary and lock describe it."""

    directory: str
    task_index: int
    task_count: int
    batches_total: int | None
    batches_committed: int
    batches_failed: int
    batches_pending: int | None
    requested: int | None  # this task's unique IDs, from the input plan
    found: int
    missing: int
    unverified: int
    failed_ids: int
    pending_ids: int | None
    rejected: int | None
    records: int
    # every run's requests and 429s together (summary.json's `requests` are its run's alone)
    requests_all_runs: int
    throttled_all_runs: int
    last_activity: float
    latest_run_elapsed_s: float  # to its last save (to now while it runs)
    latest_run_ids_per_s: float  # found or missing IDs per second in the latest run
    eta_s: float | None  # while running, at the latest run's speed
    running: bool | None  # None: locked by a process on another host
    starting: bool  # locked, nothing committed yet
    complete: bool  # every requested ID found or missing with a reason, nothing failed
    error: str | None = None  # the fatal error that ended the latest run, if one did
    # missing GeneIDs by what the gene history says (bulkgene explain); and found ones
    # fetched through a replaced GeneID's live successor (--follow-replaced)
    missing_discontinued: int = 0
    missing_replaced: int = 0
    missing_not_in_history: int = 0
    missing_refused: int = 0
    followed: int = 0
    rewrite_pending: bool = False  # a report rewrite a kill interrupted (explain, growth)
    refused: int = 0  # missing as REJECTED_BY_SERVER: never answered (bulkgene retry)
    # what is left to fetch, part by part (the list, an --add, a retry, a follow), each with
    # the command that finishes it
    pending_work: list[idplan.Unsettled] = field(default_factory=list)
    replaced: int = 0
    retries_all_runs: int = 0
    bytes_received_all_runs: int = 0
    absent: bool = False  # an array task that has not written anything yet: its share counted
    # no checkpoint yet, no run holding the lock: the taxa's listing was interrupted; how
    # far it got, in words
    listing_interrupted: str | None = None


def _plan_header(directory: Path) -> idplan.PlanHeader | None:
    """The input's plan: in the task's directory, or an array's DIR."""
    for place in (directory, directory.parent):
        if (header := idplan.read_header(place)) is not None:
            return header
    return None


def _starting(directory: Path, running: bool | None, listing: str | None = None
              ) -> TaskStatus:
    """A task with nothing committed: starting (``running``), or stopped while it listed
    the taxa's GeneIDs (``listing``: how far it got)."""
    return TaskStatus(
        directory=str(directory), task_index=0, task_count=1, batches_total=None,
        batches_committed=0, batches_failed=0, batches_pending=None, requested=None, found=0,
        missing=0, unverified=0, failed_ids=0, pending_ids=None, rejected=None, records=0,
        requests_all_runs=0, throttled_all_runs=0, last_activity=time.time(),
        latest_run_elapsed_s=0.0, latest_run_ids_per_s=0.0,
        eta_s=None, running=running, starting=listing is None, complete=False,
        listing_interrupted=listing)


def task_status(directory: Path) -> TaskStatus:
    """The status of one task directory; StateError if it holds no run at all."""
    running = lock_running(directory)
    state = ckpt.load(directory)
    if state is None:
        if running is not False:
            return _starting(directory, running)
        listing = listing_progress(directory) or listing_progress(directory.parent)
        if listing is not None:
            return _starting(directory, False, listing)
        raise StateError(f"{directory} has no checkpoint.json: nothing has been committed there")
    summary: dict[str, Any] = {}
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        summary = orjson.loads(durable.read_bytes(directory / SUMMARY_NAME))
    task = TaskSpec(int(state.params.get("task_index", 0)), int(state.params.get("task_count", 1)))
    header = _plan_header(directory)
    batch_size = int(state.params.get("batch_size", 1000))
    # a run that grew: the segments count too, taken in by this task yet or not
    total, requested = (idplan.task_share(header.requested, header.segments, task, batch_size)
                        if header is not None else (state.total_batches, None))
    failed = len(state.failed)
    pending = None if total is None else total - state.committed_batches - failed
    totals = state.totals
    answered = state.ids_done
    failed_ids = sum(state.failed.values())
    pending_ids = None if requested is None else requested - answered - failed_ids
    work = (idplan.unsettled(header.requested, header.segments, task, batch_size,
                             lambda index: state.is_committed(index) or index in state.failed)
            if header is not None else [])
    # a report rewrite after the run (explain, a growth's taking in) is no part of its time
    end = time.time() if running else (state.run_saved_at or state.updated_at)
    elapsed = max(0.0, end - state.run_started_at) if state.run_started_at else 0.0
    rate = (answered - state.run_ids_at_start) / elapsed if elapsed > 0 else 0.0
    # an interrupted run's ETA is at its last run's speed: what a re-run would take
    eta = pending_ids / rate if pending_ids and rate > 0 else None
    return TaskStatus(
        directory=str(directory), task_index=task.index, task_count=task.count,
        batches_total=total, batches_committed=state.committed_batches, batches_failed=failed,
        batches_pending=pending, requested=requested, found=totals.found,
        missing=totals.missing, unverified=totals.unverified,
        failed_ids=failed_ids, pending_ids=pending_ids, rejected=summary.get("rejected"),
        records=totals.records, requests_all_runs=totals.requests,
        throttled_all_runs=totals.throttled, last_activity=state.updated_at,
        latest_run_elapsed_s=round(elapsed, 3), latest_run_ids_per_s=round(rate, 1),
        eta_s=None if eta is None else round(eta, 1), running=running, starting=False,
        error=summary.get("error") if not running else None,
        complete=(requested is not None and pending_ids == 0 and pending == 0 and failed == 0
                  and not running and not state.rewrites),
        missing_discontinued=totals.missing_discontinued, missing_replaced=totals.missing_replaced,
        missing_not_in_history=totals.missing_not_in_history,
        missing_refused=totals.missing_refused, followed=totals.followed,
        rewrite_pending=bool(state.rewrites), refused=totals.refused, pending_work=work,
        replaced=totals.replaced, retries_all_runs=totals.retries,
        bytes_received_all_runs=totals.bytes)


def _absent_task(out_dir: Path, index: int, count: int, batch_size: int,
                 header: idplan.PlanHeader | None) -> TaskStatus:
    """An array task that has written nothing yet: what it will have to fetch (from DIR's
    plan), so that the totals count the whole list."""
    total, requested = (idplan.task_share(header.requested, header.segments,
                                          TaskSpec(index, count), batch_size)
                        if header is not None else (None, None))
    return TaskStatus(
        directory=str(out_dir / task_dir_name(index)), task_index=index, task_count=count,
        batches_total=total, batches_committed=0, batches_failed=0, batches_pending=total,
        requested=requested, found=0, missing=0, unverified=0, failed_ids=0,
        pending_ids=requested, rejected=None, records=0, requests_all_runs=0,
        throttled_all_runs=0, last_activity=0.0, latest_run_elapsed_s=0.0,
        latest_run_ids_per_s=0.0, eta_s=None, running=False, starting=False, complete=False,
        absent=True)


def absent_tasks(out_dir: Path, statuses: list[TaskStatus]) -> list[TaskStatus]:
    """The tasks an array's plan expects that have no directory with a checkpoint yet."""
    known = [s for s in statuses if not s.starting]
    count = max((s.task_count for s in known), default=1)
    if count <= 1:
        return []
    # a task that is starting has no checkpoint to say its index: its directory's name does
    present = {s.task_index for s in known} | {
        int(Path(s.directory).name[len(TASK_DIR_PREFIX):]) for s in statuses
        if s.starting and Path(s.directory).name[len(TASK_DIR_PREFIX):].isdigit()}
    batch_size = _batch_size(known)
    header = idplan.read_header(out_dir)
    return [_absent_task(out_dir, index, count, batch_size, header)
            for index in range(count) if index not in present][:_ABSENT_SHOWN]


_ABSENT_SHOWN = 10_000  # an array of a million tasks is refused elsewhere; rows stay bounded


def _batch_size(statuses: list[TaskStatus]) -> int:
    for status in statuses:
        state = ckpt.load(Path(status.directory))
        if state is not None:
            return int(state.params.get("batch_size", 1000))
    return 1000


def is_task_directory(path: Path) -> bool:
    """Whether ``path`` is one array task's directory (rather than a run's DIR)."""
    name = path.name
    return (name.startswith(TASK_DIR_PREFIX) and name[len(TASK_DIR_PREFIX):].isdigit()
            and (path / CHECKPOINT_NAME).exists())


def one_task_note(path: Path, statuses: list[TaskStatus]) -> str | None:
    """For one array task's directory read alone: that it holds only the task's share of
    the list, and where the whole array is; None for a run's DIR."""
    if not is_task_directory(path) or not statuses:
        return None
    task = statuses[0]
    whole = idplan.read_header(path.parent)
    share = f"{task.requested} of the list's {whole.requested} GeneIDs" if (
        whole is not None and task.requested is not None) else "a share of the list"
    return (f"{path} is task {task.task_index} of the {task.task_count} of the array in "
            f"{path.parent}: it holds {share}; read {path.parent} for the whole list")


def incomplete_reasons(statuses: list[TaskStatus], whole_array: bool = True) -> list[str]:
    """Why a directory isn't complete, in words that say what to do; [] when it is.

    ``whole_array``: the statuses are every task of a DIR, so a task that never wrote
    anything counts; for one task's own directory only that task is judged.
    """
    reasons: list[str] = []
    expected = max((s.task_count for s in statuses), default=1)
    present = {s.task_index for s in statuses if not s.starting and not s.absent}
    if expected > 1 and whole_array:
        absent = sorted(set(range(expected)) - present)
        if absent:
            names = ", ".join(task_dir_name(i) for i in absent[:10])
            reasons.append(f"{len(absent)} of {expected} array tasks have written nothing "
                           f"({names}{', ...' if len(absent) > 10 else ''}): run them")
    for s in statuses:
        name = Path(s.directory).name if expected > 1 else s.directory
        if s.absent:
            continue  # said above
        if s.listing_interrupted is not None:
            listed = s.listing_interrupted.removeprefix("the taxa's GeneIDs are being listed: ")
            reasons.append(f"{name}: interrupted while listing the taxa's GeneIDs, before "
                           f"anything was fetched ({listed}): re-run the same fetch command "
                           "to go on from the last page listed")
        elif s.starting:
            directory = Path(s.directory)
            listing = listing_progress(directory) or listing_progress(directory.parent)
            reasons.append(f"{name}: a run is starting; nothing is committed yet"
                           + (f" ({listing})" if listing else ""))
        elif s.running:
            reasons.append(f"{name}: still running ({s.pending_ids} IDs pending)")
        elif s.requested is None:
            reasons.append(f"{name}: the input plan (plan.json) can't be read, so it can't be "
                           "told whether every requested ID was fetched: re-run the fetch")
        elif s.error:
            reasons.append(f"{name}: stopped by an error: {s.error}")
        elif s.rewrite_pending:
            reasons.append(f"{name}: a rewrite of missing.tsv/replaced.tsv was interrupted: "
                           "re-run the command that did it (explain, retry, --add), or the "
                           "fetch, which finishes it first")
        elif s.batches_failed:
            reasons.append(f"{name}: {s.batches_failed} batches ({s.failed_ids} IDs) failed: "
                           "re-run the same fetch command to retry them (or bulkgene retry "
                           f"{run_directory(s)})")
        elif s.pending_ids or s.pending_work:
            reasons.append(f"{name}: interrupted, {s.pending_ids} of {s.requested} IDs "
                           f"pending: {finishing(s)}")
    return reasons


def refuse_no_run(out_dir: Path) -> StateError:
    """Why ``out_dir`` holds no run: it does not exist, is a file, or holds other things."""
    where = "check the path (the directory given to the fetch: --out)"
    if not out_dir.exists():
        return StateError(f"{out_dir} does not exist: {where}")
    if not out_dir.is_dir():
        return StateError(f"{out_dir} is a file, not a run's directory: {where}")
    return StateError(f"{out_dir} holds no bulkgene run (no checkpoint.json, no task-* "
                      f"directories): {where}")


def run_directory(status: TaskStatus) -> Path:
    """The directory a command that goes on with the run takes: an array task's DIR."""
    directory = Path(status.directory)
    return directory.parent if status.task_count > 1 else directory


def finishing(status: TaskStatus) -> str:
    """What to run to finish a task's pending work, part by part."""
    parts = status.pending_work
    if not parts or all(part.kind == "list" for part in parts):
        return "re-run the same fetch command to finish"
    return "; ".join(f"{part.ids} {part.what()}: run {part.command(run_directory(status))}"
                     for part in parts)


def directory_status(out_dir: Path) -> list[TaskStatus]:
    """Every task of ``out_dir`` (an array's tasks not run yet too); StateError if it holds
    no run."""
    directories = task_directories(out_dir)
    if not directories and (out_dir / LOCK_NAME).exists():
        directories = [out_dir]  # a run's first moments: locked, its checkpoint not yet written
    if not directories and listing_progress(out_dir) is not None:
        directories = [out_dir]  # interrupted while it listed the taxa's GeneIDs
    if not directories:
        raise refuse_no_run(out_dir)
    statuses = [task_status(directory) for directory in directories]
    if not is_task_directory(out_dir):
        statuses += absent_tasks(out_dir, statuses)
        statuses.sort(key=lambda s: (s.task_index, s.directory))
    return statuses
