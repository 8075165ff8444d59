"""Our own requests as the server may have counted them: when each left, which it refused, and
how late our event loop ran around each send."""

from __future__ import annotations

import bisect
from collections import deque

_KEPT = 1024  # the last this many of each: minutes at any rate the pacer allows
_LAG_NOTED_S = 0.002  # event-loop lateness below this is noise, not worth keeping


class SendLog:
    """Send times (any clock, one per log), the refused ones, and the loop's lateness."""

    def __init__(self) -> None:
        self._sent: list[float] = []  # sorted
        self._refused: list[float] = []  # sorted: answered 429, so not in the server's count
        self._lags: deque[tuple[float, float]] = deque(maxlen=256)  # (sent at, loop late by)

    def __len__(self) -> int:
        return len(self._sent)

    def __getitem__(self, index: int) -> float:
        """The index-th send in time order (negative: from the latest)."""
        return self._sent[index]

    def sent(self, at: float) -> None:
        # a request may report late (after the pacer's send-wait cap): keep the order anyway
        _keep(self._sent, at)

    def refused(self, sent_at: float) -> None:
        """The request sent at ``sent_at`` was answered 429: the server did not count it."""
        _keep(self._refused, sent_at)

    def loop_late(self, sent_at: float, late_s: float) -> None:
        """After the send at ``sent_at``, the event loop came back ``late_s`` later."""
        if late_s >= _LAG_NOTED_S:
            self._lags.append((sent_at, late_s))

    def between(self, start: float, end: float) -> int:
        """How many left in (start, end]."""
        return _count(self._sent, start, end)

    def counted_between(self, start: float, end: float) -> int:
        """How many that left in (start, end] the server let in."""
        return self.between(start, end) - _count(self._refused, start, end)

    def most_counted(self, first_end: float, last_end: float, span_s: float) -> int:
        """The most let in within any window ``span_s`` long ending in [first_end, last_end]."""
        most = self.counted_between(first_end - span_s, first_end)
        later = bisect.bisect_right(self._sent, first_end)
        last = bisect.bisect_right(self._sent, last_end)
        for end in self._sent[later:last]:  # a window's count only rises as a send enters
            most = max(most, self.counted_between(end - span_s, end))
        return most

    def latest_lag_s(self, start: float, end: float) -> float:
        """How late the loop ran, at most, after the sends in [start, end)."""
        return max((late for at, late in self._lags if start <= at < end), default=0.0)


def _keep(times: list[float], at: float) -> None:
    bisect.insort(times, at)
    if len(times) > 2 * _KEPT:
        del times[:-_KEPT]


def _count(times: list[float], start: float, end: float) -> int:
    return bisect.bisect_right(times, end) - bisect.bisect_right(times, start)
