"""An array read as one run: DIR/missing.tsv, DIR/replaced.tsv and DIR/summary.json merged.

Each task of an array writes its own reports in ``DIR/task-000i/``. ``rebuild_merged``
writes their union at the top of DIR: one header (the union of the tasks' columns, so
columns another step added, such as gene_history's ``history``, pass through), the rows
task after task, and a summary that counts the list's duplicates and rejected lines once.
Each file is written to a temporary name and renamed, summary.json last; it records what
it was built from, so ``merged_is_current`` can tell when a task has changed since.

Who calls it: the array task whose end completes the array; ``bulkgene verify`` and
``bulkgene export`` when the merged files are absent or out of date; anything that
rewrites a task's reports (explaining missing IDs) after doing so.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from bulkgene import durable, layout
from bulkgene.errors import EXIT_FAILED_BATCHES, EXIT_OK, StateError
from bulkgene.input import plan as idplan
from bulkgene.model import Summary
from bulkgene.results.reports import read_report
from bulkgene.results.rundir import TaskFiles, tasks_of
from bulkgene.results.status import directory_status, incomplete_reasons

_ADDED = ("requested", "found", "missing", "failed", "pending", "unverified", "records",
          "replaced", "batches", "batches_committed", "batches_failed", "requests", "retries",
          "throttled", "bytes_received", "missing_discontinued", "missing_replaced",
          "missing_not_in_history", "missing_refused", "followed", "refused")
_SOURCES = (layout.CHECKPOINT_NAME, layout.SUMMARY_NAME, layout.MISSING_NAME,
            layout.REPLACED_NAME)


def is_array(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds an array's tasks (rather than one run, or one task)."""
    directories = layout.task_directories(out_dir)
    return bool(directories) and directories != [out_dir]


def _stamp(tasks: list[Path]) -> dict[str, list[int]]:
    """Size and modification time of every file the merge reads, task by task."""
    stamp: dict[str, list[int]] = {}
    for directory in tasks:
        for name in _SOURCES:
            with contextlib.suppress(OSError):
                info = (directory / name).stat()
                stamp[f"{directory.name}/{name}"] = [info.st_size, info.st_mtime_ns]
    return stamp


def _task_summaries(tasks: list[Path]) -> list[dict[str, Any]]:
    summaries = []
    for directory in tasks:
        with contextlib.suppress(OSError, StateError, orjson.JSONDecodeError):
            summary = orjson.loads(durable.read_bytes(directory / layout.SUMMARY_NAME))
            if isinstance(summary, dict):
                summaries.append(summary)
    return summaries


def merged_summary(out_dir: Path) -> dict[str, Any]:
    """The accounting of every task of ``out_dir`` together; a plain run's own summary.

    ``duplicates`` and ``rejected`` describe the list, which the tasks share: counted once.
    ``complete`` holds only when every task the list needs is there and complete.
    """
    directories = layout.task_directories(out_dir)
    summaries = _task_summaries(directories)
    merged: dict[str, Any] = {"out_dir": str(out_dir)}
    for key in _ADDED:
        merged[key] = sum(int(summary.get(key) or 0) for summary in summaries)
    list_counts = idplan.read_header(out_dir) if is_array(out_dir) else None
    first = summaries[0] if summaries else {}
    merged["duplicates"] = (list_counts.duplicates if list_counts is not None
                            else int(first.get("duplicates") or 0))
    merged["rejected"] = (list_counts.rejected if list_counts is not None
                          else int(first.get("rejected") or 0))
    merged["failed_batch_indexes"] = sorted(
        index for summary in summaries for index in summary.get("failed_batch_indexes") or [])[:1000]
    merged["elapsed_s"] = max((float(s.get("elapsed_s") or 0) for s in summaries), default=0.0)
    merged["interrupted"] = any(bool(s.get("interrupted")) for s in summaries)
    merged["error"] = next((s["error"] for s in summaries if s.get("error")), None)
    try:
        reasons = incomplete_reasons(directory_status(out_dir))
    except StateError as exc:
        reasons = [str(exc)]
    merged["tasks"] = len(directories)
    merged["complete"] = not reasons
    merged["incomplete"] = reasons
    merged["exit_code"] = (EXIT_OK if not reasons else max(
        [EXIT_FAILED_BATCHES, *(int(s.get("exit_code") or 0) for s in summaries)]))
    return merged


def merged_is_current(out_dir: Path) -> bool:
    """Whether DIR's merged files were built from the tasks' files as they are now."""
    try:
        summary = orjson.loads(durable.read_bytes(out_dir / layout.SUMMARY_NAME))
    except (OSError, StateError, orjson.JSONDecodeError):
        return False
    return (isinstance(summary, dict)
            and summary.get("merged_from") == _stamp(layout.task_directories(out_dir))
            and summary.get("merged_files") == _sizes(out_dir))


def _sizes(out_dir: Path) -> dict[str, int | None]:
    """The merged reports' sizes (None: absent), so a lost or edited one is noticed."""
    sizes: dict[str, int | None] = {}
    for name in (layout.MISSING_NAME, layout.REPLACED_NAME):
        try:
            sizes[name] = (out_dir / name).stat().st_size
        except FileNotFoundError:
            sizes[name] = None
    return sizes


def _write_report(out_dir: Path, tasks: list[TaskFiles], name: str) -> None:
    report = read_report(tasks, name)
    path = out_dir / name
    # a unique temporary name: two tasks that end at once may both rebuild
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        with durable.create_new(tmp) as handle:
            if report.columns:
                handle.write(("\t".join(report.columns) + "\n").encode())
            lines: list[str] = []
            for row in report.rows():
                lines.append("\t".join(row[column] for column in report.columns) + "\n")
                if len(lines) >= 8192:
                    handle.write("".join(lines).encode())
                    lines.clear()
            handle.write("".join(lines).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def rebuild_merged(out_dir: Path) -> dict[str, Any] | None:
    """Write DIR/missing.tsv, DIR/replaced.tsv and DIR/summary.json for an array; returns
    the merged summary, None for a directory that is not an array (nothing to merge)."""
    if not is_array(out_dir):
        return None
    directories = layout.task_directories(out_dir)
    stamp = _stamp(directories)
    tasks = tasks_of(out_dir)
    for name in (layout.MISSING_NAME, layout.REPLACED_NAME):
        _write_report(out_dir, tasks, name)
    summary = merged_summary(out_dir)
    summary["merged_from"] = stamp
    summary["merged_files"] = _sizes(out_dir)
    tmp = out_dir / f".{layout.SUMMARY_NAME}.{os.getpid()}.tmp"
    try:
        with durable.create_new(tmp) as handle:
            handle.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out_dir / layout.SUMMARY_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    durable.fsync_directory(out_dir)
    return summary


def remove_merged(out_dir: Path) -> None:
    """Drop DIR's merged files (a task is about to change what they describe)."""
    for name in (layout.SUMMARY_NAME, layout.MISSING_NAME, layout.REPLACED_NAME):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()


def summary_line(summary: dict[str, Any]) -> str:
    """The one-line account of a whole array (the classes of its missing GeneIDs as a
    task's end line gives them)."""
    known = {item.name for item in fields(Summary)} - {"task_index", "task_count"}
    counts = Summary(**{key: value for key, value in summary.items() if key in known})
    refused = (f"; {counts.refused} GeneIDs refused by the server, never answered (bulkgene "
               f"retry {counts.out_dir})" if counts.refused else "")
    return (f"array of {summary['tasks']} tasks: {counts.account()}; {summary['records']} "
            f"records, {summary['duplicates']} duplicates, {summary['rejected']} rejected "
            f"lines{refused}")
