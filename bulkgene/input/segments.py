"""Segments: GeneIDs appended to a finished run's plan, each shared out to the run's tasks.

A run's plan is its input's unique IDs (plan.ids), cut into batches; task *t* of *N* takes
batches *b mod N = t* and numbers them 0, 1, 2... Growing the run (run/growth.py) never
touches those: it appends a segment, a list of IDs per task in a file of its own
(``plan-segment-0001.ids``), recorded in plan.json. A task's batches are its share of the
original batches, then, segment after segment, its part of each segment cut into batches,
numbered on from its last one: no committed batch changes, and the checkpoint's watermark
simply goes on.

Kinds: ``add`` and ``refresh`` bring new requested IDs (``--add``; a re-enumerated taxon),
shared out batch by batch (segment batch *j* to task *j mod N*, as the list's are);
``retry`` and ``follow`` fetch again, for the task that holds them, IDs the run already
answered (refused ones; the live successors of replaced ones), and carry a notes file
(``plan-segment-0001.notes``): for each ID fetched, the GeneIDs it answers for and the row
each had in missing.tsv, so that the answer can take their place (or the row come back).
Segment files are written first and plan.json, which names them with their checksums,
last: a segment exists once plan.json says so, and a killed growth leaves at most files
nobody names, which the next growth overwrites.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from bulkgene import durable
from bulkgene.errors import StateError

SegmentKind = Literal["add", "refresh", "retry", "follow"]
# kinds whose IDs are new requested IDs (the others answer for IDs requested before)
REQUESTING_KINDS = frozenset({"add", "refresh"})


class Segment(msgspec.Struct, frozen=True):
    """One growth of a run, as plan.json records it."""

    kind: SegmentKind
    key: str  # what it was made from: growing again from the same thing finds it by this
    name: str  # for people: the added file, or what was fetched again
    file: str  # the IDs, each task's part after the other's (uint32, little-endian)
    per_task: list[int]  # how many IDs each task takes, in file order
    checksum: str
    notes: str | None = None  # retry/follow: "task fetched original row" lines
    notes_checksum: str | None = None
    duplicates: int = 0  # of an added input: IDs it held twice,
    rejected: int = 0  # lines that held no GeneID,
    already: int = 0  # and IDs the run had before (not fetched again)

    def offset(self, task_index: int) -> int:
        """Where task ``task_index``'s part starts in the file, in IDs."""
        return sum(self.per_task[:task_index])

    @property
    def requests_ids(self) -> bool:
        return self.kind in REQUESTING_KINDS


def segment_names(number: int) -> tuple[str, str]:
    """The IDs file and notes file of the ``number``-th segment (counting from 1)."""
    return f"plan-segment-{number:04d}.ids", f"plan-segment-{number:04d}.notes"


def is_segment_name(name: str) -> bool:
    return name.startswith("plan-segment-") and name.endswith((".ids", ".notes"))


def file_checksum(path: Path) -> str:
    """blake2b-128 of a plan file: garbling it, even to the same size, is noticed."""
    digest = hashlib.blake2b(digest_size=16)
    with durable.open_read(path) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _ids_bytes(ids: Sequence[int]) -> bytes:
    packed = array("I", ids)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def write_segment(directory: Path, number: int, kind: SegmentKind, key: str, name: str,
                  parts: Sequence[Sequence[int]],
                  notes: Sequence[Sequence[tuple[int, int, bytes]]] | None = None,
                  duplicates: int = 0, rejected: int = 0, already: int = 0) -> Segment:
    """Write segment ``number``'s files (each atomically) and return its record for plan.json.

    ``parts[t]`` are task t's IDs in the order they are fetched; ``notes[t]`` its (fetched
    ID, original ID, original's missing.tsv row) triples.
    """
    ids_name, notes_name = segment_names(number)
    with durable.atomic_file(directory / ids_name) as handle:
        for part in parts:
            handle.write(_ids_bytes(part))
    segment = Segment(kind, key, name, ids_name, [len(part) for part in parts],
                      file_checksum(directory / ids_name), duplicates=duplicates,
                      rejected=rejected, already=already)
    if notes is None:
        return segment
    with durable.atomic_file(directory / notes_name) as handle:
        for task_index, task_notes in enumerate(notes):
            handle.write(b"".join(b"%d\t%d\t%d\t%s\n" % (task_index, fetched, original, row)
                                  for fetched, original, row in task_notes))
    return msgspec.structs.replace(segment, notes=notes_name,
                                   notes_checksum=file_checksum(directory / notes_name))


def check(directory: Path, segment: Segment) -> None:
    """StateError unless the segment's files are there as plan.json describes them."""
    for name, checksum in ((segment.file, segment.checksum),
                           (segment.notes, segment.notes_checksum)):
        if name is None:
            continue
        try:
            actual = file_checksum(directory / name)
        except OSError:
            actual = None
        if actual != checksum:
            raise StateError(
                f"{directory / name} is missing or does not match the checksum in "
                f"{directory / 'plan.json'}: a file of a run that grew (--add, retry, "
                "--follow-replaced) was changed or removed outside bulkgene. Put it back, or "
                "start the run over with --restart.")


def task_ids(directory: Path, segment: Segment, task_index: int) -> array[int]:
    """Task ``task_index``'s part of the segment, in order."""
    count = segment.per_task[task_index]
    ids = array("I")
    with durable.open_read(directory / segment.file) as handle:
        handle.seek(segment.offset(task_index) * 4)
        ids.frombytes(handle.read(count * 4))
    if sys.byteorder != "little":
        ids.byteswap()
    return ids


def task_notes(directory: Path, segment: Segment, task_index: int
               ) -> dict[int, list[tuple[int, bytes]]]:
    """For each ID task ``task_index`` fetches: the (original ID, its earlier row) it answers for."""
    behalf: dict[int, list[tuple[int, bytes]]] = {}
    if segment.notes is None:
        return behalf
    with durable.open_read(directory / segment.notes) as handle:
        for line in handle:
            task, fetched, original, row = line.rstrip(b"\n").split(b"\t", 3)
            if int(task) == task_index:
                behalf.setdefault(int(fetched), []).append((int(original), row))
    return behalf


def originals(directory: Path, segment: Segment, task_index: int) -> Iterator[int]:
    """The IDs whose missing.tsv rows task ``task_index`` gives up to this segment."""
    for answers in task_notes(directory, segment, task_index).values():
        for original, _ in answers:
            yield original
