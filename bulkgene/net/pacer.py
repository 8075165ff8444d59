"""The request pacer: never more than ``rate`` requests in any window, measured at the server.

Two mechanisms, each doing what it is good at:

* a leaky bucket (``aiolimiter.AsyncLimiter``) of capacity 3 at the current rate smooths
  the flow: requests leave 1/rate apart, and after the event loop stalls (parsing a 5 MB
  page takes ~30 ms) up to two late requests may catch up instead of being lost;
* a sliding window over the times the requests' headers actually *went on the wire* is
  the guarantee: with M = floor(rate) and W = max(1 s, M / rate), a request may leave only
  when the M-th request before it left more than W + margin ago. So any M+1 consecutive
  requests span more than a second plus the margin, and no one-second window ever holds
  more than floor(rate), whatever the bucket allowed, from the very first request on (a
  plain ``AsyncLimiter(10, 1)`` lets about 19 through in its first second). A fractional
  rate such as 10/3 per array task therefore runs at 3/s, so that N tasks never exceed the
  key's budget together in any second.

Arrival jitter. The server counts *arrivals*, and the one-way delay of each request varies
(0-50 ms over the internet). If every delay lies in [d, d + J], M+1 sends spanning W + J
arrive spanning at least W, so a margin equal to the delay spread J is exactly what keeps
the server's window at M; it costs J / (1 + J) of the ceiling. Nothing we can observe
measures J: at full rate every answer says ``Remaining: 0`` whatever the headroom (the
server's count at an arrival is M as long as the M-1 requests before it arrived within the
second), and round-trip times are dominated by the server's own, varying, work. Only a 429
shows that arrivals were bunched more than allowed for. So the margin is learnt upwards:
it starts at ``margin_s`` (25 ms by default: loopback, a LAN, and the calmer internet
paths; 2.4 % of the ceiling) and a 429 for a request that kept within the server's named
limit, with no sign of anyone else on the key, widens it by 25 ms instead of cutting the
rate: the server counted more than we sent in its second, so arrivals bunched. A 429 for a
request sent before the last widening is already answered by it. Past 200 ms (global
overload, a limit lower than the one named) the rate halves instead. Once a widened margin
has held for ``MARGIN_PROVEN_S`` without a 429 or a rate cut, ``on_margin`` hears it, so the
caller can remember it for the next run on the same path (bulkgene/run/sharing.py keeps it
beside the key's budget): a path with 50 ms of spread costs one 429 once, not once per run,
and an overload episode (which cuts the rate) teaches nothing.

Shared keys. A budget lease (bulkgene/budget) sets this process's share with
``set_share``: the ceiling follows it, and the traffic the other lease holders may send is
expected in the server's count, not taken for a stranger's.

Server feedback. NCBI sends ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` on every
response, and a client using its whole budget routinely sees ``Remaining: 0``: that alone
is no reason to stop. The pacer compares the server's count (limit - remaining) with the
requests it sent itself in the window before that request (widened by the margin on both
sides, so that our own traffic is never mistaken for someone else's). Only if the server
counted more than one request beyond ours, i.e. another process is using the same key, and
the window is full, does everyone pause until that window has passed.

The rate adapts (AIMD): a 429 that bunched arrivals don't explain (above) halves it (at
most once every 2 s); every 429 pauses everyone for ``Retry-After``; a 429 in the 2 s after
the server's limit lowered the ceiling is explained by that word and changes nothing else. A
server that names its limit (``X-RateLimit-Limit``) lowers the ceiling to that, with a
warning, and a limit below 1/s is refused with a warning rather than left to freeze the run;
each ``recovery_period_s`` without a 429 the rate climbs back by a tenth of the ceiling up to
90 % of the rate that was throttled, then creeps up by a hundredth, so it settles just under
a server limit it was never told.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
from collections.abc import Callable

from aiolimiter import AsyncLimiter

log = logging.getLogger("bulkgene")

_DECREASE_FACTOR = 0.5
_INCREASE_FRACTION = 0.1
_CREEP_FRACTION = 0.01
_MIN_RATE_FRACTION = 0.02
_SEND_WAIT_CAP_S = 2.0  # a request slow to connect doesn't hold everyone back longer than this
_BUCKET_CAPACITY = 3
_MIN_GAP_FRACTION = 0.25  # of 1/rate: the closest two requests may follow each other
_DECREASE_HOLD_S = 2.0  # 429s this soon after a cut still see the server's old, full window
INITIAL_MARGIN_S = 0.025  # one-way delay spread allowed for before any 429: 2.4 % of the ceiling
MARGIN_STEP_S = 0.025
MARGIN_CAP_S = 0.2
MARGIN_PROVEN_S = 5.0  # a widened margin held this long without a 429 is worth remembering
_FOREIGN_TOLERANCE = 1  # requests the server may count beyond ours before we call it foreign
_FOREIGN_MEMORY_S = 10.0  # a 429 this soon after seeing foreign traffic is not blamed on jitter
MIN_SERVER_LIMIT = 1.0  # requests/s: a server limit below this is a misconfiguration, not advice
_SENDS_KEPT = 1024


class AdaptiveRateLimiter:
    """Paces every request: ``await acquire()``, send, then ``on_sent()`` once the request's
    headers are on the wire (or it failed without leaving: it must not hold the next back)."""

    def __init__(self, requests_per_second: float, recovery_period_s: float = 2.0,
                 clock: Callable[[], float] | None = None,
                 margin_s: float = INITIAL_MARGIN_S,
                 on_margin: Callable[[float], None] | None = None) -> None:
        self.ceiling = requests_per_second
        self.rate = requests_per_second
        self.recovery_period_s = recovery_period_s
        self.margin_s = min(MARGIN_CAP_S, max(0.0, margin_s))
        self._on_margin = on_margin
        self._margin_widened_at = float("-inf")
        self._margin_unproven = False  # widened, and not yet held long enough to remember
        self._last_throttled_at = float("-inf")
        self._clock = clock or asyncio.get_running_loop().time
        self._lock = asyncio.Lock()
        self._bucket: AsyncLimiter | None = None
        self._bucket_rate = self.rate
        self._sends: list[float] = []  # sorted send times, ours only
        self._last_grant_sent = asyncio.Event()  # the last request granted has gone out
        self._last_grant_sent.set()
        self._paused_until = 0.0
        self._last_decrease_at = float("-inf")
        self._throttled_at_rate = float("inf")
        self._last_change_at = self._clock()
        self._server_limit: float | None = None
        self._refused_limits: set[str] = set()
        self._foreign_seen_at = float("-inf")
        self._ceiling_lowered_at = float("-inf")
        self._shared_rps = 0.0  # what other processes on the key may send (budget leases)
        self._admitted = asyncio.Event()
        self._admitted.set()

    async def _full_bucket(self) -> AsyncLimiter:
        """A bucket at the current rate, filled so that it starts with no burst."""
        bucket = AsyncLimiter(_BUCKET_CAPACITY, _BUCKET_CAPACITY / self.rate)
        await bucket.acquire(_BUCKET_CAPACITY - 1)
        return bucket

    def _record_send(self, sent_at: float) -> None:
        # a send may be reported late (after the send-wait cap): keep the list sorted anyway
        bisect.insort(self._sends, sent_at)
        if len(self._sends) > 2 * _SENDS_KEPT:
            del self._sends[:-_SENDS_KEPT]

    def _sent_between(self, start: float, end: float) -> int:
        """How many of our requests left in the window (start, end]."""
        return (bisect.bisect_right(self._sends, end)
                - bisect.bisect_right(self._sends, start))

    async def acquire(self) -> None:
        """Wait until the next request may go; requests are let go in arrival order."""
        async with self._lock:
            await self._admitted.wait()  # a budget share of 0: send nothing until it rises
            if not self._last_grant_sent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._last_grant_sent.wait(), _SEND_WAIT_CAP_S)
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
                                 + self.margin_s)
            wait = not_before - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_grant_sent.clear()

    def on_sent(self, sent_at: float | None = None) -> float:
        """A request let go by ``acquire`` is on the wire (at ``sent_at``, default now): call
        it once per request, also for one that failed without leaving; returns the time."""
        sent_at = self._clock() if sent_at is None else sent_at
        self._record_send(sent_at)
        self._last_grant_sent.set()
        return sent_at

    def on_throttled(self, retry_after_s: float | None, server_limit: float | None = None,
                     sent_at: float | None = None) -> None:
        """A 429 for a request sent at ``sent_at`` (our clock): pause for ``retry_after_s``;
        then take the server's limit if it explains the 429, widen the margin if bunched
        arrivals do, or halve the rate."""
        now = self._clock()
        sent_at = now if sent_at is None else sent_at
        if retry_after_s:
            self._paused_until = max(self._paused_until, now + retry_after_s)
        if server_limit is not None:
            self._adopt_server_limit(server_limit)
        self._last_change_at = self._last_throttled_at = now
        # a 429 for a request sent before the server's word lowered our ceiling is explained
        # by that word (the same answer's headers usually lowered it a moment ago)
        if now - self._ceiling_lowered_at < _DECREASE_HOLD_S:
            return
        if sent_at < self._margin_widened_at:
            return  # sent under the narrower margin: the widening already answered it
        if self._arrivals_bunched(sent_at):
            self.margin_s = min(MARGIN_CAP_S, self.margin_s + MARGIN_STEP_S)
            self._margin_widened_at = now
            self._margin_unproven = True
            log.debug("pacing: HTTP 429 although we kept within the server's limit (requests "
                      "arrived closer together than sent): margin widened to %.0f ms, rate "
                      "kept", 1000 * self.margin_s)
            return
        self._margin_unproven = False  # the rate had to go down: the margin was not the cure
        if now - self._last_decrease_at >= _DECREASE_HOLD_S:
            self._throttled_at_rate = self.rate
            self.rate = max(self.ceiling * _MIN_RATE_FRACTION, self.rate * _DECREASE_FACTOR)
            self._last_decrease_at = now
            log.debug("pacing: %.4g -> %.4g requests/s after HTTP 429%s",
                      self._throttled_at_rate, self.rate,
                      f", everyone pausing {retry_after_s:g} s (Retry-After)"
                      if retry_after_s else "")

    def _arrivals_bunched(self, sent_at: float) -> bool:
        """Whether a 429 for a request sent at ``sent_at`` is explained by arrival jitter:
        the server named a limit, our sends (and our lease peers' share) kept within it, no
        stranger was seen on the key lately, and the margin can still grow."""
        if self._server_limit is None or self.margin_s >= MARGIN_CAP_S:
            return False
        if sent_at - self._foreign_seen_at <= _FOREIGN_MEMORY_S:
            return False
        ours = self._sent_between(sent_at - 1.0, sent_at)
        others = math.ceil(self._shared_rps)
        return ours + others <= math.floor(self._server_limit)

    def on_server_limit(self, limit: float | None, remaining: int | None,
                        sent_at: float | None = None) -> None:
        """Honour ``X-RateLimit-Limit`` / ``-Remaining`` from the answer to a request sent at
        ``sent_at`` (on our clock): pause only if someone else fills the key's window."""
        if limit is not None:
            self._adopt_server_limit(limit)
        known_limit = self._server_limit  # the last plausible one
        if remaining is None or known_limit is None:
            return
        sent_at = self._clock() if sent_at is None else sent_at
        # arrivals in the server's window left us within one margin of it, either side
        ours = self._sent_between(sent_at - 1.0 - self.margin_s, sent_at + self.margin_s)
        expected_others = math.ceil(self._shared_rps * (1.0 + self.margin_s))
        if known_limit - remaining > ours + expected_others + _FOREIGN_TOLERANCE:
            self._foreign_seen_at = sent_at
            if remaining <= 0:
                self._paused_until = max(self._paused_until, sent_at + 1.0 + self.margin_s)

    def set_share(self, share_rps: float, total_rps: float) -> None:
        """The key's budget lease speaks: run at ``share_rps`` of ``total_rps``, the others
        at the rest. Lowering takes effect at once; 0 holds every request until it rises."""
        if share_rps <= 0:
            self._admitted.clear()
            return
        self._shared_rps = max(0.0, total_rps - share_rps)
        ceiling = share_rps if self._server_limit is None else min(share_rps,
                                                                   self._server_limit)
        at_ceiling = self.rate >= self.ceiling
        self.ceiling = ceiling
        if at_ceiling or self.rate > ceiling:
            self.rate = ceiling
        self._last_change_at = self._clock()
        self._admitted.set()

    def _adopt_server_limit(self, limit: float) -> None:
        """Lower the ceiling to a plausible server limit, with a warning."""
        if not (math.isfinite(limit) and limit >= MIN_SERVER_LIMIT):
            if f"{limit:g}" not in self._refused_limits:
                self._refused_limits.add(f"{limit:g}")
                log.warning("the server announced a rate limit of %g requests/s "
                            "(X-RateLimit-Limit), which is not plausible (under %g/s or not "
                            "a number): ignoring it and staying at %g/s; if the server keeps "
                            "answering 429, lower --rate", limit, MIN_SERVER_LIMIT, self.ceiling)
            return
        self._server_limit = limit
        if limit < self.ceiling:
            log.warning("the server limits this key to %g requests/s (X-RateLimit-Limit): "
                        "slowing down from %g/s; pass --rate %g to start there next time",
                        limit, self.ceiling, limit)
            # the server's own word on its limit: never climb back above it
            self.ceiling = limit
            self.rate = min(self.rate, limit)
            self._ceiling_lowered_at = self._clock()

    def _recover(self, now: float) -> None:
        if self._margin_unproven and now - self._last_throttled_at >= MARGIN_PROVEN_S:
            self._margin_unproven = False
            if self._on_margin is not None:
                self._on_margin(self.margin_s)
        if self.rate < self.ceiling and now - self._last_change_at >= self.recovery_period_s:
            # climb fast back towards 90 % of the rate that was throttled, then only creep
            target = 0.9 * self._throttled_at_rate
            if self.rate < target:
                self.rate = min(target, self.rate + self.ceiling * _INCREASE_FRACTION)
            else:
                self.rate += self.ceiling * _CREEP_FRACTION
            self.rate = min(self.ceiling, self.rate)
            log.debug("pacing: back up to %.4g of %.4g requests/s after a 429", self.rate,
                      self.ceiling)
            self._last_change_at = now
