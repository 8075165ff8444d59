"""``bulkgene status``: progress and accounting of every task of a directory, read from disk only."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bulkgene import durable
from bulkgene.budget import LeaseView
from bulkgene.budget.record import shown
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


def _plan_header(directory: Path) -> idplan.PlanHeader | None:
    """The input's plan: in the task's directory, or an array's DIR."""
    for place in (directory, directory.parent):
        if (header := idplan.read_header(place)) is not None:
            return header
    return None


def _starting(directory: Path, running: bool | None) -> TaskStatus:
    return TaskStatus(
        directory=str(directory), task_index=0, task_count=1, batches_total=None,
        batches_committed=0, batches_failed=0, batches_pending=None, requested=None, found=0,
        missing=0, unverified=0, failed_ids=0, pending_ids=None, rejected=None, records=0,
        requests_all_runs=0, throttled_all_runs=0, last_activity=time.time(),
        latest_run_elapsed_s=0.0, latest_run_ids_per_s=0.0,
        eta_s=None, running=running, starting=True, complete=False)


def task_status(directory: Path) -> TaskStatus:
    """The status of one task directory; StateError if it holds no run at all."""
    running = lock_running(directory)
    state = ckpt.load(directory)
    if state is None:
        if running is not False:
            return _starting(directory, running)
        listing = listing_progress(directory) or listing_progress(directory.parent)
        if listing is not None:
            raise StateError(f"{directory} has no checkpoint.json yet: {listing}. Re-run the "
                             "same fetch command to go on from the last page listed")
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
        rewrite_pending=bool(state.rewrites), refused=totals.refused, pending_work=work)


def is_task_directory(path: Path) -> bool:
    """Whether ``path`` is one array task's directory (rather than a run's DIR)."""
    name = path.name
    return (name.startswith(TASK_DIR_PREFIX) and name[len(TASK_DIR_PREFIX):].isdigit()
            and (path / CHECKPOINT_NAME).exists())


def incomplete_reasons(statuses: list[TaskStatus], whole_array: bool = True) -> list[str]:
    """Why a directory isn't complete, in words that say what to do; [] when it is.

    ``whole_array``: the statuses are every task of a DIR, so a task that never wrote
    anything counts; for one task's own directory only that task is judged.
    """
    reasons: list[str] = []
    expected = max((s.task_count for s in statuses), default=1)
    present = {s.task_index for s in statuses if not s.starting}
    if expected > 1 and whole_array:
        absent = sorted(set(range(expected)) - present)
        if absent:
            names = ", ".join(task_dir_name(i) for i in absent[:10])
            reasons.append(f"{len(absent)} of {expected} array tasks have written nothing "
                           f"({names}{', ...' if len(absent) > 10 else ''}): run them")
    for s in statuses:
        name = Path(s.directory).name if expected > 1 else s.directory
        if s.starting:
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
    """Every task of ``out_dir``; StateError if it holds no run."""
    directories = task_directories(out_dir)
    if not directories and (out_dir / LOCK_NAME).exists():
        directories = [out_dir]  # a run's first moments: locked, its checkpoint not yet written
    if not directories and (listing := listing_progress(out_dir)) is not None:
        raise StateError(f"{out_dir} has no checkpoint.json yet: {listing}. Re-run the same "
                         "fetch command to go on from the last page listed")
    if not directories:
        raise StateError(f"{out_dir} holds no bulkgene run (no checkpoint.json, no task-* "
                         "directories); check the path given to --out")
    return [task_status(directory) for directory in directories]


_RAW = 4096  # JSON keeps whole values (a lease is at most 4 KiB)


def as_json(statuses: list[TaskStatus], leases: list[LeaseView] | None = None,
            whole_array: bool = True) -> bytes:
    tasks = [asdict(s) for s in statuses]
    total = {key: sum(t[key] or 0 for t in tasks) for key in (
        "batches_committed", "batches_failed", "found", "missing", "failed_ids", "records",
        "requests_all_runs", "throttled_all_runs", "missing_discontinued", "missing_replaced",
        "missing_not_in_history", "missing_refused", "followed", "refused")}
    total["batches_total"] = (None if any(s.batches_total is None for s in statuses)
                              else sum(s.batches_total or 0 for s in statuses))
    total["requested"] = (None if any(s.requested is None for s in statuses)
                          else sum(s.requested or 0 for s in statuses))
    total["pending_ids"] = (None if any(s.pending_ids is None for s in statuses)
                            else sum(s.pending_ids or 0 for s in statuses))
    total["complete"] = not incomplete_reasons(statuses, whole_array)
    total["running"] = sum(1 for s in statuses if s.running)
    # a lease is another user's file: its strings are escaped here too (JSON leaves C1
    # controls and bidi overrides raw, and `status --json` is often read on a terminal)
    budget = [{"host": shown(view.record.host, _RAW), "pid": view.record.pid,
               "out_dir": shown(view.record.out_dir, _RAW),
               "state": shown(view.record.state, _RAW), "rate_rps": view.record.rate_rps,
               "share_rps": view.record.share_rps, "budget_rps": view.record.total_rps,
               "heartbeat_age_s": round(view.heartbeat_age_s, 1)} for view in leases or []]
    return orjson.dumps({"tasks": tasks, "total": total, "budget_leases": budget},
                        option=orjson.OPT_INDENT_2) + b"\n"


def leases_table(leases: list[LeaseView]) -> str:
    """The processes sharing this directory's key budget now, one line each (what others
    wrote is escaped: no terminal escape, line break or forged line gets through)."""
    totals = [view.record.total_rps for view in leases if 1 <= view.record.total_rps <= 1000]
    total = f"{min(totals):g}" if totals else "?"
    lines = [f"the key's {total} requests/s are shared live by {len(leases)} process(es):"]
    for view in leases:
        record = view.record
        lines.append(f"  {shown(record.host, 64)} pid {record.pid}  {shown(record.state, 16)}  "
                     f"{record.rate_rps:.2f}/s of a {record.share_rps:.2f}/s share  "
                     f"-> {shown(record.out_dir)}")
    return "\n".join(lines)


def no_lease_hint(statuses: list[TaskStatus], searched: list[Path]) -> str | None:
    """Why a running task shows no lease: it has none (--rate), or it is elsewhere."""
    if not any(s.running for s in statuses):
        return None
    return (f"no budget lease of this run was found (looked in {', '.join(map(str, searched))}): "
            "a run with --rate takes none; for one started with --budget-dir D (or "
            "BULKGENE_BUDGET_DIR), run `bulkgene status DIR --budget-dir D`")


def _age(timestamp: float) -> str:
    if not timestamp:
        return "-"
    seconds = max(0.0, time.time() - timestamp)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _known(value: int | None) -> str:
    return "?" if value is None else str(value)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def history_line(statuses: list[TaskStatus]) -> str | None:
    """What the gene history says of the missing GeneIDs (after explain), or None."""
    classes = [sum(s.missing_discontinued for s in statuses),
               sum(s.missing_replaced for s in statuses),
               sum(s.missing_not_in_history for s in statuses),
               sum(s.missing_refused for s in statuses)]
    followed = sum(s.followed for s in statuses)
    if not any(classes) and not followed:
        return None
    missing = sum(s.missing for s in statuses)
    text = (f"missing, by the gene history: {classes[0]} discontinued, {classes[1]} replaced "
            f"by a live GeneID, {classes[2]} not in the history")
    if classes[3]:
        text += f", {classes[3]} refused by the server and not in the history"
    if missing > sum(classes):
        text += f", {missing - sum(classes)} not explained yet (bulkgene explain)"
    if followed:
        text += f"; {followed} found through a replaced GeneID's live successor"
    return text


def refused_line(statuses: list[TaskStatus], run_dir: Path) -> str | None:
    """The GeneIDs the server refused (never answered, perhaps live), and what to do; or None."""
    refused = sum(s.refused for s in statuses)
    if not refused:
        return None
    return (f"refused: {refused} GeneIDs were refused by the server (REJECTED_BY_SERVER in "
            "missing.tsv): never answered, they may well be live genes. Fetch them again "
            f"with: bulkgene retry {run_dir}")


def as_table(statuses: list[TaskStatus]) -> str:
    header = ("task", "batches", "failed", "IDs", "pending", "found", "missing", "records",
              "throttled", "last run", "IDs/s", "ETA", "updated", "state")
    rows = []
    for s in statuses:
        state = ("starting" if s.starting else "running" if s.running
                 else "locked elsewhere" if s.running is None
                 else "complete" if s.complete else "incomplete")
        rows.append((Path(s.directory).name, f"{s.batches_committed}/{s.batches_total or '?'}",
                     str(s.batches_failed), _known(s.requested), _known(s.pending_ids),
                     str(s.found), str(s.missing), str(s.records), str(s.throttled_all_runs),
                     f"{s.latest_run_elapsed_s:.0f}s", f"{s.latest_run_ids_per_s:.0f}",
                     _eta(s.eta_s),
                     _age(s.last_activity), state))
    if len(statuses) > 1:
        known = all(s.batches_total is not None for s in statuses)
        rows.append(("total",
                     f"{sum(s.batches_committed for s in statuses)}/"
                     f"{sum(s.batches_total or 0 for s in statuses) if known else '?'}",
                     str(sum(s.batches_failed for s in statuses)),
                     _known(None if any(s.requested is None for s in statuses)
                            else sum(s.requested or 0 for s in statuses)),
                     _known(None if any(s.pending_ids is None for s in statuses)
                            else sum(s.pending_ids or 0 for s in statuses)),
                     str(sum(s.found for s in statuses)), str(sum(s.missing for s in statuses)),
                     str(sum(s.records for s in statuses)),
                     str(sum(s.throttled_all_runs for s in statuses)),
                     f"{max(s.latest_run_elapsed_s for s in statuses):.0f}s",
                     f"{sum(s.latest_run_ids_per_s for s in statuses):.0f}",
                     _eta(max((s.eta_s for s in statuses if s.eta_s is not None), default=None)),
                     _age(max(s.last_activity for s in statuses)),
                     f"{sum(1 for s in statuses if s.running)} running"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    table = "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                      .rstrip() for row in [header, *rows])
    return (table + "\nlast run, IDs/s and ETA: the latest run alone (summary.json is that "
            "run's account); batches, IDs and throttled: all runs together")
