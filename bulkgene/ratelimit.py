"""The request pacer: requests leave at most ``rate`` per second, measured when they are sent.

Requests are spaced 1/rate apart *by the time their headers went on the wire*, not by the
time they were allowed to go: a send delayed by a busy event loop (parsing a 5 MB page)
would otherwise arrive at the server closer to the next one than 1/rate, and ten such
sends can make an 11th request land inside the server's one-second window. So the next
slot opens only after the previous request reports ``sent()``, 1/rate later.

Under that, ``aiolimiter.AsyncLimiter(1, 1/ceiling)`` is the hard ceiling nothing can raise:
with a bucket of one it allows no start-up burst (``AsyncLimiter(10, 1)`` lets about 19
through in the first second). The rate itself adapts (AIMD): a 429 halves it (at most once a
second) and pauses everyone for ``Retry-After``; a server that names its limit
(``X-RateLimit-Limit``) lowers the ceiling to that; each ``recovery_period_s`` without a 429
the rate climbs back by a tenth of the ceiling up to 90 % of the rate that was throttled,
then creeps up by a hundredth, so it settles just under a server limit it was never told.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiolimiter import AsyncLimiter

_DECREASE_FACTOR = 0.5
_INCREASE_FRACTION = 0.1
_CREEP_FRACTION = 0.01
_MIN_RATE_FRACTION = 0.02
_SEND_WAIT_CAP_S = 2.0  # a request slow to connect doesn't hold everyone back longer than this


class Slot:
    """One request's permission to go; call ``sent()`` when its headers are on the wire."""

    __slots__ = ("_clock", "_event", "sent_at")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._event = asyncio.Event()
        self.sent_at: float | None = None

    def sent(self) -> None:
        """Record the send time (idempotent; also call it if the request never went out)."""
        if self.sent_at is None:
            self.sent_at = self._clock()
            self._event.set()

    async def wait_sent(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)


class AdaptiveRateLimiter:
    """Paces every request: ``slot = await acquire()``, send, ``slot.sent()``."""

    def __init__(self, requests_per_second: float, recovery_period_s: float = 5.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.ceiling = requests_per_second
        self.rate = requests_per_second
        self.recovery_period_s = recovery_period_s
        self._hard_ceiling = AsyncLimiter(1, 1 / requests_per_second)
        self._lock = asyncio.Lock()
        self._clock = clock or asyncio.get_running_loop().time
        self._previous: Slot | None = None
        self._paused_until = 0.0
        self._last_decrease_at = float("-inf")
        self._throttled_at_rate = float("inf")
        self._last_change_at = self._clock()

    async def acquire(self) -> Slot:
        """Wait for the next slot; slots are granted in arrival order."""
        async with self._lock:
            previous = self._previous
            if previous is not None:
                await previous.wait_sent(_SEND_WAIT_CAP_S)
            now = self._clock()
            self._recover(now)
            last_sent = previous.sent_at if previous and previous.sent_at is not None else now
            wait = max(last_sent + 1 / self.rate, self._paused_until) - now
            if wait > 0:
                await asyncio.sleep(wait)
            await self._hard_ceiling.acquire()
            slot = self._previous = Slot(self._clock)
            return slot

    def on_throttled(self, retry_after_s: float | None, server_limit: float | None = None) -> None:
        """A 429: pause for ``retry_after_s``; take the server's limit, or halve the rate."""
        now = self._clock()
        if retry_after_s:
            self._paused_until = max(self._paused_until, now + retry_after_s)
        if server_limit is not None and server_limit > 0:
            self.on_server_limit(server_limit, None)  # its own word beats guessing
        elif now - self._last_decrease_at >= 1.0:
            self._throttled_at_rate = self.rate
            self.rate = max(self.ceiling * _MIN_RATE_FRACTION, self.rate * _DECREASE_FACTOR)
            self._last_decrease_at = now
        self._last_change_at = now

    def on_server_limit(self, limit: float | None, remaining: int | None) -> None:
        """Honour ``X-RateLimit-Limit`` / ``-Remaining`` when the server sends them."""
        if limit is not None and 0 < limit < self.ceiling:
            # the server's own word on its limit: never climb back above it
            self.ceiling = limit
            self.rate = min(self.rate, limit)
        if remaining == 0:
            self._paused_until = max(self._paused_until, self._clock() + 1.0)

    def _recover(self, now: float) -> None:
        if self.rate < self.ceiling and now - self._last_change_at >= self.recovery_period_s:
            # climb fast back towards 90 % of the rate that was throttled, then only creep
            near_limit = self.rate >= 0.9 * self._throttled_at_rate
            step = _CREEP_FRACTION if near_limit else _INCREASE_FRACTION
            self.rate = min(self.ceiling, self.rate + self.ceiling * step)
            self._last_change_at = now
