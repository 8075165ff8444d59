"""The request pacer: a hard ceiling that is never exceeded, under an adaptive rate (AIMD).

``aiolimiter.AsyncLimiter(1, 1/ceiling)`` is the hard ceiling: with a bucket of one it spaces
requests at least 1/ceiling apart from the very first one (``AsyncLimiter(10, 1)`` would let
about 19 through in the first second). Above it a FIFO pacer spaces requests at the current
adaptive rate: a 429 halves that rate and pauses everyone for the server's ``Retry-After``;
every ``recovery_period_s`` without a 429 it climbs back by a tenth of the ceiling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiolimiter import AsyncLimiter

_DECREASE_FACTOR = 0.5
_INCREASE_FRACTION = 0.1
_MIN_RATE_FRACTION = 0.02


class AdaptiveRateLimiter:
    """Paces every request; ``acquire()`` before each one, ``on_throttled()`` after a 429."""

    def __init__(self, requests_per_second: float, recovery_period_s: float = 5.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.ceiling = requests_per_second
        self.rate = requests_per_second
        self.recovery_period_s = recovery_period_s
        self._hard_ceiling = AsyncLimiter(1, 1 / requests_per_second)
        self._lock = asyncio.Lock()
        self._clock = clock or asyncio.get_running_loop().time
        self._next_grant_at = 0.0
        self._paused_until = 0.0
        self._last_change_at = self._clock()

    async def acquire(self) -> None:
        """Wait for this request's slot; slots are granted in arrival order."""
        async with self._lock:
            now = self._clock()
            self._recover(now)
            wait = max(self._next_grant_at, self._paused_until) - now
            if wait > 0:
                await asyncio.sleep(wait)
            await self._hard_ceiling.acquire()
            self._next_grant_at = self._clock() + 1 / self.rate

    def on_throttled(self, retry_after_s: float | None) -> None:
        """A 429: slow down (at most once per second) and pause for ``retry_after_s``."""
        now = self._clock()
        if retry_after_s:
            self._paused_until = max(self._paused_until, now + retry_after_s)
        if now - self._last_change_at >= 1.0 or self.rate == self.ceiling:
            self.rate = max(self.ceiling * _MIN_RATE_FRACTION, self.rate * _DECREASE_FACTOR)
            self._last_change_at = now

    def on_server_limit(self, limit: float | None, remaining: int | None) -> None:
        """Honour ``X-RateLimit-Limit`` / ``-Remaining`` when the server sends them."""
        if limit is not None and 0 < limit < self.rate:
            self.rate = limit
            self._last_change_at = self._clock()
        if remaining == 0:
            self._paused_until = max(self._paused_until, self._clock() + 1.0)

    def _recover(self, now: float) -> None:
        if self.rate < self.ceiling and now - self._last_change_at >= self.recovery_period_s:
            self.rate = min(self.ceiling, self.rate + self.ceiling * _INCREASE_FRACTION)
            self._last_change_at = now
