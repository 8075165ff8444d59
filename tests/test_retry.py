"""The retry policy: what is retried, Retry-After in both forms, and the backoff's bounds."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from bulkgene.config import RetryPolicy
from bulkgene.net.policy import backoff_s, is_retried_status, parse_retry_after


@pytest.mark.parametrize(("status", "retried"), [(429, True), (500, True), (501, False),
                                                 (502, True), (503, True), (504, True),
                                                 (599, True), (400, False), (404, False)])
def test_retried_statuses_are_429_and_5xx_except_501(status: int, retried: bool) -> None:
    assert is_retried_status(status) is retried


def test_retry_after_seconds_and_http_date_are_capped() -> None:
    assert parse_retry_after("7", cap_s=60) == 7
    assert parse_retry_after("7000", cap_s=60) == 60
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), cap_s=60, now=now) == 30
    assert parse_retry_after(formatdate(now - 30, usegmt=True), cap_s=60, now=now) == 0
    assert parse_retry_after("soon", cap_s=60) is None
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
