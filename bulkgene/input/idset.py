"""IdBitmap: a set of GeneIDs whose memory and file size follow the number of IDs, not their range.

A Python ``set`` of 60 M ints costs several GB. A plain bitmap over 1..2**31-1 costs memory
per range touched, so a few stray large numbers (tax IDs, PubMed IDs in a mixed column) cost
as much as millions of real IDs. A roaring bitmap keeps each 2**16-ID range as a sorted
array of 16-bit offsets while it holds at most 4096 IDs and as an 8 KiB bitmap beyond: all of
NCBI Gene in ~16 MB, 10 M IDs spread over 1..2**28 in ~20 MB, a lone stray in ~50 bytes.

On disk it is the portable roaring format (github.com/RoaringBitmap/RoaringFormatSpec)
without run containers: each range's kind then follows from its count alone, so the same IDs
always give the same bytes, whatever order they were added in.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from pyroaring import BitMap

MAX_GENE_ID = 2**31 - 1
# the portable format's cookie when no range is stored as runs (RoaringFormatSpec)
_NO_RUNS_COOKIE = (12346).to_bytes(4, "little")
_PIECE_RANGES = 64  # ranges of 2**16 IDs written at a time: at most 512 KiB held twice


class IdBitmap:
    """A set of integers in 1..2**31-1 with fast add/contains and memory per member."""

    __slots__ = ("_add_checked", "_bits")

    def __init__(self, bits: BitMap | None = None) -> None:
        self._bits = BitMap() if bits is None else bits
        self._add_checked = self._bits.add_checked

    def add(self, gene_id: int) -> bool:
        """Add ``gene_id`` (0..2**31-1); True if it was not there before."""
        # duplicates are rare, so the exception is cheaper than a lookup before every add
        try:
            self._add_checked(gene_id)
        except KeyError:
            return False
        return True

    def update(self, gene_ids: Iterable[int]) -> None:
        """Add every ID of ``gene_ids`` (each 0..2**31-1) at once."""
        self._bits.update(gene_ids)

    @property
    def fast_contains(self) -> Callable[[int], bool]:
        """Membership of an int already known to be in 0..2**32-1, without the checks of
        ``in`` (a tight loop over millions of rows calls it for each)."""
        contains: Callable[[int], bool] = self._bits.__contains__
        return contains

    def rank(self, gene_id: int) -> int:
        """How many members are at most ``gene_id`` (a member's place, counting from 1)."""
        return int(self._bits.rank(gene_id))

    def intersection(self, other: IdBitmap) -> IdBitmap:
        return IdBitmap(self._bits & other._bits)

    def difference(self, other: IdBitmap) -> IdBitmap:
        return IdBitmap(self._bits - other._bits)

    def union(self, other: IdBitmap) -> IdBitmap:
        return IdBitmap(self._bits | other._bits)

    def __contains__(self, gene_id: object) -> bool:
        if not isinstance(gene_id, int) or not 0 <= gene_id <= MAX_GENE_ID:
            return False
        return gene_id in self._bits

    def __len__(self) -> int:
        return len(self._bits)

    def __iter__(self) -> Iterator[int]:
        """The members in ascending order."""
        return iter(self._bits)

    def to_bytes(self) -> bytes:
        """The set in the portable roaring format: the same IDs always give the same bytes."""
        buffer = io.BytesIO()
        self.write_to(buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> IdBitmap:
        """The set that ``to_bytes`` gave; ValueError if ``data`` is not one."""
        # run containers never come from add(); refusing them keeps to_bytes deterministic
        if data[:4] != _NO_RUNS_COOKIE:
            raise ValueError("not an ID set written by bulkgene (unknown roaring cookie)")
        bits = BitMap.deserialize(data)
        if len(bits) and bits.max() > MAX_GENE_ID:
            raise ValueError("the ID set holds a number above 2**31-1")
        return cls(bits)

    def write_to(self, handle: BinaryIO) -> int:
        """Write ``to_bytes()`` to the seekable ``handle`` a piece at a time; returns its length.

        ``serialize()`` would hold the whole file twice at once (2 x 20 MB for 10 M spread IDs,
        more than the set itself): the peak of a run. Pieces of 64 ranges are serialized one by
        one instead, their data written in order and their headers merged into one.
        """
        bits = self._bits
        bits.shrink_to_fit()  # the set lives as long as the run: drop the growth slack
        containers = int(bits.get_statistics()["n_containers"])
        header_bytes = 8 + 8 * containers
        start = handle.tell()
        handle.seek(start + header_bytes)
        descriptors = bytearray()
        offsets: list[int] = []
        end = header_bytes
        if bits:
            first_key, last_key = bits.min() >> 16, bits.max() >> 16
            for key in range(first_key, last_key + 1, _PIECE_RANGES):
                piece = bits & BitMap(range(key << 16, min(key + _PIECE_RANGES, 1 << 16) << 16))
                if not piece:
                    continue
                data = piece.serialize()
                if data[:4] != _NO_RUNS_COOKIE:
                    raise RuntimeError("the ID set holds run containers, which add() never makes")
                count = int.from_bytes(data[4:8], "little")
                piece_header_bytes = 8 + 8 * count
                descriptors += data[8:8 + 4 * count]
                shift = end - piece_header_bytes
                offsets.extend(offset + shift
                               for offset in struct.unpack_from(f"<{count}I", data, 8 + 4 * count))
                handle.write(memoryview(data)[piece_header_bytes:])
                end += len(data) - piece_header_bytes
        if len(offsets) != containers:
            raise RuntimeError(f"the ID set's {containers} ranges came out as {len(offsets)}")
        handle.seek(start)
        handle.write(_NO_RUNS_COOKIE + containers.to_bytes(4, "little") + descriptors
                     + struct.pack(f"<{containers}I", *offsets))
        handle.seek(start + end)
        return end

    @classmethod
    def read_from(cls, handle: BinaryIO, count: int) -> IdBitmap:
        """The set that ``write_to`` wrote, which must hold ``count`` members."""
        bitmap = cls.from_bytes(handle.read())
        if len(bitmap) != count:
            raise ValueError(f"the ID set holds {len(bitmap)} IDs where {count} were expected")
        return bitmap

    @property
    def allocated_bytes(self) -> int:
        """Memory held by the members' containers (the small per-range overhead aside)."""
        stats = self._bits.get_statistics()
        return int(stats["n_bytes_array_containers"] + stats["n_bytes_run_containers"]
                   + stats["n_bytes_bitset_containers"])
