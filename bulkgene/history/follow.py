"""--follow-replaced: the live successor of each missing GeneID the history says was replaced, fetched for it.

After ``explain``, a missing GeneID A whose history chain ends at a live GeneID C (class
REPLACED) is followed: C is fetched through the same pipeline, budget and checkpoint as any
batch, by the task whose missing.tsv holds A, as a ``follow`` segment of the run
(run/growth.py). C's record is written with A in its ``query``, as NCBI writes the answer to
a replaced GeneID; A leaves missing.tsv for replaced.tsv (``A -> C``, its explanation kept)
and counts as found and ``followed``. If the API does not answer C either, A's row comes
back as it was. C is not fetched when the run holds it already (C was requested, or is the
new gene of a replaced ID), nor twice by one task for two IDs that were merged into it (in
an array, the tasks' claims let one write it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bulkgene import layout
from bulkgene.config import NetworkSpec
from bulkgene.errors import StateError
from bulkgene.input.idset import IdBitmap
from bulkgene.input.plan import IdPlan
from bulkgene.model import Snapshot, Summary
from bulkgene.output.checkpoint import Checkpoint
from bulkgene.output.rewrite import committed_rows
from bulkgene.run import growth
from bulkgene.run.resume import go_on

_FIELDS = 2 + len(layout.EXPLANATION_COLUMNS)


def _explained(directory: Path) -> bool:
    from bulkgene import durable

    path = directory / layout.MISSING_NAME
    if not path.exists():
        return True  # nothing missing: nothing to follow
    with durable.open_read(path) as handle:
        return handle.readline() == layout.explained_header(layout.MISSING_HEADER)


class _Picker:
    """Chooses, task by task, the successors to fetch (each once in the whole run)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.held: IdBitmap | None = None
        self.successors = 0

    def __call__(self, directory: Path, state: Checkpoint, plan: IdPlan) -> list[growth.Pick]:
        if not _explained(directory):
            raise StateError(f"{directory / layout.MISSING_NAME} is not explained yet: run "
                             f"bulkgene explain {self.out_dir} first (fetch --explain does)")
        if self.held is None:
            self.held = growth.held_genes(self.out_dir)
        held = self.held
        picks: list[growth.Pick] = []
        length = state.file_lengths.get(layout.MISSING_NAME, 0)
        for row in committed_rows(directory / layout.MISSING_NAME, length):
            fields = row.split(b"\t")
            if len(fields) != _FIELDS or fields[2] != b"REPLACED" or not fields[3].isdigit():
                continue
            successor = int(fields[3])
            if successor in plan.requested or successor in held:
                continue  # the run has it (or asked for it, and NCBI did not answer)
            picks.append((successor, int(fields[0]), row))
        self.successors += len({successor for successor, _, _ in picks})
        return picks


def grow_follow(out_dir: Path) -> tuple[int, int]:
    """Add the follow segment (under every task's lock); (missing IDs followed, successors)."""
    picker = _Picker(out_dir)
    originals = growth.grow_again(out_dir, "follow", "the live successors of replaced GeneIDs",
                                  picker)
    return originals, picker.successors


async def follow(out_dir: Path, network: NetworkSpec, *, handle_signals: bool = False,
                 on_progress: Callable[[Snapshot], None] | None = None,
                 **settings: Any) -> tuple[int, int, list[Summary]]:
    """Fetch the live successors of the run's explained REPLACED missing GeneIDs (and
    anything else the run has left to fetch). Returns (IDs followed, successors, the tasks'
    summaries). A killed follow is taken up again by the same call, or any resume."""
    import asyncio

    growth.check_servers(out_dir, network)  # before anything changes
    originals, successors = await asyncio.to_thread(grow_follow, out_dir)
    summaries = await go_on(out_dir, network, handle_signals=handle_signals,
                            on_progress=on_progress, **settings)
    return originals, successors, summaries
