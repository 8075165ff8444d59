"""Which array task writes a gene that IDs of several tasks were merged into: the first to claim it.

A merged or replaced GeneID comes back as its new gene. When IDs of different tasks were
merged into one gene that nobody requested itself, every one of those tasks receives it;
exactly one may write it. Each claims it in ``DIR/.claims/<layout>/`` by creating a complete
file named after the gene with ``link()`` (atomic and exclusive, on NFS too) before its batch
is committed; whoever finds the claim taken by another task leaves the gene out. A task
killed after claiming finds its own claim when it re-fetches the batch, and writes the gene
then.

A claim holds only for the layout it was made in: which task receives which gene follows
from the list, the batch size, the task count and the server (its merges). ``<layout>`` is
a digest of those, so an array restarted with another ``--batch-size`` claims afresh: the old
claims named tasks that no longer receive the gene, and nobody wrote it (577 of 3 922 genes).

Nor does a claim outlive the run that made it. The server's merges change between runs: a
claim saying task 1 writes gene G, from before a ``--restart``, made task 0 leave G out,
and task 1's new run no longer received G. So the layout's digest holds a *generation*
too: a task that restarts begins the next one (``DIR/.claims/generation-<k>``, created
exclusively, so tasks restarting at once begin it together) and one restarting later joins
it; a task that merely resumes stays in its own. The tasks of an array restarted one by one
thus claim afresh, among themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import orjson

from bulkgene import durable, layout


def layout_key(plan_key: list[str], batch_size: int, task_count: int, server: str,
               generation: int = 0) -> str:
    """The name of the claims directory of one way of splitting one list among tasks, in
    one generation of restarts (generation 0 is named as before generations were)."""
    parts: list[object] = [plan_key, batch_size, task_count, server]
    if generation:
        parts.append(generation)
    return "layout-" + hashlib.blake2b(orjson.dumps(parts), digest_size=8).hexdigest()


_GENERATION_PREFIX = "generation-"


def current_generation(claims_root: Path) -> int:
    """The newest generation begun in ``DIR/.claims`` (0 if none was)."""
    try:
        names = os.listdir(claims_root)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    numbers = [int(n[len(_GENERATION_PREFIX):]) for n in names
               if n.startswith(_GENERATION_PREFIX) and n[len(_GENERATION_PREFIX):].isdigit()]
    return max(numbers, default=0)


def claims_generation(root: Path, restarted_from: int | None) -> int:
    """The generation a fresh run of a task joins: after a --restart of a run of generation
    ``restarted_from``, the next one is begun (if no other task began it yet); otherwise,
    or after that, the newest."""
    claims_root = root / layout.CLAIMS_DIR_NAME
    if restarted_from is not None:
        durable.make_run_directories(root, claims_root)
        marker = claims_root / f"{_GENERATION_PREFIX}{restarted_from + 1}"
        with contextlib.suppress(FileExistsError):
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644))
            durable.fsync_directory(claims_root)
    return current_generation(claims_root)


class GeneClaims:
    """One task's view of the claims of an array's output directory."""

    def __init__(self, directory: Path, task_index: int, root: Path | None = None) -> None:
        self.directory = directory
        self.task_index = task_index
        self._root = root or directory.parent.parent  # DIR, of DIR/.claims/<layout>
        self._made = False

    def owns(self, gene_id: int) -> bool:
        """Claim ``gene_id`` for this task unless another task has; whether this task owns it."""
        if not self._made:  # no link followed on the way, the group's bits kept
            durable.make_run_directories(self._root, self.directory)
            self._made = True
        path = self.directory / str(gene_id)
        mine = str(self.task_index).encode()
        durable.create_exclusively(path, mine, str(self.task_index))
        with durable.open_read(path) as handle:
            return handle.read() == mine
