"""An event loop on a virtual clock: sleeps and timeouts take no real time (tests, bench/)."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_TURN_S = 1e-6


class _JumpingSelector(selectors.DefaultSelector):
    """Instead of blocking until the next timer, moves the virtual clock there."""

    def __init__(self) -> None:
        super().__init__()
        self.now_s = 1000.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if not events:
            if timeout is None:
                raise RuntimeError("virtual time deadlock: nothing scheduled and nothing ready")
            # a microsecond per loop turn, as on a real machine: aiolimiter polls until its
            # clock moves, and float rounding can leave it a hair short of the timer it set
            self.now_s += max(timeout, _TURN_S)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: sleeps and timeouts take no real time."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now_s

    def busy(self, seconds: float) -> None:
        """Hold the loop as CPU-bound work in a callback would (parsing a page): the clock
        moves on by ``seconds`` while nothing else runs."""
        self._jumping.now_s += seconds


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
