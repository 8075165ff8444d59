"""The retry policy: the status table row by row, Retry-After in both forms, the backoff's bounds."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from bulkgene.config import RetryPolicy
from bulkgene.net.policy import Action, action_for, backoff_s, parse_retry_after


@pytest.mark.parametrize(("status", "action"), [
    (200, Action.USE), (429, Action.THROTTLED), (500, Action.RETRY), (502, Action.RETRY),
    (503, Action.RETRY), (504, Action.RETRY), (505, Action.RETRY), (599, Action.RETRY),
    (501, Action.FAIL), (404, Action.NOT_FOUND), (410, Action.GONE), (400, Action.REFUSED),
    (414, Action.TOO_LONG), (431, Action.TOO_LONG), (401, Action.AUTH), (403, Action.AUTH),
    (301, Action.REDIRECT), (302, Action.REDIRECT), (307, Action.REDIRECT), (418, Action.FAIL),
    (204, Action.FAIL),
])
def test_each_status_maps_to_one_action(status: int, action: Action) -> None:
    assert action_for(status) is action


def test_retry_after_seconds_and_http_date_are_capped() -> None:
    assert parse_retry_after("7", cap_s=60) == 7
    assert parse_retry_after("7000", cap_s=60) == 60
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), cap_s=60, now=now) == 30
    assert parse_retry_after(formatdate(now - 30, usegmt=True), cap_s=60, now=now) == 0
    assert parse_retry_after("soon", cap_s=60) is None
    assert parse_retry_after("²", cap_s=60) is None
    assert parse_retry_after(None, cap_s=60) is None


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_cap_s=30.0)
    rng = random.Random(1)
    for attempt, bound in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (20, 30.0)]:
        delays = [backoff_s(policy, attempt, None, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= bound
        assert max(delays) > 0.6 * bound, "the whole range is used (full jitter)"


def test_backoff_waits_for_the_servers_retry_after() -> None:
    policy = RetryPolicy(backoff_base_s=0.5)
    delay = backoff_s(policy, 1, 5.0, random.Random(2))
    assert 5.0 <= delay <= 5.5
