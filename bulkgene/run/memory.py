"""MemoryBudget: bytes of fetched data held at once, bounded; a taker waits for room, never forever.

The pipeline reserves a batch's expected bytes before fetching it, trues the reservation up
to the result's real size when it arrives, and the writer releases it once the result is on
disk. ``reserve`` waits while the new total would pass the limit, but only while something
is held: a single batch larger than the whole budget still goes through, alone. Waiters are
served in arrival order, so a large reservation is not starved by a stream of small ones.
"""

from __future__ import annotations

import asyncio
from collections import deque

# 16 batches of 1000 COMPLETE reports (~5 MB each) in flight at 10 requests/s fit: 64 MiB
# cost POST 8 % of its genes/s. With a writer stalled on a slow disk the process then peaks
# near 135 MiB, under the 150 MB target (bench/memory.py measures both).


class MemoryBudget:
    """A byte counter with a soft limit: ``reserve`` waits for room, ``release`` makes it."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError("a memory budget needs a limit of at least one byte")
        self.limit_bytes = limit_bytes
        self.held_bytes = 0
        self.peak_bytes = 0  # the most held at once, for benchmarks and tests
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, nbytes: int) -> bool:
        return self.held_bytes == 0 or self.held_bytes + nbytes <= self.limit_bytes

    async def reserve(self, nbytes: int) -> None:
        """Hold ``nbytes`` more, after waiting for room (and for every earlier waiter)."""
        if not self._waiters and self._fits(nbytes):
            self._take(nbytes)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (nbytes, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_back(nbytes)  # granted just as we were cancelled: not ours to keep
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._wake()  # the next in line may fit now that this one left the queue
            raise

    def resize(self, old_bytes: int, new_bytes: int) -> None:
        """Replace a reservation of ``old_bytes`` by the real size; never waits (it may
        pass the limit: the data exists already), and a smaller size makes room."""
        self._take(new_bytes - old_bytes)
        if new_bytes < old_bytes:
            self._wake()

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes`` held; wakes whoever fits now, in order."""
        self._give_back(nbytes)

    def _take(self, nbytes: int) -> None:
        self.held_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)

    def _give_back(self, nbytes: int) -> None:
        if nbytes > self.held_bytes:
            raise ValueError(f"releasing {nbytes} bytes, but only {self.held_bytes} are held")
        self.held_bytes -= nbytes
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            nbytes, waiter = self._waiters[0]
            if waiter.done():  # cancelled, its task not yet resumed to leave the queue
                self._waiters.popleft()
                continue
            if not self._fits(nbytes):
                return
            self._waiters.popleft()
            self._take(nbytes)
            waiter.set_result(None)
