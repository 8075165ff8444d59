"""The input parsed once: its unique GeneIDs in order, the set of them, and the counts.

The first run streams the input a single time, writing the unique IDs as a flat uint32
file (4 bytes per ID: 240 MB for all of NCBI Gene), the set of requested IDs (a roaring
bitmap: bytes per ID, not per range of IDs) and the counts into the task directory. A
resumed run whose input digests match reads those back instead of parsing again, and reads
any batch straight from its offset in the ID file, so skipping 60 000 committed batches
costs nothing. Files are written to temporary names and renamed, ``plan.json`` last: a
plan without it is simply made again.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bulkgene import durable
from bulkgene.errors import StateError
from bulkgene.input.idset import IdBitmap
from bulkgene.input.lines import InputCounts, Reject, read_ids
from bulkgene.layout import PLAN_BITMAP, PLAN_IDS, PLAN_JSON
from bulkgene.model import Batch

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


def read_header(directory: Path) -> PlanHeader | None:
    """``directory``'s plan.json, None if there is none or it can't be read as one."""
    try:
        return msgspec.json.decode(durable.read_bytes(directory / PLAN_JSON), type=PlanHeader)
    except (OSError, msgspec.DecodeError):
        return None


@dataclass
class IdPlan:
    """Where the unique IDs of an input are, and what the input held."""

    directory: Path
    counts: InputCounts
    requested: IdBitmap

    def batches(self, batch_size: int, wanted: Callable[[int], bool]) -> Iterator[Batch]:
        """Batches 0, 1, 2... of ``batch_size`` IDs, read only where ``wanted(index)``."""
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


def _file_checksum(path: Path) -> str:
    """blake2b-128 of a plan file: garbling it, even to the same size, is noticed."""
    digest = hashlib.blake2b(digest_size=16)
    with durable.open_read(path) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _ids_bytes(ids: array[int]) -> bytes:
    if sys.byteorder != "little":
        ids = array("I", ids)
        ids.byteswap()
    return ids.tobytes()


def build(directory: Path, paths: tuple[str, ...], names: tuple[str, ...],
          digests: list[str], on_reject: Callable[[Reject], None],
          column: int | str | None = None) -> IdPlan:
    """Stream the input once into a new plan in ``directory``; nothing is left on InputError."""
    ids_tmp = directory / (PLAN_IDS + ".tmp")
    try:
        return _build(directory, paths, names, digests, on_reject, column, ids_tmp)
    except BaseException:
        ids_tmp.unlink(missing_ok=True)
        raise


def _build(directory: Path, paths: tuple[str, ...], names: tuple[str, ...],
           digests: list[str], on_reject: Callable[[Reject], None],
           column: int | str | None, ids_tmp: Path) -> IdPlan:
    counts = InputCounts()
    requested = IdBitmap()
    add = requested.add
    pending = array("I")
    with durable.atomic_file(directory / PLAN_IDS) as ids_out:
        for item in read_ids(paths, names, column):
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
    header = PlanHeader(_FORMAT, digests, counts.requested, counts.duplicates, counts.rejected,
                        {name: _file_checksum(directory / name) for name in (PLAN_IDS, PLAN_BITMAP)})
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
            if _file_checksum(directory / name) != header.checksums.get(name):
                raise StateError(
                    f"{directory / name} does not match the checksum in {directory / PLAN_JSON}: "
                    "the input plan was changed or damaged outside bulkgene. Delete plan.json, "
                    "plan.ids and plan.bitmap there and run the same command again: the plan is "
                    "made anew from the input, and what was committed stays.")
        with durable.open_read(directory / PLAN_BITMAP) as handle:
            requested = IdBitmap.read_from(handle, counts.requested)
    except (OSError, ValueError):
        return None
    return IdPlan(directory, counts, requested)
