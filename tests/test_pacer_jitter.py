"""The pacer under arrival jitter: its margin, and whole runs against a simulated NCBI window."""

from __future__ import annotations

import pytest

from bench.pacer_sim import max_in_window, run_virtual, simulate
from bulkgene.net.pacer import ARRIVAL_JITTER_S, AdaptiveRateLimiter


async def spans_of_eleven(limiter: AdaptiveRateLimiter) -> list[float]:
    """Send 40 requests; how long each run of 11 consecutive sends took."""
    times: list[float] = []
    for _ in range(40):
        slot = await limiter.acquire()
        slot.sent()
        assert slot.sent_at is not None
        times.append(slot.sent_at)
    return [times[i + 10] - times[i] for i in range(len(times) - 10)]


@pytest.mark.parametrize("jitter_s", [ARRIVAL_JITTER_S, 0.005])
def test_any_eleven_sends_span_a_second_plus_the_jitter_allowance(jitter_s: float) -> None:
    async def scenario() -> list[float]:
        return await spans_of_eleven(AdaptiveRateLimiter(10.0, arrival_jitter_s=jitter_s))

    spans = run_virtual(scenario())
    assert min(spans) >= 1.0 + jitter_s - 1e-9
    assert max(spans[-10:]) < 1.0 + jitter_s + 0.001  # and no slower: the margin is all it costs


def test_a_429_widens_the_margin_up_to_a_cap_unless_someone_else_uses_the_key() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    margins = []
    for _ in range(10):
        limiter.on_throttled(None)
        margins.append(limiter.margin_s)
        now[0] += 2.0
    assert margins[:3] == pytest.approx([0.075, 0.1, 0.125])
    assert margins[-1] == pytest.approx(0.2)

    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_server_limit(10, 0, now[0])  # ten counted, none of them ours
    now[0] += 2.0
    limiter.on_throttled(None)  # blamed on the other process, not on jitter
    assert limiter.margin_s == ARRIVAL_JITTER_S and limiter.rate == 5.0


@pytest.mark.parametrize("delay_spread_s", [0.0, 0.02, 0.05])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_arrival_delays_never_overfill_the_servers_window(
        delay_spread_s: float, seed: int) -> None:
    result = run_virtual(simulate(10.0, delay_spread_s, 60.0, seed=seed))
    assert result.throttled == 0
    assert max_in_window(result.arrivals_s) <= 10
    assert result.fraction_of(10.0) >= 0.95


def test_delays_beyond_the_allowance_widen_the_margin_until_429s_stop() -> None:
    result = run_virtual(simulate(10.0, 0.1, 300.0, seed=1))
    assert result.throttled > 0
    assert result.limiter.margin_s > ARRIVAL_JITTER_S
    assert max(result.throttled_at_s) < min(result.arrivals_s) + 200.0


def test_another_process_on_the_key_slows_us_without_a_storm_of_429s() -> None:
    result = run_virtual(simulate(10.0, 0.02, 120.0, foreign_rate=4.0, seed=1))
    arrivals = len(result.arrivals_s)
    assert result.throttled < 0.02 * arrivals
    assert 0.3 <= result.fraction_of(10.0) <= 0.6
