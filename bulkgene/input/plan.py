"""The input parsed once: its unique GeneIDs in order, the set of them, and the counts.

The first run streams the input a single time, writing the unique IDs as a flat uint32
file (4 bytes per ID: 240 MB for all of NCBI Gene), the set of requested IDs (a roaring
bitmap: bytes per ID, not per range of IDs) and the counts into the task directory. A
resumed run whose input digests match reads those back instead of parsing again, and reads
any batch straight from its offset in the ID file, so skipping 60 000 committed batches
costs nothing. Files are written to temporary names and renamed, ``plan.json`` last: a
plan without it is simply made again. A run that grew (--add, retry, --follow-replaced) has
segments after the list's IDs (input/segments.py), which plan.json names.
"""

from __future__ import annotations

import shlex
import sys
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from bulkgene import durable
from bulkgene.config import TaskSpec
from bulkgene.errors import StateError
from bulkgene.input import segments as segs
from bulkgene.input.idset import IdBitmap
from bulkgene.input.lines import InputCounts, Reject, read_ids
from bulkgene.input.segments import Segment
from bulkgene.layout import PLAN_BITMAP, PLAN_IDS, PLAN_JSON
from bulkgene.model import Batch, OnBehalf

# 2: plan.bitmap is a roaring bitmap, and plan.json holds checksums of plan.ids and
# plan.bitmap. A plan of format 1 is not read: load() says no, and the input is parsed
# again into a format-2 plan, in the same order.
_FORMAT = 2
_FLUSH_IDS = 1 << 16


class PlanHeader(msgspec.Struct, frozen=True):
    """plan.json: which inputs the plan was made from, their counts, its files' checksums."""

    format: int
    digests: list[str]  # the inputs' digests (and the column, when one was chosen)
    requested: int
    duplicates: int
    rejected: int
    checksums: dict[str, str]
    segments: list[Segment] = msgspec.field(default_factory=list)  # growths, in order


def read_header(directory: Path) -> PlanHeader | None:
    """``directory``'s plan.json, None if there is none or it can't be read as one."""
    try:
        return msgspec.json.decode(durable.read_bytes(directory / PLAN_JSON), type=PlanHeader)
    except (OSError, msgspec.DecodeError):
        return None


@dataclass
class IdPlan:
    """Where the unique IDs of an input are, what the input held, and what the run grew by."""

    directory: Path
    counts: InputCounts
    requested: IdBitmap  # the list's IDs and those of every segment that requests IDs
    segments: list[Segment] = field(default_factory=list)

    def batches(self, batch_size: int, wanted: Callable[[int], bool]) -> Iterator[Batch]:
        """The list's batches 0, 1, 2... of ``batch_size`` IDs, read only where ``wanted(index)``."""
        total = -(-self.counts.requested // batch_size)
        with durable.open_read(self.directory / PLAN_IDS) as handle:
            for index in range(total):
                if not wanted(index):
                    continue
                handle.seek(index * batch_size * 4)
                ids = array("I")
                ids.frombytes(handle.read(batch_size * 4))
                if sys.byteorder != "little":
                    ids.byteswap()
                yield Batch(index, tuple(ids))

    def task_share(self, task: TaskSpec, batch_size: int) -> tuple[int, int]:
        """(batches, requested IDs) of ``task``: its share of the list and of every segment."""
        return task_share(self.counts.requested, self.segments, task, batch_size)

    def task_batches(self, task: TaskSpec, batch_size: int,
                     wanted: Callable[[int], bool]) -> Iterator[Batch]:
        """``task``'s batches, numbered 0, 1, 2... as it counts them (the list's share, then
        its part of each segment), read only where ``wanted(index)``."""
        for batch in self.batches(batch_size, lambda index: task.takes(index) and wanted(
                index // task.count)):
            yield Batch(batch.index // task.count, batch.gene_ids)
        first, _ = task.share(self.counts.requested, batch_size)
        for segment in self.segments:
            part = segment.per_task[task.index]
            count = -(-part // batch_size)
            if not any(wanted(first + j) for j in range(count)):
                first += count
                continue
            ids = segs.task_ids(self.directory, segment, task.index)
            notes = segs.task_notes(self.directory, segment, task.index)
            for j in range(count):
                if wanted(first + j):
                    chunk = tuple(ids[j * batch_size:(j + 1) * batch_size])
                    behalf = (OnBehalf(segment.kind == "follow",
                                       {gene_id: tuple(notes.get(gene_id, ())) for gene_id in chunk})
                              if segment.notes is not None else None)
                    yield Batch(first + j, chunk, behalf)
            first += count

    @property
    def requested_total(self) -> int:
        """Unique requested IDs: the list's and every requesting segment's."""
        return self.counts.requested + sum(sum(s.per_task) for s in self.segments
                                           if s.requests_ids)

    @property
    def duplicates_total(self) -> int:
        return self.counts.duplicates + sum(s.duplicates for s in self.segments)

    @property
    def rejected_total(self) -> int:
        return self.counts.rejected + sum(s.rejected for s in self.segments)


def task_share(listed: int, segments: list[Segment], task: TaskSpec,
               batch_size: int) -> tuple[int, int]:
    """(batches, requested IDs) of ``task`` in a plan of ``listed`` IDs grown by ``segments``
    (IDs a retry or follow segment fetches again were requested before: not counted)."""
    batches, requested = task.share(listed, batch_size)
    for segment in segments:
        part = segment.per_task[task.index]
        batches += -(-part // batch_size)
        if segment.requests_ids:
            requested += part
    return batches, requested


@dataclass(frozen=True)
class Unsettled:
    """A part of a task's plan (its share of the list, or a growth) with batches neither
    committed nor failed: what an interrupted command left, and the command that finishes it."""

    kind: str  # "list", or the growth's kind (add, refresh, retry, follow)
    name: str  # the growth's name (the added file): "" for the list
    batches: int
    ids: int  # GeneIDs those batches fetch

    def command(self, run_dir: Path) -> str:
        """What to run to finish it, in words."""
        if self.kind == "add":
            files = " ".join(shlex.quote(name) for name in self.name.split(", "))
            return f"bulkgene fetch {files} --out {run_dir} --add (with the run's options)"
        if self.kind == "retry":
            return f"bulkgene retry {run_dir}"
        if self.kind == "follow":
            return f"bulkgene explain {run_dir} --follow-replaced"
        if self.kind == "refresh":
            return "the fetch command that refreshed the list"
        return "the fetch command that started the run"

    def what(self) -> str:
        """What these batches are, in words."""
        return {"list": "GeneIDs of the list", "add": f"added GeneIDs ({self.name})",
                "refresh": "GeneIDs of the refreshed list",
                "retry": "refused GeneIDs of an interrupted retry",
                "follow": "live successors of an interrupted --follow-replaced"}.get(
                    self.kind, self.kind)


def unsettled(listed: int, segments: list[Segment], task: TaskSpec, batch_size: int,
              settled: Callable[[int], bool]) -> list[Unsettled]:
    """The parts of ``task``'s plan (``listed`` IDs grown by ``segments``) with batches that
    ``settled`` (committed or failed, by the task's batch index) says are still to fetch."""
    parts: list[Unsettled] = []
    count, _ = task.share(listed, batch_size)
    batches = ids = 0
    for local in range(count):
        if not settled(local):
            batches += 1
            ids += min(batch_size, listed - (local * task.count + task.index) * batch_size)
    if batches:
        parts.append(Unsettled("list", "", batches, ids))
    first = count
    for segment in segments:
        part = segment.per_task[task.index]
        count = -(-part // batch_size)
        batches = ids = 0
        for j in range(count):
            if not settled(first + j):
                batches += 1
                ids += min(batch_size, part - j * batch_size)
        if batches:
            parts.append(Unsettled(segment.kind, segment.name, batches, ids))
        first += count
    return parts


def append_segment(directory: Path, segment: Segment) -> None:
    """Record ``segment`` (its files written) as the plan's next growth: plan.json, atomically."""
    header = read_header(directory)
    if header is None:
        raise StateError(f"{directory / PLAN_JSON} can't be read, so the run can't grow: run "
                         "its fetch command again first")
    grown = msgspec.structs.replace(header, segments=[*header.segments, segment])
    durable.write_atomically(directory / PLAN_JSON, msgspec.json.encode(grown))


def _ids_bytes(ids: array[int]) -> bytes:
    if sys.byteorder != "little":
        ids = array("I", ids)
        ids.byteswap()
    return ids.tobytes()


def build(directory: Path, paths: tuple[str, ...], names: tuple[str, ...],
          digests: list[str], on_reject: Callable[[Reject], None],
          column: int | str | None = None, secret: str | None = None) -> IdPlan:
    """Stream the input once into a new plan in ``directory``; nothing is left on InputError.
    ``secret`` (the API key) is masked in rejected lines."""
    ids_tmp = directory / (PLAN_IDS + ".tmp")
    try:
        return _build(directory, paths, names, digests, on_reject, column, ids_tmp, secret)
    except BaseException:
        ids_tmp.unlink(missing_ok=True)
        raise


def _build(directory: Path, paths: tuple[str, ...], names: tuple[str, ...],
           digests: list[str], on_reject: Callable[[Reject], None],
           column: int | str | None, ids_tmp: Path, secret: str | None) -> IdPlan:
    counts = InputCounts()
    requested = IdBitmap()
    add = requested.add
    pending = array("I")
    with durable.atomic_file(directory / PLAN_IDS) as ids_out:
        for item in read_ids(paths, names, column, secret):
            if isinstance(item, int):
                if add(item):
                    counts.requested += 1
                    pending.append(item)
                    if len(pending) >= _FLUSH_IDS:
                        ids_out.write(_ids_bytes(pending))
                        del pending[:]
                else:
                    counts.duplicates += 1
            else:
                counts.rejected += 1
                on_reject(item)
        ids_out.write(_ids_bytes(pending))
    with durable.atomic_file(directory / PLAN_BITMAP) as bitmap_out:
        requested.write_to(bitmap_out)
    # a run that grew keeps its growths when its list's plan is made again (the same list)
    before = read_header(directory)
    grown = before.segments if before is not None and before.digests == digests else []
    header = PlanHeader(_FORMAT, digests, counts.requested, counts.duplicates, counts.rejected,
                        {name: segs.file_checksum(directory / name) for name in (PLAN_IDS, PLAN_BITMAP)},
                        grown)
    durable.write_atomically(directory / PLAN_JSON, msgspec.json.encode(header))
    return IdPlan(directory, counts, requested)


def load(directory: Path, digests: list[str]) -> IdPlan | None:
    """The plan in ``directory`` if it was made from inputs with these digests, else None."""
    header = read_header(directory)
    if header is None or header.format != _FORMAT or header.digests != digests:
        return None
    try:
        counts = InputCounts(header.requested, header.duplicates, header.rejected)
        if (directory / PLAN_IDS).stat().st_size != 4 * counts.requested:
            return None
        for name in (PLAN_IDS, PLAN_BITMAP):
            if segs.file_checksum(directory / name) != header.checksums.get(name):
                raise StateError(
                    f"{directory / name} does not match the checksum in {directory / PLAN_JSON}: "
                    "the input plan was changed or damaged outside bulkgene. Delete plan.json, "
                    "plan.ids and plan.bitmap there and run the same command again: the plan is "
                    "made anew from the input, and what was committed stays.")
        with durable.open_read(directory / PLAN_BITMAP) as handle:
            requested = IdBitmap.read_from(handle, counts.requested)
    except (OSError, ValueError):
        return None
    for segment in header.segments:
        segs.check(directory, segment)
        if segment.requests_ids:
            for task_index in range(len(segment.per_task)):
                requested.update(segs.task_ids(directory, segment, task_index))
    return IdPlan(directory, counts, requested, list(header.segments))
