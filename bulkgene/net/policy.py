"""The retry policy in one place: which failures are retried, and how long to wait before."""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

from bulkgene.config import RetryPolicy

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
SPLIT_STATUSES = frozenset({400, 414, 431})
AUTH_STATUSES = frozenset({401, 403})


def is_retried_status(status: int) -> bool:
    """429 and every 5xx except 501 (Not Implemented won't change on a retry)."""
    return status in RETRIED_STATUSES


def parse_retry_after(value: str | None, cap_s: float, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap_s)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), cap_s)


def backoff_s(policy: RetryPolicy, attempt: int, retry_after_s: float | None,
              rng: random.Random) -> float:
    """Delay before attempt ``attempt + 1``: full-jitter exponential, or the server's word."""
    ceiling = min(policy.backoff_cap_s, policy.backoff_base_s * 2 ** (attempt - 1))
    jittered = rng.uniform(0, ceiling)
    if retry_after_s is not None:
        # the server named a time: wait for it, spread a little so retries don't arrive together
        return retry_after_s + rng.uniform(0, min(1.0, ceiling))
    return jittered
