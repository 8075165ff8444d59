"""What each HTTP status means for a request (one table), and how long to wait before a retry.

    status                       action       what the client does
    200                          USE          validate the page; an invalid one is retried
    429                          THROTTLED    slow the pacer down, wait, retry
    500, 502-504, 505-599        RETRY        back off, retry (a next-page request restarts
                                              its batch from page 1 after a couple)
    404 from the API             NOT_FOUND    a refusal of the request as a whole (NCBI
                                              18.23 fails a list for one bad member): probe
                                              a known GeneID unless a probe vouched lately;
                                              the probe failing too means a wrong URL or a
                                              retired endpoint, else the refused IDs are
                                              isolated (net/refusals.py)
    404 from a front end         STRAY_404    retried like a transient error (NCBI's Apache
      (HTML, Server: Apache)                  front end has served them), then as NOT_FOUND
    410, or a 404 saying
    "retired"                    GONE         the endpoint is retired: probe and switch
    400                          REFUSED      split the batch to isolate the refused IDs
                                              (after a probe proves refusals aren't systematic)
    414, 431                     TOO_LONG     split the batch
    401, 403                     AUTH         stop the run: bad key or blocked IP
    3xx                          REDIRECT     stop the run: redirects are never followed
    anything else (501, 418...)  FAIL         the batch fails; a re-run retries it
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from bulkgene.config import RetryPolicy


class Action(enum.Enum):
    """What to do with an HTTP answer of a given status."""

    USE = "use"
    THROTTLED = "throttled"
    RETRY = "retry"
    NOT_FOUND = "not found"
    STRAY_404 = "stray 404"
    GONE = "gone"
    REFUSED = "refused"
    TOO_LONG = "too long"
    AUTH = "auth"
    REDIRECT = "redirect"
    FAIL = "fail"


STATUS_ACTIONS: dict[int, Action] = {
    200: Action.USE,
    429: Action.THROTTLED,
    500: Action.RETRY, 502: Action.RETRY, 503: Action.RETRY, 504: Action.RETRY,
    404: Action.NOT_FOUND,
    410: Action.GONE,
    400: Action.REFUSED,
    414: Action.TOO_LONG, 431: Action.TOO_LONG,
    401: Action.AUTH, 403: Action.AUTH,
}


def action_for(status: int) -> Action:
    """The action for ``status``: the table, then the classes (5xx retried, 3xx redirects)."""
    if status in STATUS_ACTIONS:
        return STATUS_ACTIONS[status]
    if 505 <= status <= 599:
        return Action.RETRY
    if 300 <= status <= 399:
        return Action.REDIRECT
    return Action.FAIL


def classify(status: int, message: str, headers: Mapping[str, str], body: bytes) -> Action:
    """What to do with an answer: its status's action; a 404 whose ``message`` (the server's
    own words) says the API was retired is the retirement it names, and one that an HTML
    page or an Apache front end served (whatever its body) may be transient."""
    action = action_for(status)
    if action is not Action.NOT_FOUND:
        return action
    if "retired" in message.lower():
        return Action.GONE
    if ("apache" in headers.get("Server", "").lower()
            or "html" in headers.get("Content-Type", "").lower()
            or body.lstrip()[:1] == b"<"):
        return Action.STRAY_404
    return action


def parse_retry_after(value: str | None, cap_s: float, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
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
