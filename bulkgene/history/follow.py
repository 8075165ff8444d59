"""--follow-replaced: the live successor of each missing GeneID the history says was replaced, fetched for it.

After ``explain``, a missing GeneID A whose history chain ends at a live GeneID C (class
REPLACED) is followed, in two steps, each under every task's lock and exactly once:

1. **C is in the run already** (C was requested and found, or is the new gene of a replaced
   ID, in any task): nothing is fetched. A leaves missing.tsv for replaced.tsv (``A -> C``,
   its explanation kept) and counts as found and ``followed``, in one report rewrite per
   task (output/rewrite.py), as NCBI records a replaced GeneID it answers.
2. **C is not**: C is fetched through the same pipeline, budget and checkpoint as any batch,
   by the task whose missing.tsv holds A, as a ``follow`` segment of the run
   (run/growth.py). C's record is written with A in its ``query``, as NCBI writes the
   answer to a replaced GeneID; A leaves missing.tsv for replaced.tsv and counts as found
   and ``followed``. If the API does not answer C either, A's row comes back as it was. C
   is fetched once however many IDs were merged into it (in an array, the tasks' claims
   let one write it).

A C that the run asked for and NCBI did not answer is not fetched again: A stays missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bulkgene import durable, layout
from bulkgene.config import NetworkSpec, TaskSpec
from bulkgene.errors import StateError
from bulkgene.history.explain import update_summary
from bulkgene.input.idset import IdBitmap
from bulkgene.input.plan import IdPlan
from bulkgene.model import Snapshot, Summary
from bulkgene.output import rewrite
from bulkgene.output.checkpoint import Checkpoint
from bulkgene.output.on_behalf import history_class, reason
from bulkgene.output.rewrite import committed_rows
from bulkgene.results import merge
from bulkgene.run import growth
from bulkgene.run.resume import go_on

_FIELDS = 2 + len(layout.EXPLANATION_COLUMNS)


def follow_command(out_dir: Path) -> str:
    return f"bulkgene explain {out_dir} --follow-replaced"


def _explained(directory: Path) -> bool:
    path = directory / layout.MISSING_NAME
    if not path.exists():
        return True  # nothing missing: nothing to follow
    with durable.open_read(path) as handle:
        return handle.readline() == layout.explained_header(layout.MISSING_HEADER)


def _replaced_rows(directory: Path, state: Checkpoint, out_dir: Path
                   ) -> list[tuple[int, int, bytes]]:
    """(missing GeneID, its live successor, its row) of every REPLACED row of missing.tsv."""
    if not _explained(directory):
        raise StateError(f"{directory / layout.MISSING_NAME} is not explained yet: run "
                         f"bulkgene explain {out_dir} first (fetch --explain does)")
    rows = []
    length = state.file_lengths.get(layout.MISSING_NAME, 0)
    for row in committed_rows(directory / layout.MISSING_NAME, length):
        fields = row.split(b"\t")
        if len(fields) == _FIELDS and fields[2] == b"REPLACED" and fields[3].isdigit():
            rows.append((int(fields[0]), int(fields[3]), row))
    return rows


@dataclass
class Followed:
    """What following found before fetching: successors in the run already, or to fetch."""

    held: int = 0  # missing GeneIDs whose successor the run holds: now found
    unanswered: int = 0  # whose successor the run asked for, and NCBI did not answer
    growth: growth.Regrowth | None = None  # the follow segment: successors to fetch
    to_fetch: set[int] = field(default_factory=set)


def _genes_present(out_dir: Path, plan: IdPlan,
                   tasks: list[tuple[Path, TaskSpec, Checkpoint]]) -> IdBitmap:
    """The genes whose record the run holds: requested IDs answered as themselves (neither
    missing, nor replaced by another, nor in a failed batch), and every replaced ID's new gene."""
    absent = IdBitmap()
    for directory, task, state in tasks:
        lengths = state.file_lengths
        absent.update(int(row.split(b"\t", 1)[0]) for row in committed_rows(
            directory / layout.MISSING_NAME, lengths.get(layout.MISSING_NAME, 0)))
        absent.update(int(row.split(b"\t", 1)[0]) for row in committed_rows(
            directory / layout.REPLACED_NAME, lengths.get(layout.REPLACED_NAME, 0)))
        batch_size = int(state.params.get("batch_size", 1000))
        if state.failed:
            for batch in plan.task_batches(task, batch_size, state.failed.__contains__):
                absent.update(batch.gene_ids)
    return plan.requested.difference(absent).union(growth.held_genes(out_dir))


def _settle_task(directory: Path, state: Checkpoint, moving: list[tuple[int, int, bytes]]
                 ) -> None:
    """Move ``moving``'s rows from missing.tsv to replaced.tsv (``A C`` and the row's
    explanation), counting them found: one rewrite of both reports and the checkpoint."""
    leaving = {gene_id for gene_id, _, _ in moving}
    missing_path = directory / layout.MISSING_NAME
    replaced_path = directory / layout.REPLACED_NAME
    missing_length = state.file_lengths.get(layout.MISSING_NAME, 0)
    replaced_length = state.file_lengths.get(layout.REPLACED_NAME, 0)
    replaced_header = b""
    if replaced_length:
        with durable.open_read(replaced_path) as handle:
            replaced_header = handle.readline(replaced_length)
    explained = replaced_header == layout.explained_header(layout.REPLACED_HEADER)

    def write_missing(handle: BinaryIO) -> None:
        handle.write(layout.explained_header(layout.MISSING_HEADER))
        handle.write(b"".join(row + b"\n" for row in committed_rows(missing_path, missing_length)
                              if int(row.split(b"\t", 1)[0]) not in leaving))

    def write_replaced(handle: BinaryIO) -> None:
        if not replaced_length:
            handle.write(layout.explained_header(layout.REPLACED_HEADER))
        else:
            with durable.open_read(replaced_path) as old:
                left = replaced_length
                while left > 0 and (chunk := old.read(min(left, 1 << 20))):
                    handle.write(chunk)
                    left -= len(chunk)
        for gene_id, successor, row in moving:
            tail = b"\t" + row.split(b"\t", 2)[2] if explained or not replaced_length else b""
            handle.write(b"%d\t%d%s\n" % (gene_id, successor, tail))

    classes = [history_class(row) for _, _, row in moving]
    refused = sum(reason(row) == layout.REFUSED_REASON for _, _, row in moving)

    def update(new: Checkpoint) -> None:
        totals = new.totals
        totals.missing -= len(moving)
        totals.found += len(moving)
        totals.replaced += len(moving)
        totals.followed += len(moving)
        totals.missing_replaced -= classes.count(b"REPLACED")
        totals.refused -= refused

    state = rewrite.replace(directory, state, {layout.MISSING_NAME: write_missing,
                                               layout.REPLACED_NAME: write_replaced}, update)
    update_summary(directory, state)


def settle_held(out_dir: Path) -> Followed:
    """Step 1: every REPLACED missing GeneID whose successor the run holds becomes found
    (under every task's lock). Refused while the run has other work left (run/growth.py)."""
    followed = Followed()
    with growth.whole_run(out_dir) as (plan, tasks):
        left = growth.left_to_fetch(plan.counts.requested, plan.segments,
                                    [(task, state) for _, task, state in tasks])
        growth.refuse_unfinished(out_dir, left, "follow", follow_command(out_dir))
        replaced = {directory: _replaced_rows(directory, state, out_dir)
                    for directory, _, state in tasks}
        if not any(replaced.values()):
            return followed
        present = _genes_present(out_dir, plan, tasks)
        for directory, _, state in tasks:
            moving = [entry for entry in replaced[directory] if entry[1] in present]
            followed.unanswered += sum(1 for _, successor, _ in replaced[directory]
                                       if successor not in present
                                       and successor in plan.requested)
            if moving:
                _settle_task(directory, state, moving)
                followed.held += len(moving)
    if followed.held and merge.is_array(out_dir) and merge.merged_summary(out_dir)["complete"]:
        merge.rebuild_merged(out_dir)  # DIR's merged reports follow the tasks'
    return followed


class _Picker:
    """Step 2 chooses, task by task, the successors to fetch (each once in the whole run)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.held: IdBitmap | None = None
        self.successors: set[int] = set()

    def __call__(self, directory: Path, state: Checkpoint, plan: IdPlan) -> list[growth.Pick]:
        if self.held is None:
            self.held = growth.held_genes(self.out_dir)
        held = self.held
        picks: list[growth.Pick] = []
        for original, successor, row in _replaced_rows(directory, state, self.out_dir):
            if successor in plan.requested or successor in held:
                continue  # the run has it (settled), or asked for it and NCBI did not answer
            picks.append((successor, original, row))
        self.successors.update(successor for successor, _, _ in picks)
        return picks


def grow_follow(out_dir: Path) -> Followed:
    """Steps 1 and 2 (each under every task's lock): the successors the run holds settled,
    the others added as a follow segment."""
    followed = settle_held(out_dir)
    picker = _Picker(out_dir)
    followed.growth = growth.grow_again(out_dir, "follow",
                                        "the live successors of replaced GeneIDs", picker,
                                        follow_command(out_dir))
    followed.to_fetch = picker.successors
    return followed


async def follow(out_dir: Path, network: NetworkSpec, *, handle_signals: bool = False,
                 on_progress: Callable[[Snapshot], None] | None = None,
                 on_task_end: Callable[[Summary], None] | None = None,
                 **settings: Any) -> tuple[Followed, list[Summary]]:
    """Follow the run's explained REPLACED missing GeneIDs to their live successors: those
    the run holds are recorded at once, the others fetched (with whatever an interrupted
    follow left). Returns what was found before fetching, and the tasks' summaries (none
    when nothing was left to fetch). A killed follow is taken up again by the same call."""
    import asyncio

    growth.check_servers(out_dir, network)  # before anything changes
    followed = await asyncio.to_thread(grow_follow, out_dir)
    regrowth = followed.growth
    if regrowth is None or not (regrowth.originals or regrowth.resumed
                                or regrowth.failed_batches):
        return followed, []
    summaries = await go_on(out_dir, network, handle_signals=handle_signals,
                            on_progress=on_progress, on_task_end=on_task_end, **settings)
    return followed, summaries
