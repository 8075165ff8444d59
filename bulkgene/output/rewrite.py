"""A committed report (missing.tsv, replaced.tsv) replaced by a new version, in step with the checkpoint.

The checkpoint is the only source of truth for what is committed: every resume cuts each
report back to the length the checkpoint records. A report rewritten as a whole (explain
adds columns to every row; growing a run drops rows) must therefore change together with
the checkpoint, whatever instant a kill comes at:

  1. the new version is written to ``NAME.rewrite`` and fsync'd;
  2. the checkpoint is saved with the new version's length in ``file_lengths`` and NAME in
     ``rewrites`` (with whatever else changes with it, e.g. the totals);
  3. ``NAME.rewrite`` is renamed over NAME and the directory fsync'd;
  4. the checkpoint is saved again with ``rewrites`` empty.

Killed before 2: the old checkpoint and the old report agree, and the leftover
``NAME.rewrite`` is removed by the next ``finish``. Killed between 2 and 3: the checkpoint
names NAME in ``rewrites`` and ``NAME.rewrite`` is whole (it was fsync'd before the
checkpoint said so), so ``finish`` renames it: the rewrite rolls forward. Killed after 3:
nothing is left to rename, and ``finish`` only clears the list. ``finish`` runs under the
directory's lock before anything reads or cuts back the reports (a fetch's start, explain,
growing a run); ``status`` and ``verify`` only read, and say a rewrite is pending.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from bulkgene import durable
from bulkgene.layout import MISSING_NAME, REPLACED_NAME, REWRITE_SUFFIX
from bulkgene.output import checkpoint as ckpt
from bulkgene.output.checkpoint import Checkpoint

Writer = Callable[[BinaryIO], None]
REPORTS = (MISSING_NAME, REPLACED_NAME)


def committed_rows(path: Path, length: int) -> Iterator[bytes]:
    """The rows (without their newline) in a report's first ``length`` bytes, header aside:
    what the checkpoint committed, whatever a killed run appended after it."""
    if length <= 0:
        return
    with durable.open_read(path) as handle:
        left = length - len(handle.readline(length))
        while left > 0:
            row = handle.readline(left)
            if not row:
                return
            left -= len(row)
            yield row.rstrip(b"\n")


def pending_path(out_dir: Path, name: str) -> Path:
    return out_dir / (name + REWRITE_SUFFIX)


def finish(out_dir: Path, checkpoint: Checkpoint) -> Checkpoint:
    """Complete a rewrite a kill interrupted (roll forward), drop an uncommitted one.

    Returns the checkpoint as it now stands (saved if it changed). Call under the lock.
    """
    for name in REPORTS:
        pending = pending_path(out_dir, name)
        if name in checkpoint.rewrites:
            if pending.exists():
                os.replace(pending, out_dir / name)
        else:
            pending.unlink(missing_ok=True)  # written, never committed: the old one stands
    if not checkpoint.rewrites:
        return checkpoint
    durable.fsync_directory(out_dir)
    done = copy.deepcopy(checkpoint)
    done.rewrites = []
    done.updated_at = time.time()
    ckpt.save(out_dir, done)
    return done


def replace(out_dir: Path, checkpoint: Checkpoint, writers: dict[str, Writer],
            update: Callable[[Checkpoint], None] | None = None) -> Checkpoint:
    """Replace each report named in ``writers`` by what its writer writes, and apply
    ``update`` to the checkpoint in the same commit. Returns the new checkpoint (saved).

    ``checkpoint`` must be the directory's current one with no rewrite pending (``finish``).
    """
    assert not checkpoint.rewrites, "finish() the pending rewrite first"
    lengths: dict[str, int] = {}
    try:
        for name, write in writers.items():
            with durable.create_new(pending_path(out_dir, name)) as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
                lengths[name] = handle.tell()
    except BaseException:
        for name in writers:
            pending_path(out_dir, name).unlink(missing_ok=True)
        raise
    durable.fsync_directory(out_dir)
    new = copy.deepcopy(checkpoint)
    if update is not None:
        update(new)
    new.file_lengths.update(lengths)
    new.rewrites = sorted(lengths)
    new.updated_at = time.time()
    ckpt.save(out_dir, new)  # the commit point: from here on the new versions are the reports
    return finish(out_dir, new)
