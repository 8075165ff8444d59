"""``bulkgene status``: progress and accounting of every task of a directory, read from disk only."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bulkgene.errors import StateError
from bulkgene.output.layout import SUMMARY_NAME
from bulkgene.run import checkpoint as ckpt
from bulkgene.run.lock import holder_alive, read_lock
from bulkgene.run.split import task_directories


@dataclass
class TaskStatus:
    """One task directory as its checkpoint, summary and lock describe it."""

    directory: str
    batches_total: int | None
    batches_committed: int
    batches_failed: int
    batches_pending: int | None
    requested: int | None
    found: int
    missing: int
    failed_ids: int
    rejected: int | None
    records: int
    requests: int
    throttled: int
    last_activity: float
    elapsed_s: float  # of the latest run, to its last commit (to now while it runs)
    ids_per_s: float  # in the latest run
    running: bool | None  # None: locked by a process on another host
    complete: bool


def task_status(directory: Path) -> TaskStatus:
    state = ckpt.load(directory)
    if state is None:
        raise StateError(f"{directory} has no checkpoint.json: nothing has been committed there")
    summary: dict[str, Any] = {}
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        summary = orjson.loads((directory / SUMMARY_NAME).read_bytes())
    holder = read_lock(directory)
    running = holder_alive(holder) if holder else False
    total = state.total_batches
    failed = len(state.failed)
    pending = None if total is None else total - state.committed_batches - failed
    totals = state.totals
    end = time.time() if running else state.updated_at
    elapsed = max(0.0, end - state.run_started_at) if state.run_started_at else 0.0
    rate = (state.ids_done - state.run_ids_at_start) / elapsed if elapsed > 0 else 0.0
    return TaskStatus(
        directory=str(directory), batches_total=total,
        batches_committed=state.committed_batches, batches_failed=failed,
        batches_pending=pending, requested=summary.get("requested"),
        found=totals.get("found", 0), missing=totals.get("missing", 0),
        failed_ids=sum(state.failed.values()), rejected=summary.get("rejected"),
        records=totals.get("records", 0), requests=totals.get("requests", 0),
        throttled=totals.get("throttled", 0), last_activity=state.updated_at,
        elapsed_s=round(elapsed, 3), ids_per_s=round(rate, 1), running=running,
        complete=pending == 0 and failed == 0 and not running,
    )


def directory_status(out_dir: Path) -> list[TaskStatus]:
    directories = task_directories(out_dir)
    if not directories:
        raise StateError(f"{out_dir} holds no bulkgene run (no checkpoint.json, no task-* "
                         "directories); check the path given to --out")
    return [task_status(directory) for directory in directories]


def as_json(statuses: list[TaskStatus]) -> bytes:
    tasks = [asdict(s) for s in statuses]
    total = {key: sum(t[key] or 0 for t in tasks) for key in (
        "batches_committed", "batches_failed", "found", "missing", "failed_ids", "records",
        "requests", "throttled")}
    total["batches_total"] = (None if any(s.batches_total is None for s in statuses)
                              else sum(s.batches_total or 0 for s in statuses))
    total["complete"] = all(s.complete for s in statuses)
    total["running"] = sum(1 for s in statuses if s.running)
    return orjson.dumps({"tasks": tasks, "total": total}, option=orjson.OPT_INDENT_2) + b"\n"


def _age(timestamp: float) -> str:
    seconds = max(0.0, time.time() - timestamp)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def as_table(statuses: list[TaskStatus]) -> str:
    header = ("task", "batches", "failed", "pending", "found", "missing", "records",
              "throttled", "elapsed", "IDs/s", "last commit", "state")
    rows = []
    for s in statuses:
        state = ("running" if s.running else "locked elsewhere" if s.running is None
                 else "complete" if s.complete else "stopped")
        rows.append((Path(s.directory).name, f"{s.batches_committed}/{s.batches_total or '?'}",
                     str(s.batches_failed), "?" if s.batches_pending is None else str(s.batches_pending),
                     str(s.found), str(s.missing), str(s.records), str(s.throttled),
                     f"{s.elapsed_s:.0f}s", f"{s.ids_per_s:.0f}", _age(s.last_activity), state))
    if len(statuses) > 1:
        known = all(s.batches_total is not None for s in statuses)
        rows.append(("total",
                     f"{sum(s.batches_committed for s in statuses)}/"
                     f"{sum(s.batches_total or 0 for s in statuses) if known else '?'}",
                     str(sum(s.batches_failed for s in statuses)),
                     str(sum(s.batches_pending or 0 for s in statuses)) if known else "?",
                     str(sum(s.found for s in statuses)), str(sum(s.missing for s in statuses)),
                     str(sum(s.records for s in statuses)),
                     str(sum(s.throttled for s in statuses)),
                     f"{max(s.elapsed_s for s in statuses):.0f}s",
                     f"{sum(s.ids_per_s for s in statuses):.0f}",
                     _age(max(s.last_activity for s in statuses)),
                     f"{sum(1 for s in statuses if s.running)} running"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in [header, *rows])
