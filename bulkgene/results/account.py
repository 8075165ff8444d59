"""A run directory's accounting, read from its checkpoints (as ``bulkgene status`` reads it).

The checkpoints are what is committed, at every moment: a run that is going on, one that
was killed before it could write summary.json, an array with tasks not run yet (their share
counted from DIR's plan). ``summary.json`` adds only what the latest run alone knows (its
error). Network counts are every run's together (the checkpoints add them up); a summary.json
holds its own run's.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import orjson

from bulkgene import durable, layout
from bulkgene.errors import EXIT_FAILED_BATCHES, EXIT_OK, StateError
from bulkgene.input import plan as idplan
from bulkgene.results.status import (
    TaskStatus,
    directory_status,
    incomplete_reasons,
    is_task_directory,
    one_task_note,
)

_ADDED = ("found", "missing", "unverified", "records", "replaced", "batches_committed",
          "batches_failed", "missing_discontinued", "missing_replaced", "missing_not_in_history",
          "missing_refused", "followed", "refused", "requests_all_runs", "retries_all_runs",
          "throttled_all_runs", "bytes_received_all_runs")


def completeness(out_dir: Path, statuses: list[TaskStatus] | None = None) -> list[str]:
    """Why ``out_dir`` does not hold the whole list asked for, in words that say what to do;
    [] when it does. One task's directory read alone never holds the whole list."""
    try:
        statuses = statuses if statuses is not None else directory_status(out_dir)
    except StateError as exc:
        return [str(exc)]
    if note := one_task_note(out_dir, statuses):
        return [note, *incomplete_reasons(statuses, whole_array=False)]
    return incomplete_reasons(statuses)


def _known_sum(values: list[int | None]) -> int | None:
    return None if any(value is None for value in values) else sum(v or 0 for v in values)


def _list_counts(out_dir: Path, statuses: list[TaskStatus]) -> tuple[int, int]:
    """The list's duplicates and rejected lines, which every task shares: counted once."""
    place = out_dir.parent if is_task_directory(out_dir) else out_dir
    for directory in (out_dir, place):
        header = idplan.read_header(directory)
        if header is not None:
            return (header.duplicates + sum(s.duplicates for s in header.segments),
                    header.rejected + sum(s.rejected for s in header.segments))
    return 0, max((s.rejected or 0 for s in statuses), default=0)


def _latest_error(statuses: list[TaskStatus]) -> str | None:
    return next((s.error for s in statuses if s.error), None)


def run_summary(out_dir: Path) -> dict[str, Any]:
    """The accounting of every task of ``out_dir`` together, from the checkpoints."""
    statuses = directory_status(out_dir)
    reasons = completeness(out_dir, statuses)
    summary: dict[str, Any] = {"out_dir": str(out_dir)}
    summary["requested"] = _known_sum([s.requested for s in statuses])
    for key in _ADDED:
        summary[key] = sum(getattr(s, key) for s in statuses)
    summary["failed"] = sum(s.failed_ids for s in statuses)
    summary["pending"] = _known_sum([s.pending_ids for s in statuses])
    summary["batches"] = _known_sum([s.batches_total for s in statuses])
    summary["duplicates"], summary["rejected"] = _list_counts(out_dir, statuses)
    summary["latest_run_elapsed_s"] = max((s.latest_run_elapsed_s for s in statuses),
                                          default=0.0)
    summary["tasks"] = max((s.task_count for s in statuses), default=1)
    summary["running"] = sum(1 for s in statuses if s.running or s.starting)
    summary["error"] = _latest_error(statuses)
    summary["complete"] = not reasons
    summary["incomplete"] = reasons
    # what the CLI would exit with for the whole: 0, else the worst of the tasks' latest runs
    # (75 interrupted, 1 an error), at least 3 (not everything fetched yet)
    summary["exit_code"] = EXIT_OK if not reasons else max(
        [EXIT_FAILED_BATCHES, *(_latest_exit_code(Path(s.directory)) for s in statuses)])
    return summary


def _latest_exit_code(directory: Path) -> int:
    with contextlib.suppress(OSError, StateError, orjson.JSONDecodeError, TypeError, ValueError):
        summary = orjson.loads(durable.read_bytes(directory / layout.SUMMARY_NAME))
        return int(summary.get("exit_code") or 0) if isinstance(summary, dict) else 0
    return 0
