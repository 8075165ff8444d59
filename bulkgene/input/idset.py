"""IdBitmap: a set of GeneIDs in one bit each, allocated lazily per 1 Mi-ID range.

A Python ``set`` of 60 M ints costs several GB. GeneIDs are 1..2**31-1 and cluster in a few
ranges (today's fall under ~2**28), so a bitmap cut into 128 KiB chunks, each allocated on
first use, holds the whole of NCBI Gene in ~32 MB and a typical list in well under 1 MB.
"""

from __future__ import annotations

from typing import BinaryIO

MAX_GENE_ID = 2**31 - 1
_CHUNK_SHIFT = 20  # 2**20 IDs per chunk -> 128 KiB
_CHUNK_MASK = (1 << _CHUNK_SHIFT) - 1
_CHUNK_BYTES = 1 << (_CHUNK_SHIFT - 3)


class IdBitmap:
    """A set of integers in 1..2**31-1 with O(1) add/contains and memory per used range."""

    __slots__ = ("_chunks", "_count")

    def __init__(self) -> None:
        self._chunks: list[bytearray | None] = [None] * ((MAX_GENE_ID >> _CHUNK_SHIFT) + 1)
        self._count = 0

    def add(self, gene_id: int) -> bool:
        """Add ``gene_id``; True if it was not there before."""
        chunk = self._chunks[gene_id >> _CHUNK_SHIFT]
        if chunk is None:
            chunk = self._chunks[gene_id >> _CHUNK_SHIFT] = bytearray(_CHUNK_BYTES)
        offset = gene_id & _CHUNK_MASK
        byte_index = offset >> 3
        bit = 1 << (offset & 7)
        if chunk[byte_index] & bit:
            return False
        chunk[byte_index] |= bit
        self._count += 1
        return True

    def __contains__(self, gene_id: object) -> bool:
        if not isinstance(gene_id, int) or not 0 <= gene_id <= MAX_GENE_ID:
            return False
        chunk = self._chunks[gene_id >> _CHUNK_SHIFT]
        if chunk is None:
            return False
        offset = gene_id & _CHUNK_MASK
        return bool(chunk[offset >> 3] & (1 << (offset & 7)))

    def __len__(self) -> int:
        return self._count

    def write_to(self, handle: BinaryIO) -> list[int]:
        """Write the allocated chunks to ``handle``; returns their indexes, in order."""
        indexes = [i for i, chunk in enumerate(self._chunks) if chunk is not None]
        for index in indexes:
            handle.write(self._chunks[index])  # type: ignore[arg-type]
        return indexes

    @classmethod
    def read_from(cls, handle: BinaryIO, indexes: list[int], count: int) -> IdBitmap:
        """The bitmap that ``write_to`` wrote, ``count`` members in ``indexes``' chunks."""
        bitmap = cls()
        for index in indexes:
            chunk = bytearray(handle.read(_CHUNK_BYTES))
            if len(chunk) != _CHUNK_BYTES:
                raise ValueError("the bitmap file is shorter than its index says")
            bitmap._chunks[index] = chunk
        bitmap._count = count
        return bitmap

    @property
    def allocated_bytes(self) -> int:
        """Memory held by the allocated chunks."""
        return _CHUNK_BYTES * sum(1 for chunk in self._chunks if chunk is not None)
