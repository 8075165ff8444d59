"""Which array task writes a gene that IDs of several tasks were merged into: the first to claim it.

A merged or replaced GeneID comes back as its new gene. When IDs of different tasks were
merged into one gene that nobody requested itself, every one of those tasks receives it;
exactly one may write it. Each claims it in ``DIR/.claims/`` by creating a complete file
named after the gene with ``link()`` (atomic and exclusive, on NFS too) before its batch is
committed; whoever finds the claim taken by another task leaves the gene out. A task killed
after claiming finds its own claim when it re-fetches the batch, and writes the gene then.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bulkgene import durable


class GeneClaims:
    """One task's view of the claims of an array's output directory."""

    def __init__(self, directory: Path, task_index: int) -> None:
        self.directory = directory
        self.task_index = task_index

    def owns(self, gene_id: int) -> bool:
        """Claim ``gene_id`` for this task unless another task has; whether this task owns it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / str(gene_id)
        mine = str(self.task_index).encode()
        tmp = self.directory / f".{gene_id}.{self.task_index}.tmp"
        with durable.create_new(tmp) as handle:
            handle.write(mine)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        else:
            durable.fsync_directory(self.directory)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        with durable.open_read(path) as handle:
            return handle.read() == mine
