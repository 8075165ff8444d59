"""Splitting one input over N tasks (SLURM array or by hand): which batches and which directory.

Task *i* of *N* takes the batches with ``b mod N == i`` and works in ``DIR/task-000i/``
with its own checkpoint, shards and reports, so tasks never share a file. Defaults come
from a SLURM array: ``--array=1-7:2`` gives IDs 1, 3, 5, 7, which become tasks 0..3.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bulkgene.errors import ConfigError
from bulkgene.output.layout import TASK_DIR_PREFIX, task_dir_name

# SLURM's largest possible array (MaxArraySize is at most 4 000 001): anything above is a
# mistake, and numbers past 64 bits can't even be written to the checkpoint
MAX_TASK_COUNT = 4_000_001


@dataclass(frozen=True)
class TaskSpec:
    """This process's share of the batches."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count > MAX_TASK_COUNT:
            raise ConfigError(f"task count {self.count} is more tasks than any array has: use "
                              f"1..{MAX_TASK_COUNT}")
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"task index {self.index} of {self.count} is out of range: "
                              "--task-index must be 0..--task-count - 1")

    def takes(self, batch_index: int) -> bool:
        return batch_index % self.count == self.index

    def share(self, requested: int, batch_size: int) -> tuple[int, int]:
        """How many batches and IDs this task takes of ``requested`` unique IDs."""
        all_batches = -(-requested // batch_size)
        batches = range(self.index, all_batches, self.count)
        last_size = requested - batch_size * (all_batches - 1) if all_batches else 0
        ids = sum(last_size if b == all_batches - 1 else batch_size for b in batches)
        return len(batches), ids

    def directory(self, out_dir: Path) -> Path:
        """Where this task writes: DIR itself alone, DIR/task-000i/ in an array."""
        return out_dir if self.count == 1 else out_dir / task_dir_name(self.index)


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
    step = _int(env, "SLURM_ARRAY_TASK_STEP") or 1
    if count is not None and not 1 <= count <= MAX_TASK_COUNT:
        raise ConfigError(f"$SLURM_ARRAY_TASK_COUNT={count} is not a task count (SLURM arrays "
                          f"have 1..{MAX_TASK_COUNT} tasks): check the variables you set, or "
                          "pass --task-index and --task-count")
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


def task_directories(out_dir: Path) -> list[Path]:
    """Every directory under ``out_dir`` that holds (or held) one task's run."""
    tasks = sorted(p for p in out_dir.glob(TASK_DIR_PREFIX + "*") if p.is_dir()
                   and p.name[len(TASK_DIR_PREFIX):].isdigit())
    return tasks or ([out_dir] if (out_dir / "checkpoint.json").exists() else [])
