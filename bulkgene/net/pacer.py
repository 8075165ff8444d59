"""The request pacer: never more than ``rate`` requests in any window, measured at the server.

Two mechanisms, each doing what it is good at:

* a leaky bucket (``aiolimiter.AsyncLimiter``) of capacity 3 at the current rate smooths
  the flow: requests leave 1/rate apart, and after the event loop stalls (parsing a 5 MB
  page takes ~30 ms) up to two late requests may catch up instead of being lost;
* a sliding window over the times the requests' headers actually *went on the wire* is
  the guarantee: with M = floor(rate) and W = max(1 s, M / rate), a request may leave only
  when the M-th request before it left more than W + 15 ms ago. So any M+1 consecutive
  requests span more than a second, and no one-second window ever holds more than
  floor(rate), whatever the bucket allowed, from the very first request on (a plain
  ``AsyncLimiter(10, 1)`` lets about 19 through in its first second). A fractional rate
  such as 10/3 per array task therefore runs at 3/s, so that N tasks never exceed the
  key's budget together in any second.

The rate adapts (AIMD): a 429 halves it (at most once every 2 s) and pauses everyone for
``Retry-After``; a server that names its limit (``X-RateLimit-Limit``) lowers the ceiling
to that; each ``recovery_period_s`` without a 429 the rate climbs back by a tenth of the
ceiling up to 90 % of the rate that was throttled, then creeps up by a hundredth, so it
settles just under a server limit it was never told.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable

from aiolimiter import AsyncLimiter

_DECREASE_FACTOR = 0.5
_INCREASE_FRACTION = 0.1
_CREEP_FRACTION = 0.01
_MIN_RATE_FRACTION = 0.02
_SEND_WAIT_CAP_S = 2.0  # a request slow to connect doesn't hold everyone back longer than this
_BUCKET_CAPACITY = 3
_MIN_GAP_FRACTION = 0.25  # of 1/rate: the closest two requests may follow each other
_DECREASE_HOLD_S = 2.0  # 429s this soon after a cut still see the server's old, full window
_WINDOW_MARGIN_S = 0.015  # server-side arrival jitter; costs 1.5 % of the ceiling


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

    def __init__(self, requests_per_second: float, recovery_period_s: float = 2.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.ceiling = requests_per_second
        self.rate = requests_per_second
        self.recovery_period_s = recovery_period_s
        self._clock = clock or asyncio.get_running_loop().time
        self._lock = asyncio.Lock()
        self._bucket: AsyncLimiter | None = None
        self._bucket_rate = self.rate
        self._sends: deque[float] = deque(maxlen=1024)
        self._previous: Slot | None = None
        self._paused_until = 0.0
        self._last_decrease_at = float("-inf")
        self._throttled_at_rate = float("inf")
        self._last_change_at = self._clock()

    async def _full_bucket(self) -> AsyncLimiter:
        """A bucket at the current rate, filled so that it starts with no burst."""
        bucket = AsyncLimiter(_BUCKET_CAPACITY, _BUCKET_CAPACITY / self.rate)
        await bucket.acquire(_BUCKET_CAPACITY - 1)
        return bucket

    async def acquire(self) -> Slot:
        """Wait for the next slot; slots are granted in arrival order."""
        async with self._lock:
            previous = self._previous
            if previous is not None:
                await previous.wait_sent(_SEND_WAIT_CAP_S)
                if previous.sent_at is not None:
                    self._sends.append(previous.sent_at)
            self._recover(self._clock())
            if self._bucket is None or self._bucket_rate != self.rate:
                # replacing it is safe: only the lock holder ever waits on the bucket
                self._bucket, self._bucket_rate = await self._full_bucket(), self.rate
            await self._bucket.acquire()
            window_count = max(1, math.floor(self.rate))
            window_s = max(1.0, window_count / self.rate)
            not_before = self._paused_until
            if self._sends:  # catching up, but not in a clump
                not_before = max(not_before, self._sends[-1] + _MIN_GAP_FRACTION / self.rate)
            if len(self._sends) >= window_count:
                not_before = max(not_before, self._sends[-window_count] + window_s
                                 + _WINDOW_MARGIN_S)
            wait = not_before - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            slot = self._previous = Slot(self._clock)
            return slot

    def on_throttled(self, retry_after_s: float | None, server_limit: float | None = None) -> None:
        """A 429: pause for ``retry_after_s``; take the server's limit, or halve the rate."""
        now = self._clock()
        if retry_after_s:
            self._paused_until = max(self._paused_until, now + retry_after_s)
        if server_limit is not None and server_limit > 0:
            self.on_server_limit(server_limit, None)  # its own word beats guessing
        elif now - self._last_decrease_at >= _DECREASE_HOLD_S:
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
            target = 0.9 * self._throttled_at_rate
            if self.rate < target:
                self.rate = min(target, self.rate + self.ceiling * _INCREASE_FRACTION)
            else:
                self.rate += self.ceiling * _CREEP_FRACTION
            self.rate = min(self.ceiling, self.rate)
            self._last_change_at = now
