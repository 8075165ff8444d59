"""Which task of an array this process is (SLURM or by hand); ``TaskSpec`` says what it takes.

Task *i* of *N* takes the batches with ``b mod N == i`` and works in ``DIR/task-000i/``
with its own checkpoint, shards and reports, so tasks never share a file. Defaults come
from a SLURM array: ``--array=1-7:2`` gives IDs 1, 3, 5, 7, which become tasks 0..3.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from bulkgene.config import TaskSpec
from bulkgene.errors import ConfigError


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name}={value!r} is not an integer") from None


def from_slurm(env: Mapping[str, str] | None = None) -> TaskSpec | None:
    """The task of this SLURM array job, or None outside an array."""
    env = os.environ if env is None else env
    task_id = _int(env, "SLURM_ARRAY_TASK_ID")
    if task_id is None:
        return None
    count = _int(env, "SLURM_ARRAY_TASK_COUNT")
    first = _int(env, "SLURM_ARRAY_TASK_MIN")
    step = _int(env, "SLURM_ARRAY_TASK_STEP") or 1
    if count is None or first is None:
        raise ConfigError("this is a SLURM array task, but SLURM_ARRAY_TASK_COUNT or "
                          "SLURM_ARRAY_TASK_MIN is not set: pass --task-index and --task-count")
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


def unsplit_array_note(env: Mapping[str, str] | None = None) -> str | None:
    """What to say once when running inside an array job without splitting, else None."""
    env = os.environ if env is None else env
    if not env.get("SLURM_ARRAY_TASK_ID", "").strip():
        return None
    return (f"SLURM array task {env['SLURM_ARRAY_TASK_ID']}: fetching the whole input (pass "
            "--split slurm to share one list among the array's tasks)")
