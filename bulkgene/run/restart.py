"""``--restart``: every check that can refuse it made first, then the old run moved aside (never deleted).

A refused restart used to move things first: a 3-task array restarted as 2 tasks had its
task-0000 moved aside, then was refused (the old run now split over two directories), and
``fetch MR/missing.tsv --out MR --restart`` moved its own input away before reading it.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

from bulkgene import layout
from bulkgene.config import DownloadConfig
from bulkgene.errors import ConfigError, InputError, StateError
from bulkgene.input.lines import STDIN
from bulkgene.output import checkpoint as ckpt

log = logging.getLogger("bulkgene")


def refuse_before_moving(config: DownloadConfig) -> None:
    """Everything that would refuse a --restart once its old run is moved aside, asked
    before anything moves."""
    if config.inputs.count(STDIN) > 1:
        raise ConfigError("stdin (-) can be given only once as input")
    if config.task.count > 1:
        refuse_mixed_runs(config, moving=True)
    moved = config.work_dir.resolve()
    for name in config.inputs:
        if name == STDIN:
            continue
        path = Path(name)
        if not path.exists():
            raise InputError(f"cannot read input {name!r}: No such file or directory; check "
                             "the path (nothing was moved aside)")
        where = path.resolve()
        if where.is_relative_to(moved) and layout.is_run_entry(where.relative_to(moved).parts[0]):
            raise InputError(
                f"input {name} is a file of the run that --restart moves aside: copy it out "
                f"first (cp {name} ids.txt) and fetch that copy; nothing was moved")
    refuse_other_files(config)  # the restarted run is a fresh one: it would refuse them


def old_claims_generation(work_dir: Path) -> int | None:
    """The claims generation of the run --restart is about to move aside (None: none)."""
    try:
        state = ckpt.load(work_dir)
    except StateError:
        return None  # a damaged checkpoint: its run joins no generation
    return state.claims_generation if state is not None else None


def move_aside(work_dir: Path, out_dir: Path) -> Path | None:
    """``--restart``: move the old run next to ``out_dir`` (never delete); its new place.

    A task's directory goes to ``DIR.restarted-<time>/task-000i``, outside ``DIR``, so that
    globbing ``DIR/**/*.ndjson`` never reads an old run's shards. A directory that also
    holds files of someone else's (allowed with ``--allow-other-files``) keeps them: only
    bulkgene's files move. Our own new lock is no old run.
    """
    if not work_dir.is_dir():
        return None
    ours = [p for p in work_dir.iterdir()
            if layout.is_run_entry(p.name) and p.name != layout.LOCK_NAME]
    if not ours:
        return None
    work_dir, out_dir = work_dir.resolve(), out_dir.resolve()
    whole = not layout.other_entries(work_dir)
    cwd = Path.cwd().resolve()
    if whole and (work_dir in (cwd, *cwd.parents) or not out_dir.name):
        raise StateError(f"--restart would move {work_dir} aside, but it is (or holds) the "
                         "current directory: run the command from its parent directory "
                         f"(cd {work_dir.parent}) with --out {work_dir.name}")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    parent = out_dir.with_name(f"{out_dir.name}.restarted-{stamp}")
    target = parent if work_dir == out_dir else parent / work_dir.name
    suffix = 1
    while target.exists():
        parent = out_dir.with_name(f"{out_dir.name}.restarted-{stamp}-{suffix}")
        target = parent if work_dir == out_dir else parent / work_dir.name
        suffix += 1
    try:
        if whole:
            target.parent.mkdir(parents=True, exist_ok=True)
            work_dir.rename(target)
        else:
            target.mkdir(parents=True)
            for path in ours:
                path.rename(target / path.name)
    except OSError as exc:
        raise StateError(f"--restart could not move {work_dir} aside to {target}: {exc.strerror}; "
                         "move or remove it yourself, or choose another --out") from None
    return target



def refuse_other_files(config: DownloadConfig) -> None:
    """A fresh run fills --out: one that holds someone else's files is refused unless asked."""
    if config.allow_other_files:
        return
    for directory in dict.fromkeys((config.out_dir, config.work_dir)):
        others = layout.other_entries(directory)
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise StateError(
                f"{directory} holds files that are not a bulkgene run ({shown}): bulkgene "
                "would write its shards and reports among them. Give --out a new or empty "
                "directory, or pass --allow-other-files to write there anyway (your files "
                "are left alone, also by --restart)")



def refuse_mixed_runs(config: DownloadConfig, moving: bool = False) -> None:
    """One kind of run per directory: a single run, or one array split into N tasks.
    ``moving``: this task's own old run is about to be moved aside (--restart), so only the
    other tasks count."""
    root = config.out_dir
    arrays = sorted(p for p in root.glob(layout.TASK_DIR_PREFIX + "*")
                    if (p / layout.CHECKPOINT_NAME).exists())
    if config.task.count == 1:
        if arrays:
            raise StateError(
                f"{root} holds an array run ({arrays[0].name}, ...): a run that is not split "
                "can't share its directory. Give it another --out, or run it as a task of that "
                "array (the same --split slurm or --task-count).")
        return
    if (root / layout.CHECKPOINT_NAME).exists():
        raise StateError(f"{root} holds a run that is not split into tasks: an array task "
                         "can't share its directory; give the array another --out")
    others: list[str] = []  # tasks that split the list with another batch size
    for task_dir in arrays:
        if moving and task_dir == config.work_dir:
            continue
        try:
            state = ckpt.load(task_dir)
        except StateError:
            continue  # that task's own run says what is wrong with it
        count = state.params.get("task_count") if state is not None else None
        batch_size = state.params.get("batch_size") if state is not None else None
        if (batch_size is not None and batch_size != config.output.batch_size
                and task_dir != config.work_dir):
            others.append(task_dir.name)
        if count is not None and count != config.task.count:
            raise StateError(
                f"{root} holds an array split into {count} tasks ({task_dir.name}), and this "
                f"is a task of {config.task.count}: every task of an array takes the same "
                "--task-count (or the same --array with --split slurm). To run the list as "
                f"{config.task.count} tasks, move the old array aside whole first (mv {root} "
                f"{root}.old: nothing of it is lost), or use another --out; --restart moves "
                "only one task's directory, and nothing was moved.")
    if others:
        log.warning(
            "%s of this array split the list into batches of another size than this task's "
            "--batch-size %d: until every task runs with the same --batch-size (--restart "
            "them too), the tasks cover the list unevenly and `bulkgene verify %s` fails",
            ", ".join(others), config.output.batch_size, root)
