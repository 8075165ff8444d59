"""The emulator's own lateness: a loop starved of CPU stamps arrivals late and bunches them.

NCBI's gateway judges its rate window by when requests arrive. The emulator stamps a request
when its event loop gets to it, which on a loaded machine (the emulator shares a CPU with
the test and the client) can be tens of milliseconds after it arrived: two requests sent a
second and a margin apart may then be judged one second's, and draw a 429 that real NCBI
would not have sent. A ticker measures how late the loop wakes, so that each arrival can say
how late the loop was in the second before it (``Arrival.server_lag_s``) and a test can tell
a 429 the client earned from one the emulator's own lateness made.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

TICK_S = 0.01
WINDOW_S = 1.0  # the rate window's length: lateness within it may bunch its arrivals
_NOTICED_S = 0.002  # wake-ups later than this are kept
_KEPT_S = 5.0


class LoopLag:
    """How late the emulator's loop woke, over the last few seconds (thread-safe reads)."""

    def __init__(self) -> None:
        self._late: deque[tuple[float, float]] = deque()  # (woke at, seconds late)
        self._lock = threading.Lock()

    async def run(self) -> None:
        """Tick until cancelled, keeping the late wake-ups."""
        while True:
            due = time.monotonic() + TICK_S
            await asyncio.sleep(TICK_S)
            woke = time.monotonic()
            if (late := woke - due) > _NOTICED_S:
                with self._lock:
                    self._late.append((woke, late))
                    while self._late and self._late[0][0] < woke - _KEPT_S:
                        self._late.popleft()

    def worst_in_window(self) -> float:
        """The latest the loop woke in the last rate window (and a tick before it)."""
        since = time.monotonic() - WINDOW_S - TICK_S
        with self._lock:
            return max((late for woke, late in self._late if woke >= since), default=0.0)
