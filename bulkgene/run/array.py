"""Which task of an array this process is (SLURM or by hand); ``TaskSpec`` says what it takes.

Task *i* of *N* takes the batches with ``b mod N == i`` and works in ``DIR/task-000i/``
with its own checkpoint, shards and reports, so tasks never share a file. Defaults come
from a SLURM array: ``--array=1-7:2`` gives IDs 1, 3, 5, 7, which become tasks 0..3.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from bulkgene.config import MAX_TASK_COUNT, TaskSpec
from bulkgene.errors import ConfigError

log = logging.getLogger("bulkgene")


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise ConfigError(f"${name}={shown!r} is not an integer") from None


def from_slurm(env: Mapping[str, str] | None = None) -> TaskSpec | None:
    """The task of this SLURM array job, or None outside an array."""
    env = os.environ if env is None else env
    task_id = _int(env, "SLURM_ARRAY_TASK_ID")
    if task_id is None:
        return None
    count = _int(env, "SLURM_ARRAY_TASK_COUNT")
    first = _int(env, "SLURM_ARRAY_TASK_MIN")
    step = _int(env, "SLURM_ARRAY_TASK_STEP")
    if step is None:
        step = 1
    elif step < 1:
        raise ConfigError(f"$SLURM_ARRAY_TASK_STEP={step} is not a step (SLURM's are 1 or more, "
                          "as in --array=1-7:2): check the variables you set, or pass "
                          "--task-index and --task-count")
    if count is not None and not 1 <= count <= MAX_TASK_COUNT:
        raise ConfigError(f"$SLURM_ARRAY_TASK_COUNT={count} is not a task count (SLURM arrays "
                          f"have 1..{MAX_TASK_COUNT} tasks): check the variables you set, or "
                          "pass --task-index and --task-count")
    if count is None:
        raise ConfigError("this is a SLURM array task, but $SLURM_ARRAY_TASK_COUNT is not set: "
                          "set it to the array's number of tasks, or pass --task-index and "
                          "--task-count")
    if first is None:
        # SLURM always sets it; by hand (a test, another scheduler) the first ID is 0
        log.info("$SLURM_ARRAY_TASK_MIN is not set: taking 0 as the array's first task ID "
                 "(set it if the array starts elsewhere, e.g. --array=1-4)")
        first = 0
    offset = task_id - first
    if offset % step or not 0 <= offset // step < count:
        raise ConfigError(
            f"SLURM array task {task_id} is not on the grid {first}+{step}k (k < {count}): "
            "an array like --array=1,4,9 can't be mapped to tasks automatically; pass "
            "--task-index and --task-count")
    return TaskSpec(offset // step, count)


def resolve(index: int | None, count: int | None, split: str | None = None,
            env: Mapping[str, str] | None = None) -> TaskSpec:
    """``--task-index/--task-count``, or ``--split slurm``; else one task with the whole input.

    Inside a SLURM array without either, every task fetches its whole input: one array job
    often runs one task per sample, each with its own list, and splitting that silently
    would fetch 1/N of each list and call it done.
    """
    if index is not None or count is not None:
        if index is None or count is None:
            raise ConfigError("--task-index and --task-count go together")
        if split is not None:
            raise ConfigError("--split takes the task from the environment: leave out "
                              "--task-index and --task-count, or --split")
        return TaskSpec(index, count)
    if split == "slurm":
        spec = from_slurm(env)
        if spec is None:
            raise ConfigError("--split slurm needs a SLURM array task ($SLURM_ARRAY_TASK_ID is "
                              "not set): submit with sbatch --array, or pass --task-index and "
                              "--task-count")
        return spec
    if split is not None:
        raise ConfigError(f"--split {split!r} is not known: use --split slurm")
    return TaskSpec()


def unsplit_lock_hint(env: Mapping[str, str] | None = None) -> str:
    """What to add to a lock error of an array task that didn't split: "" outside an array.

    Every task of ``sbatch --array`` without ``--split`` writes its whole input into the
    same --out, so all but the first meet the first one's lock.
    """
    env = os.environ if env is None else env
    task_id = env.get("SLURM_ARRAY_TASK_ID", "").strip()
    if not task_id:
        return ""
    return (f". This is SLURM array task {task_id}, which fetches its whole input into that "
            "directory because --split slurm was not given: to share one list among the "
            "array's tasks, pass --split slurm (task i then writes DIR/task-000i); if each "
            "task has a list of its own, give each its own --out (e.g. "
            "--out genes-$SLURM_ARRAY_TASK_ID)")


def unsplit_array_note(env: Mapping[str, str] | None = None) -> str | None:
    """What to say once when running inside an array job without splitting, else None."""
    env = os.environ if env is None else env
    if not env.get("SLURM_ARRAY_TASK_ID", "").strip():
        return None
    return (f"SLURM array task {env['SLURM_ARRAY_TASK_ID']}: fetching the whole input (pass "
            "--split slurm to share one list among the array's tasks)")
