"""Growing a finished run: new IDs (--add), refused ones again (retry), live successors (--follow-replaced).

One mechanism serves every way a run grows after its list is done: ``fetch MORE --out DIR
--add`` (new IDs; also a taxon re-enumerated with ``--refresh-list``), ``bulkgene retry DIR``
(IDs that ended REJECTED_BY_SERVER: a server that refused them yesterday may answer today;
failed batches need nothing new, any resume retries them) and ``--follow-replaced`` (the live
GeneID at the end of a missing ID's history chain, recorded with the original in ``query``).

The design, and why it is exactly-once under SIGKILL at any instant:

1. **A growth is a segment of the plan** (input/segments.py): the IDs to fetch, each task's
   part in a file of its own, recorded in plan.json (written last, atomically: the commit
   point of the growth). Committed batches never change: a task's new batches are numbered
   on after its last, so its checkpoint's watermark simply continues, and an array keeps
   ``b mod N`` (an added list is shared out batch by batch; what is fetched again goes to the
   task whose rows it answers). A growth is found again by its key (an added file's digest),
   so running the same ``--add`` twice adds nothing the second time.

2. **Each task takes a segment in** (``absorb``) in one report rewrite (output/rewrite.py):
   the rows of the IDs the segment fetches again leave missing.tsv, their count leaves
   ``missing`` (they are pending again, so ``requested = found + missing + failed +
   pending`` holds at every commit), the segment's key joins the checkpoint's ``segments``
   and the fingerprint is recomputed over the inputs and those keys. The checkpoint is the
   only record of what a task has taken in: a kill before the rewrite's commit leaves the
   segment untaken (taken in on the next start), after it taken; never half.

3. **The pipeline fetches the new batches like any other** and commits them as usual:
   shards and reports appended and fsync'd, then the checkpoint. A retry batch writes an ID
   still missing with its new reason (and its old explanation); a follow batch writes the
   successor's record with the originals as its query, ``A -> C`` rows in replaced.tsv and
   the A's counted found and ``followed``, or puts the A's rows back if the successor is not
   answered either (output/on_behalf.py). So no stale row survives: a row leaves at
   absorption and comes back only as its ID's new answer.

4. **Every start takes in what it has not** (run/prepare.py calls ``absorb`` under the task's
   lock before cutting files back), so a killed growth, a killed absorption and an array
   task that was not running when the list grew all end the same way. A new growth first
   takes every earlier one in, under every task's lock and the plan's: a retry never picks
   rows an earlier segment already fetches again, and a follow never a successor twice.

Accounting: an added ID grows ``requested`` (the task's share of the segment); an ID fetched
again does not (it was requested before). The directory's fingerprint follows its
segments, so the original command, ``--add`` with the same file, ``retry`` or ``explain
--follow-replaced`` all resume a grown run, and anything else is refused as before.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bulkgene import durable, layout
from bulkgene.config import DownloadConfig, NetworkSpec, TaskSpec
from bulkgene.errors import InputError, StateError
from bulkgene.input import plan as idplan
from bulkgene.input import segments as segs
from bulkgene.input.idset import IdBitmap
from bulkgene.input.lines import Reject, file_digest, parse_column, read_ids
from bulkgene.input.plan import IdPlan
from bulkgene.input.segments import Segment, SegmentKind
from bulkgene.output import checkpoint as ckpt
from bulkgene.output import rewrite
from bulkgene.output.checkpoint import Checkpoint
from bulkgene.output.lock import RunLock, acquire_waiting
from bulkgene.output.on_behalf import history_class, reason
from bulkgene.output.rewrite import committed_rows

log = logging.getLogger("bulkgene")

_PLAN_WAIT_S = 3600.0
# (fetched ID, original ID, the original's missing.tsv row)
Pick = tuple[int, int, bytes]


def check_server(directory: Path, state: Checkpoint, network: NetworkSpec) -> None:
    """StateError, saying which server to name, unless ``network`` reaches the server that
    filled the run in ``directory``: a run's GeneIDs all come from one server.

    The server is never taken from the directory by itself: the key would then be sent to
    whatever URL a file there names, and the directory is not trusted."""
    server = state.params.get("server")
    if server is None or server == network.server:
        return
    where = (f"from {state.base_url}" if state.base_url
             else f"from a server at {server} (its port and path are not recorded)")
    name = (f"--base-url {state.base_url}" if state.base_url
            else "that server's API root with --base-url")
    raise StateError(
        f"{directory} was fetched {where}, and this command would go on with it from "
        f"{network.api_root}: a run's GeneIDs all come from one server. Pass {name} (or set "
        "BULKGENE_BASE_URL); nothing was changed.")


def check_servers(out_dir: Path, network: NetworkSpec) -> None:
    """``check_server`` for every task of the run in ``out_dir``, before anything changes."""
    for directory in layout.task_directories(out_dir):
        state = ckpt.load(directory)
        if state is not None:
            check_server(directory, state, network)


def fingerprint_of(state: Checkpoint) -> str:
    """The fingerprint a checkpoint must carry: its parameters, inputs and segments."""
    return ckpt.fingerprint(state.params, [entry.digest for entry in state.inputs] + state.segments)


def absorb(directory: Path, state: Checkpoint, plan: IdPlan, task: TaskSpec) -> Checkpoint:
    """Take in every segment of ``plan`` that ``state`` has not: one commit per segment.

    Call under the task's lock, with no report rewrite pending. Returns the new checkpoint.
    """
    known = {segment.key for segment in plan.segments}
    if unknown := [key for key in state.segments if key not in known]:
        raise StateError(
            f"{directory / layout.CHECKPOINT_NAME} has taken in growths the plan in "
            f"{plan.directory} does not hold ({', '.join(unknown)}): the plan was replaced "
            "outside bulkgene. Put back its plan.json, or start over with --restart.")
    for segment in plan.segments[len(state.segments):]:
        state = _absorb_one(directory, state, plan.directory, segment, task)
    return state


def _absorb_one(directory: Path, state: Checkpoint, plan_dir: Path, segment: Segment,
                task: TaskSpec) -> Checkpoint:
    leaving = IdBitmap()
    leaving.update(segs.originals(plan_dir, segment, task.index))
    dropped: dict[bytes, int] = {}
    refused = 0
    length = state.file_lengths.get(layout.MISSING_NAME, 0)
    source = directory / layout.MISSING_NAME
    writers: dict[str, rewrite.Writer] = {}
    if len(leaving) and length:
        for row in committed_rows(source, length):
            if int(row.split(b"\t", 1)[0]) in leaving:
                kind = history_class(row)
                dropped[kind] = dropped.get(kind, 0) + 1
                refused += reason(row) == layout.REFUSED_REASON

        def write(handle: BinaryIO) -> None:
            with durable.open_read(source) as old:
                handle.write(old.readline(length))
            kept = [row + b"\n" for row in committed_rows(source, length)
                    if int(row.split(b"\t", 1)[0]) not in leaving]
            handle.write(b"".join(kept))

        if dropped:
            writers[layout.MISSING_NAME] = write

    def update(new: Checkpoint) -> None:
        totals = new.totals
        totals.missing -= sum(dropped.values())
        totals.missing_discontinued -= dropped.get(b"DISCONTINUED", 0)
        totals.missing_replaced -= dropped.get(b"REPLACED", 0)
        totals.missing_not_in_history -= dropped.get(b"NOT_IN_HISTORY", 0)
        totals.missing_refused -= dropped.get(b"REFUSED", 0)
        totals.refused -= refused
        new.segments.append(segment.key)
        new.fingerprint = fingerprint_of(new)
        new.total_batches = None  # the producer counts them again when it reaches the end

    return rewrite.replace(directory, state, writers, update)


@contextlib.contextmanager
def plan_lock(plan_dir: Path, own_dir: Path) -> Iterator[None]:
    """The plan's lock: an array's DIR lock (waited for), nothing more for a single run,
    whose directory's lock the caller holds."""
    if plan_dir == own_dir:
        yield
        return
    lock = RunLock(plan_dir)
    acquire_waiting(lock, timeout_s=_PLAN_WAIT_S)
    try:
        yield
    finally:
        lock.release()


def _unfinished(plan: IdPlan, out_dir: Path, task_count: int, batch_size: int) -> list[str]:
    """The tasks of the run whose batches are not all committed or failed yet."""
    unfinished = []
    for index in range(task_count):
        task = TaskSpec(index, task_count)
        directory = task.directory(out_dir)
        state = ckpt.load(directory) if (directory / layout.CHECKPOINT_NAME).exists() else None
        total, _ = plan.task_share(task, batch_size)
        if state is None or state.committed_batches + len(state.failed) < total:
            unfinished.append(directory.name if task_count > 1 else str(directory))
    return unfinished


def unfinished_tasks(plan: IdPlan, out_dir: Path, task_count: int, batch_size: int
                     ) -> list[str]:
    """The tasks of the run whose batches are not all committed or failed yet (a taxon
    run's ``--refresh-list`` grows it only when there are none: run/refresh.py)."""
    return _unfinished(plan, out_dir, task_count, batch_size)


def held_genes(out_dir: Path) -> IdBitmap:
    """Genes a run holds that nobody requested: the new GeneIDs in every task's replaced.tsv."""
    held = IdBitmap()
    for directory in layout.task_directories(out_dir):
        state = ckpt.load(directory)
        if state is None:
            continue
        length = state.file_lengths.get(layout.REPLACED_NAME, 0)
        held.update(int(row.split(b"\t", 2)[1])
                    for row in committed_rows(directory / layout.REPLACED_NAME, length))
    return held


def grow_add(config: DownloadConfig, plan: IdPlan) -> IdPlan:
    """``--add``: the IDs of ``config.inputs`` the run does not have, as a new segment
    (none if the same input was added before). Call under the plan's lock; returns the plan
    as it now is."""
    return grow_requested(config, plan, "add", add_key(config), ", ".join(config.inputs),
                          read_ids(config.inputs, config.inputs, parse_column(config.column),
                                   config.network.secret))


def add_key(config: DownloadConfig) -> str:
    """What finds an ``--add`` of these inputs again (added twice, they add nothing)."""
    digests = [file_digest(path) for path in config.inputs]
    return "add:" + ",".join(digests) + (f":column={config.column}" if config.column else "")


def would_add(config: DownloadConfig, state: Checkpoint, plan_dir: Path) -> list[int]:
    """``--add --dry-run``: the GeneIDs of ``config.inputs`` a real ``--add`` would fetch
    (those the run does not have, none if the same input was added before); reads only."""
    plan = load_plan(plan_dir, state)
    if any(segment.key == add_key(config) for segment in plan.segments):
        return []
    held = held_genes(config.out_dir)
    fresh: list[int] = []
    seen = IdBitmap()
    for item in read_ids(config.inputs, config.inputs, parse_column(config.column),
                         config.network.secret):
        if isinstance(item, int) and seen.add(item) and item not in plan.requested \
                and item not in held:
            fresh.append(item)
    return fresh


def grow_requested(config: DownloadConfig, plan: IdPlan, kind: SegmentKind, key: str,
                   name: str, items: Iterable[int | Reject]) -> IdPlan:
    """New requested IDs for a finished run (``add``; a taxon's ``refresh``): those of
    ``items`` the run does not have, as a segment found again by ``key`` (none is added if
    one with that key exists). Call under the plan's lock; returns the plan as it now is."""
    if any(segment.key == key for segment in plan.segments):
        return plan
    batch_size = config.output.batch_size
    # a growth of new IDs is for a finished run: the run's own work first
    refuse_unfinished(config.out_dir, unfinished(config.out_dir), None,
                      "the same --add again" if kind == "add" else "the same command again")
    held = held_genes(config.out_dir)
    fresh: list[int] = []
    seen = IdBitmap()
    duplicates = rejected = already = 0
    with _rejects(plan) as record:
        for item in items:
            if not isinstance(item, int):
                record(item)
                rejected += 1
                continue
            if not seen.add(item):
                duplicates += 1
            elif item in plan.requested or item in held:
                already += 1
            else:
                fresh.append(item)
    count = config.task.count
    parts: list[list[int]] = [[] for _ in range(count)]
    for start in range(0, len(fresh), batch_size):  # batch j of the segment to task j mod N
        parts[(start // batch_size) % count].extend(fresh[start:start + batch_size])
    number = len(plan.segments) + 1
    segment = segs.write_segment(plan.directory, number, kind, key, name, parts,
                                 duplicates=duplicates, rejected=rejected, already=already)
    idplan.append_segment(plan.directory, segment)
    log.info("added %s to the run: %d new GeneIDs (%d it already had, %d duplicates, %d "
             "rejected lines -> %s)", name, len(fresh), already, duplicates, rejected,
             plan.directory / layout.REJECTS_NAME)
    return _reload(plan)


@contextlib.contextmanager
def _rejects(plan: IdPlan) -> Iterator[Callable[[Reject], None]]:
    """rejects.tsv with a growth's rejected lines after those the plan already counts.

    The whole file is written anew and renamed over the old one before plan.json records
    the growth (its commit point): rows a killed growth appended after the counted ones are
    dropped, so the growth made again records its lines once.
    """
    path = plan.directory / layout.REJECTS_NAME
    counted = plan.rejected_total
    with durable.atomic_file(path) as handle:
        handle.write(layout.REJECTS_HEADER)
        kept = 0
        if path.exists():
            with durable.open_read(path) as old:
                old.readline()
                while kept < counted and (row := old.readline()).endswith(b"\n"):
                    handle.write(row)
                    kept += 1
        if kept < counted:
            log.warning("%s holds %d of the %d rejected lines counted so far (it was changed "
                        "outside bulkgene); the new ones follow them", path, kept, counted)

        def record(reject: Reject) -> None:
            handle.write(reject.row())

        yield record


def _reload(plan: IdPlan) -> IdPlan:
    header = idplan.read_header(plan.directory)
    again = idplan.load(plan.directory, header.digests) if header is not None else None
    if again is None:
        raise StateError(f"the plan in {plan.directory} can't be read back after growing: "
                         "run the command again")
    return again


def load_plan(plan_dir: Path, state: Checkpoint) -> IdPlan:
    """The plan of the run whose checkpoint is ``state``, in ``plan_dir`` (its directory, or
    an array's DIR)."""
    key = [entry.digest for entry in state.inputs]
    if state.params.get("column") is not None:
        key.append(f"column={state.params['column']}")
    plan = idplan.load(plan_dir, key)
    if plan is None:
        raise StateError(
            f"the input plan of the run in {plan_dir} (plan.json, plan.ids, plan.bitmap) is "
            "gone or belongs to another list: run the run's own fetch command once, which "
            "makes it again from the input files")
    return plan


@contextlib.contextmanager
def whole_run(out_dir: Path) -> Iterator[tuple[IdPlan, list[tuple[Path, TaskSpec, Checkpoint]]]]:
    """Every task of the run in ``out_dir`` locked, rewrites finished and every segment taken
    in, with the plan's lock held: the state a new growth starts from."""
    directories = layout.task_directories(out_dir)
    if not directories:
        raise StateError(f"{out_dir} holds no bulkgene run (no checkpoint.json)")
    locks: list[RunLock] = []
    try:
        states: list[tuple[Path, Checkpoint]] = []
        for directory in directories:
            lock = RunLock(directory)
            lock.acquire()
            locks.append(lock)
            state = ckpt.load(directory)
            if state is None:
                raise StateError(f"{directory} has no checkpoint.json: its run never started")
            states.append((directory, rewrite.finish(directory, state)))
        first = states[0][1]
        count = int(first.params.get("task_count", 1))
        if count > 1:
            plan_dir_lock = RunLock(out_dir)
            acquire_waiting(plan_dir_lock, timeout_s=_PLAN_WAIT_S)
            locks.append(plan_dir_lock)
        plan = load_plan(out_dir, first)
        tasks = []
        for directory, state in states:
            task = TaskSpec(int(state.params.get("task_index", 0)), count)
            tasks.append((directory, task, absorb(directory, state, plan, task)))
        yield plan, tasks
    finally:
        for lock in reversed(locks):
            lock.release()


@dataclass(frozen=True)
class Regrowth:
    """What a ``retry`` or ``follow`` is about to fetch."""

    originals: int  # IDs picked now (rows that left missing.tsv for the new segment)
    fetched: int  # distinct GeneIDs the new segment fetches
    resumed: int  # GeneIDs an interrupted retry/follow of the same kind left to fetch
    failed_batches: int  # batches that failed earlier: any resume retries them
    failed_ids: int


def settled(state: Checkpoint) -> Callable[[int], bool]:
    """Whether a batch of the task whose checkpoint is ``state`` is committed or failed."""
    return lambda index: state.is_committed(index) or index in state.failed


def left_to_fetch(listed: int, segments: list[Segment],
                  tasks: Sequence[tuple[TaskSpec, Checkpoint]]) -> list[idplan.Unsettled]:
    """What the tasks of a run (``listed`` IDs grown by ``segments``) have still to fetch,
    part by part, failed batches aside; an array's tasks that never wrote anything included."""
    left: list[idplan.Unsettled] = []
    batch_size = 1000
    count = 1
    present = set()
    for task, state in tasks:
        batch_size = int(state.params.get("batch_size", 1000))
        count = task.count
        present.add(task.index)
        left += idplan.unsettled(listed, segments, task, batch_size, settled(state))
    for index in sorted(set(range(count)) - present):  # nothing committed: all of it
        left += idplan.unsettled(listed, segments, TaskSpec(index, count), batch_size,
                                 lambda _: False)
    return left


def unfinished(out_dir: Path) -> list[idplan.Unsettled]:
    """What the tasks of the run in ``out_dir`` have still to fetch, read without locks
    (a check before anything changes; ``grow_again`` checks again under the locks)."""
    header = idplan.read_header(out_dir)
    tasks = []
    for directory in layout.task_directories(out_dir):
        state = ckpt.load(directory)
        if state is not None:
            tasks.append((TaskSpec(int(state.params.get("task_index", 0)),
                                   int(state.params.get("task_count", 1))), state))
    return [] if header is None else left_to_fetch(header.requested, header.segments, tasks)


def added_up(left: Sequence[idplan.Unsettled]) -> list[idplan.Unsettled]:
    """The tasks' parts of the list and of each growth, added up."""
    total: dict[tuple[str, str], idplan.Unsettled] = {}
    for part in left:
        known = total.get((part.kind, part.name))
        total[part.kind, part.name] = part if known is None else idplan.Unsettled(
            part.kind, part.name, known.batches + part.batches, known.ids + part.ids)
    return list(total.values())


def refuse_unfinished(out_dir: Path, left: Sequence[idplan.Unsettled],
                      kind: SegmentKind | None, command: str) -> None:
    """StateError unless everything ``left`` to fetch is of ``kind`` (an interrupted run of
    ``command`` itself, which goes on): a retry or follow grows a finished run, and would
    otherwise finish another command's work at its own rate and settings."""
    if others := [part for part in added_up(left) if part.kind != kind]:
        shown = "; ".join(f"{part.ids} {part.what()} (run {part.command(out_dir)})"
                          for part in others)
        raise StateError(f"the run in {out_dir} is not finished: {shown}. Finish it that "
                         f"way first, then run {command}; nothing was fetched.")


def grow_again(out_dir: Path, kind: SegmentKind, name: str,
               pick: Callable[[Path, Checkpoint, IdPlan], Sequence[Pick]],
               command: str) -> Regrowth:
    """A ``retry`` or ``follow`` segment of what ``pick`` chooses in each task (fetched ID,
    original ID, the original's row), taken in by every task. Refused (StateError) while
    the run has work of another kind left (``refuse_unfinished``); ``command`` is the one
    to run again once it is done."""
    with whole_run(out_dir) as (plan, tasks):
        left = left_to_fetch(plan.counts.requested, plan.segments,
                             [(task, state) for _, task, state in tasks])
        refuse_unfinished(out_dir, left, kind, command)
        failed_batches = sum(len(state.failed) for _, _, state in tasks)
        failed_ids = sum(sum(state.failed.values()) for _, _, state in tasks)
        resumed = sum(part.ids for part in left)
        count = len(tasks)
        parts: list[list[int]] = [[] for _ in range(count)]
        notes: list[list[Pick]] = [[] for _ in range(count)]
        for directory, task, state in tasks:
            picks = pick(directory, state, plan)
            notes[task.index] = list(picks)
            parts[task.index] = list(dict.fromkeys(fetched for fetched, _, _ in picks))
        originals = sum(len(task_notes) for task_notes in notes)
        fetched = sum(len(part) for part in parts)
        growth = Regrowth(originals, fetched, resumed, failed_batches, failed_ids)
        if not originals:
            return growth
        number = len(plan.segments) + 1
        segment = segs.write_segment(plan.directory, number, kind, f"{kind}:{number}", name,
                                     parts, notes)
        idplan.append_segment(plan.directory, segment)
        grown = _reload(plan)
        for directory, task, state in tasks:
            absorb(directory, state, grown, task)
    return growth


def refused_rows(directory: Path, state: Checkpoint, plan: IdPlan) -> list[Pick]:
    """``retry``'s pick: every committed missing.tsv row that says REJECTED_BY_SERVER."""
    del plan  # a refused ID is fetched again whatever else the run holds
    length = state.file_lengths.get(layout.MISSING_NAME, 0)
    picks = []
    for row in committed_rows(directory / layout.MISSING_NAME, length):
        fields = row.split(b"\t", 2)
        if len(fields) > 1 and fields[1] == layout.REFUSED_REASON:
            picks.append((int(fields[0]), int(fields[0]), row))
    return picks


def check_added_inputs(inputs: Sequence[str]) -> None:
    """``--add`` reads files: stdin and pipes can't be fingerprinted and read again."""
    for name in inputs:
        path = Path(name)
        if name == "-" or not path.is_file():
            raise InputError(f"--add reads ID files, and {name!r} is not one (stdin and pipes "
                             "can't be read twice): save the IDs to a file first, then add it")
