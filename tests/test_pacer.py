"""The pacer (bulkgene/net/pacer.py) on a virtual or fake clock, no sleeping: no start-up
burst, spacing by send time, AIMD on 429s, and its reading of the server: Remaining, Limit,
429s."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

from bulkgene.net.pacer import AdaptiveRateLimiter
from bulkgene.testing.virtual_time import run_virtual
from bulkgene.testing.windows import max_in_window


def test_no_burst_even_in_the_first_second() -> None:
    async def scenario() -> list[float]:
        limiter = AdaptiveRateLimiter(50.0)
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def request() -> None:
            slot = await limiter.acquire()
            times.append(loop.time())
            slot.sent()

        await asyncio.gather(*(request() for _ in range(60)))
        return times

    times = run_virtual(scenario())
    assert max_in_window(times) <= 50
    assert times[-1] - times[0] >= 59 / 50 - 0.01


def test_next_slot_waits_for_the_previous_send() -> None:
    async def scenario() -> None:
        limiter = AdaptiveRateLimiter(100.0)
        loop = asyncio.get_running_loop()
        first = await limiter.acquire()
        loop.call_later(0.2, first.sent)  # a slow connect: headers leave 200 ms after the grant
        second_task = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.1)
        assert not second_task.done()
        second = await second_task
        assert first.sent_at is not None
        assert loop.time() - first.sent_at >= 0.25 / 100 - 1e-4  # never in a clump
        second.sent()

    run_virtual(scenario())


async def test_429_halves_at_most_every_two_seconds_and_recovery_creeps_up() -> None:
    now = [100.0]
    limiter = AdaptiveRateLimiter(10.0, recovery_period_s=5.0, clock=lambda: now[0])
    limiter.on_throttled(None)
    assert limiter.rate == 5.0
    now[0] += 1.5
    limiter.on_throttled(None)  # the server's window still holds the old burst: no second cut
    assert limiter.rate == 5.0
    now[0] += 1.0
    limiter.on_throttled(None)
    assert limiter.rate == 2.5
    for expected in (3.5, 4.5, 4.6, 4.7):  # fast to 90 % of the throttled 5.0, then a creep
        now[0] += 5.0
        limiter._recover(now[0])
        assert abs(limiter.rate - expected) < 1e-9


async def test_a_server_that_names_its_limit_sets_the_ceiling() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_throttled(1.0, server_limit=4.0)
    assert limiter.rate == 4.0 and limiter.ceiling == 4.0
    now[0] += 100
    limiter._recover(now[0])
    assert limiter.rate == 4.0


# -- reading the server -----------------------------------------------------------------

async def send(limiter: AdaptiveRateLimiter, count: int) -> list[float]:
    """Send ``count`` requests one after the other; their send times."""
    times: list[float] = []
    for _ in range(count):
        slot = await limiter.acquire()
        slot.sent()
        assert slot.sent_at is not None
        times.append(slot.sent_at)
    return times


def after_remaining(sent: int, limit: float | None, remaining: int) -> tuple[list[float], float]:
    """Send ``sent`` requests, read the last one's headers; the sends and the next send time."""

    async def scenario() -> tuple[list[float], float]:
        limiter = AdaptiveRateLimiter(10.0)
        times = await send(limiter, sent)
        limiter.on_server_limit(limit, remaining, times[-1])
        return times, (await send(limiter, 1))[0]

    return run_virtual(scenario())


def test_remaining_zero_at_our_own_full_rate_is_no_reason_to_pause() -> None:
    times, next_at = after_remaining(20, 10, 0)  # the server's window holds exactly our 10
    assert next_at - times[-1] < 0.2  # paced as usual, no one-second stop
    assert next_at - times[-10] >= 1.0


def test_one_request_more_than_ours_is_tolerated() -> None:
    times, next_at = after_remaining(9, 10, 0)  # 10 counted, 9 ours: a counting difference
    assert next_at - times[-1] < 0.2


def test_a_full_window_of_someone_elses_requests_pauses_us_until_it_has_passed() -> None:
    times, next_at = after_remaining(3, 10, 0)  # 10 counted, 3 ours: 7 from another process
    assert next_at >= times[-1] + 1.0


def test_foreign_traffic_with_budget_left_is_no_reason_to_pause() -> None:
    times, next_at = after_remaining(3, 10, 2)
    assert next_at - times[-1] < 0.2


@pytest.mark.parametrize("limit", [None, math.nan, 0.01])
def test_remaining_without_a_plausible_limit_is_ignored(limit: float | None) -> None:
    times, next_at = after_remaining(3, limit, 0)
    assert next_at - times[-1] < 0.2


def test_a_429_that_bunched_arrivals_cant_explain_halves_the_rate_then_recovers() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, recovery_period_s=2.0, clock=lambda: now[0])
    for _ in range(12):  # more of ours in its second than the limit it names
        limiter._record_send(now[0])
    limiter.on_throttled(None, server_limit=10.0)  # NCBI sends its Limit on every answer
    assert limiter.rate == 5.0 and limiter.ceiling == 10.0
    for expected in (6.0, 7.0, 8.0, 9.0, 9.1):  # fast to 90 % of the throttled 10, then creep
        now[0] += 2.0
        limiter._recover(now[0])
        assert limiter.rate == pytest.approx(expected)


def test_a_429_that_names_a_lower_limit_takes_it_instead_of_halving() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_server_limit(4.0, 0, now[0])  # the fetcher reads the 429's headers first
    limiter.on_throttled(1.0, server_limit=4.0)
    now[0] += 1.0
    limiter.on_throttled(1.0, server_limit=4.0)  # still a request sent at the old rate
    assert limiter.rate == 4.0 and limiter.ceiling == 4.0
    now[0] += 2.0
    limiter.on_throttled(1.0, server_limit=4.0)  # too many even at its own limit: halve
    assert limiter.rate == 2.0 and limiter.ceiling == 4.0


def test_a_lower_server_limit_lowers_the_ceiling_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        limiter.on_server_limit(5.0, 4)
        limiter.on_server_limit(5.0, 3)
        limiter.on_server_limit(20.0, 3)  # a higher limit never raises our own ceiling
    assert limiter.ceiling == 5.0 and limiter.rate == 5.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "5 requests/s" in warnings[0] and "--rate 5" in warnings[0]


@pytest.mark.parametrize("absurd", [0.01, 0.0, -3.0, math.inf, math.nan])
def test_an_absurd_server_limit_is_refused_with_one_warning(
        absurd: float, caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        limiter.on_server_limit(absurd, 5)
        limiter.on_server_limit(absurd, 5)
        assert limiter.ceiling == 10.0 and limiter.rate == 10.0
        limiter.on_throttled(None, server_limit=absurd)  # a 429 is still a 429: halve
    assert limiter.ceiling == 10.0 and limiter.rate == 5.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ignoring it" in warnings[0]
    assert f"{absurd:g} requests/s" in warnings[0]
