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
measures J: at full rate every answer says ``Remaining: 0`` whatever the headroom, and
round-trip times are dominated by the server's own, varying, work. Only a 429 shows that
arrivals were bunched more than allowed for: one for a request that kept within the
server's named limit (ours and our lease peers' share in its second), with no other process
shown on the key. The margin starts at 25 ms (loopback, a LAN, the calmer internet paths;
2.4 % of the ceiling) and widens by 25 ms steps, up to 200 ms within a run.

What a 429 costs. A 429 for a request sent before we heard the previous one is answered by
our reaction to that one. Otherwise, the request is resent (after its Retry-After) and:

* bunched arrivals explain it (enough of ours were let in around it to fill the server's
  window once their delays shifted them by the margin and a step more): the margin widens
  one step and the rate is kept. If our own event loop ran late around the sends in that
  second by at least the margin (so a send reported on time may have reached the wire
  later) the wider margin is for this run only;
* our own sends overfilled the server's second by our own record (a send reported long
  after its slot): nothing else changes;
* another process is shown on the key by more than one answer (below; a 429 with too few of
  ours around it to fill the window is one such answer): everyone pauses for the
  Retry-After and the rate halves;
* anything else (no named limit, the margin at its cap, the second kind above): a first 429
  changes nothing more; the rate halves, and everyone pauses for the Retry-After, only when
  429s keep coming (another one within 60 s, for a request sent after we heard the first).

So a lone 429 costs one resent request and at most one margin step: a run is never halved
by its own jitter. The rate halves at most every 2 s, and a 429 in the 2 s after the
server's named limit lowered the ceiling is explained by that word and changes nothing else.

What a run learns, and for how long. One lone 429 (none other in the 60 s before) teaches
one step: the path needs 25 ms more than it was given. Once that held for 5 s, ``on_margin``
hears the lesson, and bulkgene/run/sharing.py keeps it beside the key's budget (at most
75 ms, 6.8 % of the ceiling: a path that needs more pays its steps above that in every
run). A second bunched 429 within 60 s makes an episode (a loaded laptop, a congested
minute): the margin widens for this run only, narrows back to the lesson a step after each
10 s without a 429 (20, 40, ... up to 320 s after each narrowing that drew a 429), and the
lesson that began it is held in doubt: the next run tries one step narrower at once. An
episode that cut the rate teaches nothing, nor does a 429 that our own loop's lag explains.
A remembered lesson is a starting point: once it is an hour old (or in doubt) and the run
has gone 5 s without a 429, a margin one step narrower is tried; if it holds 10 s it becomes
the lesson and the next step is tried (an old 75 ms is back at 25 ms within 25 s of clean
running); if a 429 comes, the lesson stands, dated anew, and the next try waits twice as
long (2 h, 4 h, ... at most a day). On a path that does need its lesson, that is one 429
(one resent request) per try: at most 4 in the first day of continuous running, then 1 a
day, against 864 000 requests a day at 10/s. A path that got better costs nothing.

Shared keys. A budget lease (bulkgene/budget) sets this process's share with
``set_share``: the ceiling follows it, and the traffic the other lease holders may send is
expected in the server's count, not taken for a stranger's.

Server feedback. NCBI sends ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` on every
response, and a client using its whole budget routinely sees ``Remaining: 0``: that alone
is no reason to stop. Whether the server counts when a request arrives or when it answers
is unrecorded (docs/ncbi-api.md §6), and an answer that took 0.7 s carries, in the second
reading, our own later requests in its count. So the server's count (limit - remaining) is
compared with the most of our requests that it let in (not those it answered 429) any
one-second window (widened by the margin on both sides) held between the request's send
and its answer's arrival, plus our lease peers' share. An answer that counts more than one
request beyond that shows another process on the key; two such answers within 10 s show it.
Then an answer with the window full (``Remaining: 0``) makes everyone pause until that
window has passed.

The rate adapts (AIMD): the halvings above; each ``recovery_period_s`` without a 429 the
rate climbs back by a tenth of the ceiling up to 90 % of the rate that was throttled, then
creeps up by a hundredth, so it settles just under a server limit it was never told. A
server that names its limit (``X-RateLimit-Limit``) lowers the ceiling to that, with a
warning, and a limit below 1/s is refused with a warning rather than left to freeze the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from bulkgene.net.arrival_margin import (
    INITIAL_MARGIN_S,
    MARGIN_CAP_S,
    MARGIN_PROVEN_S,
    MARGIN_STEP_S,
    REMEMBERED_CAP_S,
    ArrivalMargin,
    MarginLesson,
    Widening,
)
from bulkgene.net.sends import SendLog

__all__ = ["INITIAL_MARGIN_S", "MARGIN_CAP_S", "MARGIN_PROVEN_S", "MARGIN_STEP_S",
           "MIN_SERVER_LIMIT", "REMEMBERED_CAP_S", "AdaptiveRateLimiter", "MarginLesson",
           "PacerSnapshot"]

log = logging.getLogger("bulkgene")

_DECREASE_FACTOR = 0.5
_INCREASE_FRACTION = 0.1
_CREEP_FRACTION = 0.01
_MIN_RATE_FRACTION = 0.02
_SEND_WAIT_CAP_S = 2.0  # a request slow to connect doesn't hold everyone back longer than this
_PERMIT_POLL_S = 0.1  # how often a request held by the budget's permit asks again
_BUCKET_CAPACITY = 3
_MIN_GAP_FRACTION = 0.25  # of 1/rate: the closest two requests may follow each other
_DECREASE_HOLD_S = 2.0  # 429s this soon after a cut still see the server's old, full window
_REPEAT_S = 60.0  # a 429 this soon after the last one heard: 429s keep coming
_FOREIGN_TOLERANCE = 1  # requests the server may count beyond ours before we call it foreign
_FOREIGN_MEMORY_S = 10.0  # two sightings of foreign traffic this close together show it
_FOREIGN_SIGHTINGS = 2  # answers it takes to show another process on the key
MIN_SERVER_LIMIT = 1.0  # requests/s: a server limit below this is a misconfiguration, not advice


@dataclass(frozen=True)
class PacerSnapshot:
    """What the pacer has concluded so far (read-only; for tests, logs and benches)."""

    rate_rps: float
    ceiling_rps: float
    margin_s: float  # in use now
    lesson: MarginLesson  # what this path is believed to need, as the next run would start
    probing: bool  # trying a margin one step narrower than the lesson
    paused_until: float  # on the pacer's clock
    stranger_shown: bool  # another process on the key, shown by more than one answer
    server_limit_rps: float | None  # the last plausible X-RateLimit-Limit


class AdaptiveRateLimiter:
    """Paces every request: ``await acquire()``, send, then ``on_sent()`` once the request's
    headers are on the wire (or it failed without leaving: it must not hold the next back)."""

    def __init__(self, requests_per_second: float, recovery_period_s: float = 2.0,
                 clock: Callable[[], float] | None = None,
                 margin_s: float = INITIAL_MARGIN_S,
                 on_margin: Callable[[MarginLesson], None] | None = None, *,
                 margin_refuted: int = 0, margin_age_s: float = 0.0) -> None:
        """``margin_s`` (with ``margin_refuted`` and ``margin_age_s``) is the lesson an earlier
        run on this path left (bulkgene/budget/margin.py); ``on_margin`` hears each new one."""
        self._ceiling = requests_per_second
        self._rate = requests_per_second
        self.recovery_period_s = recovery_period_s
        self._clock = clock or asyncio.get_running_loop().time
        self._margin = ArrivalMargin(MarginLesson(margin_s, margin_refuted, margin_age_s),
                                     self._clock())
        self._on_margin = on_margin
        self._last_throttled_at = float("-inf")
        self._heard_at = float("-inf")  # the last 429 that counted (not answered already)
        self._lock = asyncio.Lock()
        self._bucket: AsyncLimiter | None = None
        self._bucket_rate = self._rate
        self._sends = SendLog()  # ours only
        self._last_grant_sent = asyncio.Event()  # the last request let go has gone out
        self._last_grant_sent.set()
        self._paused_until = 0.0
        self._last_decrease_at = float("-inf")
        self._throttled_at_rate = float("inf")
        self._last_change_at = self._clock()
        self._server_limit: float | None = None
        self._refused_limits: set[str] = set()
        self._foreign_sightings: deque[float] = deque(maxlen=8)  # send times of those answers
        self._ceiling_lowered_at = float("-inf")
        self._shared_rps = 0.0  # what other processes on the key may send (budget leases)
        self._admitted = asyncio.Event()
        self._admitted.set()
        # asked just before each request goes: whether the budget still lets it (a process
        # that was stopped learns it here, before its heartbeat runs; see ``set_permit``)
        self._permit: Callable[[], bool] | None = None

    # -- what it has concluded (read-only) ------------------------------------------------

    @property
    def rate(self) -> float:
        """Requests per second now."""
        return self._rate

    @property
    def ceiling(self) -> float:
        """The most it may climb back to: the share of the key, or the server's named limit."""
        return self._ceiling

    @property
    def margin_s(self) -> float:
        """Added to every one-second window, for the spread of arrival delays."""
        return self._margin.margin_s

    def snapshot(self) -> PacerSnapshot:
        now = self._clock()
        return PacerSnapshot(self._rate, self._ceiling, self._margin.margin_s,
                             self._margin.lesson(now), self._margin.probing, self._paused_until,
                             self._stranger_shown(now), self._server_limit)

    # -- pacing ----------------------------------------------------------------------------

    async def _full_bucket(self) -> AsyncLimiter:
        """A bucket at the current rate, filled so that it starts with no burst."""
        bucket = AsyncLimiter(_BUCKET_CAPACITY, _BUCKET_CAPACITY / self._rate)
        await bucket.acquire(_BUCKET_CAPACITY - 1)
        return bucket

    def note_sent(self, sent_at: float) -> None:
        """One of our requests went on the wire at ``sent_at`` (this pacer's clock)."""
        self._sends.sent(sent_at)
        with contextlib.suppress(RuntimeError):  # no loop (a test's fake clock): no lag known
            asyncio.get_running_loop().call_soon(self._note_lag, sent_at)

    def _note_lag(self, sent_at: float) -> None:
        # how long the loop took to come back to us after that send: work queued behind it
        # (a POST's body, another task's parsing) may have reached the wire that much later
        self._sends.loop_late(sent_at, self._clock() - sent_at)

    async def acquire(self) -> None:
        """Wait until the next request may go; requests are let go in arrival order."""
        async with self._lock:
            while True:
                await self._wait_for_slot()
                if self._permit is None or self._permit():
                    break
                # the share ended while we waited (the process was stopped past its lease's
                # fence): nothing goes until the budget lets this process in again, and the
                # slot is paced afresh then
                while not self._permit():  # noqa: ASYNC110 - a function of the lease's clock, no event
                    await asyncio.sleep(_PERMIT_POLL_S)
            self._last_grant_sent.clear()

    def set_permit(self, permit: Callable[[], bool] | None) -> None:
        """``permit()`` is asked just before each request goes; False holds it (and every
        later one) until it says True again. The budget lease's own
        clock says at once when the process was stopped (SIGSTOP, a suspended machine)
        past its fence: its timers woke together, and the lease's heartbeat may run only
        after a request whose wait ended meanwhile."""
        self._permit = permit

    async def _wait_for_slot(self) -> None:
        """The pacing of one request: admitted, its predecessor sent, the bucket, the window."""
        await self._admitted.wait()  # a budget share of 0: send nothing until it rises
        if not self._last_grant_sent.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._last_grant_sent.wait(), _SEND_WAIT_CAP_S)
        self.refresh()
        if self._bucket is None or self._bucket_rate != self._rate:
            # replacing it is safe: only the lock holder ever waits on the bucket
            self._bucket, self._bucket_rate = await self._full_bucket(), self._rate
        await self._bucket.acquire()
        window_count = max(1, math.floor(self._rate))
        window_s = max(1.0, window_count / self._rate)
        not_before = self._paused_until
        if self._sends:  # catching up, but not in a clump
            not_before = max(not_before, self._sends[-1] + _MIN_GAP_FRACTION / self._rate)
        if len(self._sends) >= window_count:
            not_before = max(not_before, self._sends[-window_count] + window_s
                             + self._margin.margin_s)
        wait = not_before - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)

    def on_sent(self, sent_at: float | None = None) -> float:
        """A request let go by ``acquire`` is on the wire (at ``sent_at``, default now): call
        it once per request, also for one that failed without leaving; returns the time."""
        sent_at = self._clock() if sent_at is None else sent_at
        self.note_sent(sent_at)
        self._last_grant_sent.set()
        return sent_at

    # -- what the server says --------------------------------------------------------------

    def on_throttled(self, retry_after_s: float | None, server_limit: float | None = None,
                     sent_at: float | None = None) -> None:
        """A 429 for a request sent at ``sent_at`` (our clock): the reaction that fits the
        evidence (the module docstring, "What a 429 costs")."""
        now = self._clock()
        sent_at = now if sent_at is None else sent_at
        if server_limit is not None:
            self._adopt_server_limit(server_limit)
        self._last_change_at = self._last_throttled_at = now
        self._margin.heard_429(now)
        self._sends.refused(sent_at)
        if sent_at < self._heard_at:
            return  # in flight when we heard the last one: our reaction to it answers this
        repeated = now - self._heard_at <= _REPEAT_S
        self._heard_at = now
        # a 429 for a request sent before the server's word lowered our ceiling is explained
        # by that word (the same answer's headers usually lowered it a moment ago)
        if now - self._ceiling_lowered_at < _DECREASE_HOLD_S:
            return
        if self._stranger_shown(sent_at):
            self._cut(now, retry_after_s, "with another process on the key")
            return
        explained = self._bunching_explains(sent_at)
        if explained:
            widening = self._margin.bunched(now, sent_at, own_lag=self._own_lag(sent_at))
            if widening is not Widening.AT_CAP:
                log.debug("pacing: HTTP 429 although we kept within the server's limit "
                          "(requests arrived closer together than sent): %s; margin %.0f ms, "
                          "rate kept", widening.value, 1000 * self._margin.margin_s)
                return
        if repeated:
            self._cut(now, retry_after_s, f"again within {_REPEAT_S:.0f} s")
        else:
            log.debug("pacing: HTTP 429, the first in %.0f s: resent, rate kept", _REPEAT_S)

    def _bunching_explains(self, sent_at: float) -> bool:
        """Whether bunched arrivals of our own requests can explain a 429 for the one sent at
        ``sent_at``: the server named its limit, our sends (and our lease peers' share) kept
        within it in that second, and enough of ours were let in around it to fill its window
        once their delays shifted them by the margin and a step more."""
        limit = self._server_limit
        if limit is None:
            return False
        window_count = math.floor(limit)
        others = math.ceil(self._shared_rps)
        sent = self._sends.between(sent_at - 1.0, sent_at)
        if sent + others > window_count:
            log.debug("pacing: HTTP 429 after %d of our requests in one second (one reported "
                      "late): resent", sent)
            return False
        reach_s = self._margin.margin_s + MARGIN_STEP_S
        near = self._sends.counted_between(sent_at - 1.0 - reach_s, sent_at + reach_s)
        if near + others + _FOREIGN_TOLERANCE < window_count:
            # its window was full, and not with ours: the 429 is one answer showing someone
            self._foreign_sightings.append(sent_at)
            log.debug("pacing: HTTP 429 with only %d of our requests around it: someone "
                      "else may be using the key", near)
            return False
        return True

    def _cut(self, now: float, retry_after_s: float | None, why: str) -> None:
        """Pause everyone for the Retry-After and halve the rate (at most every 2 s)."""
        if retry_after_s:
            self._paused_until = max(self._paused_until, now + retry_after_s)
        self._margin.rate_cut(now)  # an overload episode teaches the margin nothing
        if now - self._last_decrease_at < _DECREASE_HOLD_S:
            return
        self._throttled_at_rate = self._rate
        self._rate = max(self._ceiling * _MIN_RATE_FRACTION, self._rate * _DECREASE_FACTOR)
        self._last_decrease_at = now
        log.debug("pacing: %.4g -> %.4g requests/s after HTTP 429 %s%s",
                  self._throttled_at_rate, self._rate, why,
                  f", everyone pausing {retry_after_s:g} s (Retry-After)"
                  if retry_after_s else "")

    def _own_lag(self, sent_at: float) -> bool:
        """Whether our event loop ran late, around the sends that shared the server's second
        with the request sent at ``sent_at``, by as much as the margin allowed for."""
        late_s = self._sends.latest_lag_s(sent_at - 1.0 - self._margin.margin_s, sent_at)
        return late_s > 0 and late_s >= self._margin.margin_s

    def _stranger_shown(self, at: float) -> bool:
        return sum(1 for seen in self._foreign_sightings
                   if abs(at - seen) <= _FOREIGN_MEMORY_S) >= _FOREIGN_SIGHTINGS

    def on_server_limit(self, limit: float | None, remaining: int | None,
                        sent_at: float | None = None) -> None:
        """Honour ``X-RateLimit-Limit`` / ``-Remaining`` from the answer, arriving now, to a
        request sent at ``sent_at`` (our clock): pause only if someone else fills the key's
        window, as more than one answer shows."""
        if limit is not None:
            self._adopt_server_limit(limit)
        known_limit = self._server_limit  # the last plausible one
        if remaining is None or known_limit is None:
            return
        now = self._clock()
        sent_at = now if sent_at is None else sent_at
        margin_s = self._margin.margin_s
        expected_others = math.ceil(self._shared_rps * (1.0 + margin_s))
        if known_limit - remaining <= (self._ours_at_most(sent_at, max(now, sent_at))
                                       + expected_others + _FOREIGN_TOLERANCE):
            return
        self._foreign_sightings.append(sent_at)
        if remaining <= 0 and self._stranger_shown(sent_at):
            self._paused_until = max(self._paused_until, sent_at + 1.0 + margin_s)

    def _ours_at_most(self, sent_at: float, answered_at: float) -> int:
        """The most of our requests the server can have counted for this answer: those it let
        in, in any one-second window (widened by the margin both sides) ending between the
        request's arrival and its answer's, since when the server counts is unrecorded."""
        margin_s = self._margin.margin_s
        return self._sends.most_counted(sent_at + margin_s, answered_at + margin_s,
                                        1.0 + 2 * margin_s)

    def set_share(self, share_rps: float, total_rps: float) -> None:
        """The key's budget lease speaks: run at ``share_rps`` of ``total_rps``, the others
        at the rest. Lowering takes effect at once; 0 holds every request until it rises."""
        if share_rps <= 0:
            self._admitted.clear()
            return
        self._shared_rps = max(0.0, total_rps - share_rps)
        ceiling = share_rps if self._server_limit is None else min(share_rps,
                                                                   self._server_limit)
        at_ceiling = self._rate >= self._ceiling
        self._ceiling = ceiling
        if at_ceiling or self._rate > ceiling:
            self._rate = ceiling
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
                            "answering 429, lower --rate", limit, MIN_SERVER_LIMIT,
                            self._ceiling)
            return
        self._server_limit = limit
        if limit < self._ceiling:
            log.warning("the server limits this key to %g requests/s (X-RateLimit-Limit): "
                        "slowing down from %g/s; pass --rate %g to start there next time",
                        limit, self._ceiling, limit)
            # the server's own word on its limit: never climb back above it
            self._ceiling = limit
            self._rate = min(self._rate, limit)
            self._ceiling_lowered_at = self._clock()

    # -- clean running ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the pacer up to its clock: what clean running since the last 429 has earned
        (the rate climbs back, the margin narrows, a lesson that held is reported).
        ``acquire`` does this before every grant."""
        now = self._clock()
        lesson = self._margin.refresh(now)
        if lesson is not None and self._on_margin is not None:
            self._on_margin(lesson)
        if self._rate < self._ceiling and now - self._last_change_at >= self.recovery_period_s:
            # climb fast back towards 90 % of the rate that was throttled, then only creep
            target = 0.9 * self._throttled_at_rate
            if self._rate < target:
                self._rate = min(target, self._rate + self._ceiling * _INCREASE_FRACTION)
            else:
                self._rate += self._ceiling * _CREEP_FRACTION
            self._rate = min(self._ceiling, self._rate)
            log.debug("pacing: back up to %.4g of %.4g requests/s after a 429", self._rate,
                      self._ceiling)
            self._last_change_at = now
