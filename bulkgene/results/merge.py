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
from bulkgene.errors import StateError
from bulkgene.model import Summary
from bulkgene.results.account import run_summary
from bulkgene.results.reports import read_report
from bulkgene.results.rundir import TaskFiles, tasks_of

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


def merged_summary(out_dir: Path) -> dict[str, Any]:
    """The accounting of every task of ``out_dir`` together (``results.account``): the
    list's duplicates and rejected lines counted once; ``complete`` only when every task
    the list needs is there and complete."""
    return run_summary(out_dir)


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
    if summary["requested"] is None or summary["pending"] is None:  # the plan can't be read
        return (f"array of {summary['tasks']} tasks: requested ? = found {summary['found']} + "
                f"missing {summary['missing']} + failed {summary['failed']} + pending ?; "
                f"{summary['records']} records")
    known = {item.name for item in fields(Summary)} - {"task_index", "task_count"}
    counts = Summary(**{key: value for key, value in summary.items() if key in known})
    refused = (f"; {counts.refused} GeneIDs refused by the server, never answered (bulkgene "
               f"retry {counts.out_dir})" if counts.refused else "")
    return (f"array of {summary['tasks']} tasks: {counts.account()}; {summary['records']} "
            f"records, {summary['duplicates']} duplicates, {summary['rejected']} rejected "
            f"lines{refused}")
