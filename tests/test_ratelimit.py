"""The pacer: no start-up burst, spacing by send time, AIMD on 429s (virtual or fake clock)."""

from __future__ import annotations

import asyncio

from bulkgene.net.pacer import AdaptiveRateLimiter
from bulkgene.testing.virtual_time import run_virtual
from bulkgene.testing.windows import max_in_window


def test_no_burst_even_in_the_first_second() -> None:
    async def scenario() -> list[float]:
        limiter = AdaptiveRateLimiter(50.0)
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def request() -> None:
            await limiter.acquire()
            times.append(loop.time())
            limiter.on_sent()

        await asyncio.gather(*(request() for _ in range(60)))
        return times

    times = run_virtual(scenario())
    assert max_in_window(times) <= 50
    assert times[-1] - times[0] >= 59 / 50 - 0.01


def test_next_slot_waits_for_the_previous_send() -> None:
    async def scenario() -> None:
        limiter = AdaptiveRateLimiter(100.0)
        loop = asyncio.get_running_loop()
        await limiter.acquire()
        first_sent_at: list[float] = []
        # a slow connect: headers leave 200 ms after the grant
        loop.call_later(0.2, lambda: first_sent_at.append(limiter.on_sent()))
        second_task = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.1)
        assert not second_task.done()
        await second_task
        assert first_sent_at
        assert loop.time() - first_sent_at[0] >= 0.25 / 100 - 1e-4  # never in a clump
        limiter.on_sent()

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
