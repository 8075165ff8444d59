"""Counting arrivals as a rate-limited server does: the most requests in any one-second window."""

from __future__ import annotations

from collections.abc import Iterable


def max_in_window(times: Iterable[float], window_s: float = 1.0) -> int:
    """The most arrivals inside any half-open window of ``window_s`` seconds."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best
