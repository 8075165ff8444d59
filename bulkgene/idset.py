"""IdBitmap: a set of GeneIDs whose memory and file size follow the number of IDs, not their range.

A Python ``set`` of 60 M ints costs several GB. A plain bitmap over 1..2**31-1 costs memory
per range touched, so a few stray large numbers (tax IDs, PubMed IDs in a mixed column) cost
as much as millions of real IDs. A roaring bitmap keeps each 2**16-ID range as a sorted
array of 16-bit offsets while it holds at most 4096 IDs and as an 8 KiB bitmap beyond: all of
NCBI Gene in ~16 MB, 10 M IDs spread over 1..2**28 in ~20 MB, a stray in a few bytes.

On disk it is the portable roaring format (github.com/RoaringBitmap/RoaringFormatSpec)
without run containers: each range's kind then follows from its count alone, so the same IDs
always give the same bytes, whatever order they were added in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pyroaring import BitMap

MAX_GENE_ID = 2**31 - 1
# the portable format's cookie when no range is stored as runs (RoaringFormatSpec)
_NO_RUNS_COOKIE = (12346).to_bytes(4, "little")


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
        self._bits.shrink_to_fit()  # the set lives as long as the run: drop the growth slack
        data: bytes = self._bits.serialize()
        return data

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
        """Write the set to ``handle``; returns the number of bytes written."""
        data = self.to_bytes()
        handle.write(data)
        return len(data)

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
