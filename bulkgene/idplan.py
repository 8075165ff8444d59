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

import os
import sys
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from bulkgene.batches import Batch
from bulkgene.ids import InputCounts, Reject, read_ids
from bulkgene.idset import IdBitmap

PLAN_JSON = "plan.json"
PLAN_IDS = "plan.ids"
PLAN_BITMAP = "plan.bitmap"
PLAN_FILES = (PLAN_JSON, PLAN_IDS, PLAN_BITMAP)
# 2: plan.bitmap is a roaring bitmap. A plan of format 1 (128 KiB per touched 1 Mi-ID range)
# is not read: load() says no, and the input is parsed again into a format-2 plan, same order.
_FORMAT = 2
_FLUSH_IDS = 1 << 16


@dataclass
class IdPlan:
    """Where the unique IDs of an input are, and what the input held."""

    directory: Path
    counts: InputCounts
    requested: IdBitmap

    def batches(self, batch_size: int, wanted: Callable[[int], bool]) -> Iterator[Batch]:
        """Batches 0, 1, 2... of ``batch_size`` IDs, read only where ``wanted(index)``."""
        total = -(-self.counts.requested // batch_size)
        with open(self.directory / PLAN_IDS, "rb") as handle:
            for index in range(total):
                if not wanted(index):
                    continue
                handle.seek(index * batch_size * 4)
                ids = array("I")
                ids.frombytes(handle.read(batch_size * 4))
                if sys.byteorder != "little":
                    ids.byteswap()
                yield Batch(index, tuple(ids))


def _ids_bytes(ids: array[int]) -> bytes:
    if sys.byteorder != "little":
        ids = array("I", ids)
        ids.byteswap()
    return ids.tobytes()


def _fsynced_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def build(directory: Path, paths: tuple[str, ...], names: tuple[str, ...],
          digests: list[str], on_reject: Callable[[Reject], None]) -> IdPlan:
    """Stream the input once into a new plan in ``directory``."""
    counts = InputCounts()
    requested = IdBitmap()
    add = requested.add
    pending = array("I")
    ids_tmp = directory / (PLAN_IDS + ".tmp")
    with open(ids_tmp, "wb") as ids_out:
        for item in read_ids(paths, names):
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
    bitmap_tmp = directory / (PLAN_BITMAP + ".tmp")
    with open(bitmap_tmp, "wb") as bitmap_out:
        requested.write_to(bitmap_out)
    for name, tmp in ((PLAN_IDS, ids_tmp), (PLAN_BITMAP, bitmap_tmp)):
        _fsynced_rename(tmp, directory / name)
    header = {"format": _FORMAT, "digests": digests, "requested": counts.requested,
              "duplicates": counts.duplicates, "rejected": counts.rejected}
    json_tmp = directory / (PLAN_JSON + ".tmp")
    json_tmp.write_bytes(orjson.dumps(header))
    _fsynced_rename(json_tmp, directory / PLAN_JSON)
    return IdPlan(directory, counts, requested)


def load(directory: Path, digests: list[str]) -> IdPlan | None:
    """The plan in ``directory`` if it was made from inputs with these digests, else None."""
    try:
        header = orjson.loads((directory / PLAN_JSON).read_bytes())
        if header.get("format") != _FORMAT or header.get("digests") != digests:
            return None
        counts = InputCounts(int(header["requested"]), int(header["duplicates"]),
                             int(header["rejected"]))
        if (directory / PLAN_IDS).stat().st_size != 4 * counts.requested:
            return None
        with open(directory / PLAN_BITMAP, "rb") as handle:
            requested = IdBitmap.read_from(handle, counts.requested)
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None
    return IdPlan(directory, counts, requested)
