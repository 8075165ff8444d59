"""The pacer under arrival jitter (bulkgene/net/arrival_margin.py): its margin, how 429s widen
it, how clean running narrows it, what a run remembers, and whole simulated runs."""

from __future__ import annotations

import pytest

from bench.pacer_sim import simulate
from bulkgene.net.arrival_margin import (
    EPISODE_NARROW_S,
    EPISODE_S,
    PROBE_AFTER_S,
    PROBE_CLEAN_S,
    PROBE_HOLD_S,
    ArrivalMargin,
    probe_after_s,
)
from bulkgene.net.pacer import (
    INITIAL_MARGIN_S,
    MARGIN_CAP_S,
    MARGIN_PROVEN_S,
    MARGIN_STEP_S,
    REMEMBERED_CAP_S,
    AdaptiveRateLimiter,
    MarginLesson,
)
from bulkgene.testing.virtual_time import run_virtual
from bulkgene.testing.windows import max_in_window


async def spans_of_eleven(limiter: AdaptiveRateLimiter) -> list[float]:
    """Send 40 requests; how long each run of 11 consecutive sends took."""
    times: list[float] = []
    for _ in range(40):
        await limiter.acquire()
        times.append(limiter.on_sent())
    return [times[i + 10] - times[i] for i in range(len(times) - 10)]


@pytest.mark.parametrize("margin_s", [INITIAL_MARGIN_S, 0.05, 0.005])
def test_any_eleven_sends_span_a_second_plus_the_margin(margin_s: float) -> None:
    async def scenario() -> list[float]:
        return await spans_of_eleven(AdaptiveRateLimiter(10.0, margin_s=margin_s))

    spans = run_virtual(scenario())
    assert min(spans) >= 1.0 + margin_s - 1e-9
    assert max(spans[-10:]) < 1.0 + margin_s + 0.001  # and no slower: the margin is all it costs


def full_rate(limiter: AdaptiveRateLimiter, now: list[float]) -> float:
    """Ten sends a second apart from the last: a window at the server's limit, ours only."""
    for _ in range(10):
        limiter.note_sent(now[0])
        now[0] += 0.1
    return now[0] - 0.1


def test_a_429_within_the_named_limit_widens_the_margin_not_the_rate() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_server_limit(10, None, now[0])  # named on every answer, as NCBI does
    margins = []
    for _ in range(10):
        now[0] += 1.0  # a fresh second, so that the test's own sends never overlap
        sent_at = full_rate(limiter, now)
        limiter.on_throttled(None, 10, sent_at)  # 10 of ours in its second: arrivals bunched
        margins.append(limiter.margin_s)
        assert limiter.rate == 10.0 or margins[-1] == MARGIN_CAP_S
    assert margins[:3] == pytest.approx([0.05, 0.075, 0.1])
    assert margins[-1] == pytest.approx(MARGIN_CAP_S)
    assert limiter.rate < 10.0  # past the cap, bunching can't be the explanation any more


def test_a_429_for_a_request_sent_before_the_widening_is_already_answered() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_server_limit(10, None, now[0])
    first = full_rate(limiter, now)
    limiter.on_throttled(None, 10, first)
    limiter.on_throttled(None, 10, first - 0.05)  # in flight when the first 429 came back
    assert limiter.margin_s == pytest.approx(INITIAL_MARGIN_S + 0.025) and limiter.rate == 10.0


def test_a_widened_margin_is_reported_once_it_has_held_without_429s() -> None:
    now = [0.0]
    learnt: list[MarginLesson] = []
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0], on_margin=learnt.append)
    limiter.on_server_limit(10, None, now[0])
    limiter.on_throttled(None, 10, full_rate(limiter, now))
    now[0] += MARGIN_PROVEN_S - 0.5
    limiter.refresh()
    assert learnt == []  # not proven yet
    now[0] += 1.0
    limiter.refresh()
    now[0] += 10
    limiter.refresh()
    assert [lesson.margin_s for lesson in learnt] == [pytest.approx(INITIAL_MARGIN_S + 0.025)]
    assert learnt[0].refuted == 0  # once


def test_a_margin_widened_in_an_episode_that_cut_the_rate_is_not_remembered() -> None:
    """Global overload (NCBI #284): the margin grows to its cap, then the rate halves."""
    now = [0.0]
    learnt: list[MarginLesson] = []
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0], on_margin=learnt.append)
    limiter.on_server_limit(10, None, now[0])
    while limiter.rate == 10.0:
        now[0] += 1.0
        limiter.on_throttled(None, 10, full_rate(limiter, now))
    assert limiter.margin_s == pytest.approx(MARGIN_CAP_S)
    now[0] += 60.0
    limiter.refresh()
    assert learnt == []


def test_a_429_with_more_of_ours_in_the_second_than_the_limit_halves_the_rate() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_server_limit(8, 0, now[0])  # a limit below ours: the ceiling follows it ...
    now[0] += 3.0
    limiter.on_throttled(None, None, full_rate(limiter, now))  # ... but we sent 10 in a second
    assert limiter.margin_s == INITIAL_MARGIN_S and limiter.rate == 8.0  # once: resent
    limiter.on_throttled(None, None, full_rate(limiter, now))  # twice: they keep coming
    assert limiter.margin_s == INITIAL_MARGIN_S and limiter.rate == 4.0


def test_a_429_without_a_named_limit_or_while_a_stranger_uses_the_key_halves_the_rate() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_throttled(None)  # the server never named its limit: nothing to compare with
    limiter.on_throttled(None)  # (and the first is only resent)
    assert limiter.margin_s == INITIAL_MARGIN_S and limiter.rate == 5.0

    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_server_limit(10, 0, now[0])  # ten counted, none of them ours ...
    limiter.on_server_limit(10, 0, now[0])  # ... in two answers
    now[0] += 2.0
    limiter.on_throttled(None)  # blamed on the other process, not on jitter
    assert limiter.margin_s == INITIAL_MARGIN_S and limiter.rate == 5.0


@pytest.mark.parametrize("delay_spread_s", [0.0, 0.02])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arrival_delays_within_the_margin_never_overfill_the_servers_window(
        delay_spread_s: float, seed: int) -> None:
    result = run_virtual(simulate(10.0, delay_spread_s, 60.0, seed=seed))
    assert result.throttled == 0
    assert max_in_window(result.arrivals_s) <= 10
    assert result.fraction_of(10.0) >= 0.97


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_wider_spread_costs_one_429_then_the_learnt_margin_none(seed: int) -> None:
    first = run_virtual(simulate(10.0, 0.05, 60.0, seed=seed))
    assert first.throttled == 1 and first.limiter.rate == 10.0
    assert first.fraction_of(10.0) >= 0.95
    again = run_virtual(simulate(10.0, 0.05, 60.0, seed=seed + 10,
                                 margin_s=first.limiter.margin_s))  # as remembered
    assert again.throttled == 0 and max_in_window(again.arrivals_s) <= 10
    assert again.fraction_of(10.0) >= 0.95


def test_delays_beyond_the_allowance_widen_the_margin_until_429s_stop() -> None:
    result = run_virtual(simulate(10.0, 0.1, 300.0, seed=1))
    assert result.throttled > 0
    assert result.limiter.margin_s > INITIAL_MARGIN_S
    assert max(result.throttled_at_s) < min(result.arrivals_s) + 200.0


def test_another_process_on_the_key_slows_us_without_a_storm_of_429s() -> None:
    result = run_virtual(simulate(10.0, 0.02, 120.0, foreign_rate=4.0, seed=1))
    arrivals = len(result.arrivals_s)
    assert result.throttled < 0.02 * arrivals
    assert 0.3 <= result.fraction_of(10.0) <= 0.6


# -- what a run learns, and for how long ------------------------------------------------

def bunched_429(limiter: AdaptiveRateLimiter, now: list[float]) -> None:
    """A second of ours at the limit, then a 429 for its last request: arrivals bunched."""
    limiter.on_server_limit(10, None, now[0])
    limiter.on_throttled(None, 10, full_rate(limiter, now))


def clean_running(limiter: AdaptiveRateLimiter, now: list[float], seconds: float) -> None:
    """``seconds`` without a 429, the pacer refreshed every second as acquire() does."""
    for _ in range(round(seconds)):
        now[0] += 1.0
        limiter.refresh()


def test_an_episode_widens_for_the_run_only_and_narrows_back_after_clean_running() -> None:
    now = [0.0]
    learnt: list[MarginLesson] = []
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0], on_margin=learnt.append)
    for _ in range(3):  # a bad minute: 429s a few seconds apart
        now[0] += 3.0
        bunched_429(limiter, now)
    assert limiter.margin_s == pytest.approx(INITIAL_MARGIN_S + 3 * MARGIN_STEP_S)
    lesson = limiter.snapshot().lesson  # the lone step that began it, held in doubt
    assert lesson.margin_s == pytest.approx(0.05) and lesson.age_s >= PROBE_AFTER_S
    clean_running(limiter, now, EPISODE_NARROW_S)
    assert limiter.margin_s == pytest.approx(INITIAL_MARGIN_S + 2 * MARGIN_STEP_S)
    clean_running(limiter, now, EPISODE_NARROW_S)
    assert limiter.margin_s == pytest.approx(0.05)  # back to the lesson, not below
    clean_running(limiter, now, PROBE_CLEAN_S)
    assert limiter.margin_s == INITIAL_MARGIN_S and limiter.snapshot().probing  # then tried
    clean_running(limiter, now, PROBE_HOLD_S + MARGIN_PROVEN_S)
    assert [lesson.margin_s for lesson in learnt][-1] == INITIAL_MARGIN_S


def test_a_narrowing_that_draws_a_429_waits_twice_as_long_before_the_next() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    bunched_429(limiter, now)
    bunched_429(limiter, now)  # an episode: 75 ms for the run
    clean_running(limiter, now, EPISODE_NARROW_S)
    assert limiter.margin_s == pytest.approx(0.05)
    bunched_429(limiter, now)  # the narrower margin drew one
    assert limiter.margin_s == pytest.approx(0.075)
    clean_running(limiter, now, 2 * EPISODE_NARROW_S - 1)
    assert limiter.margin_s == pytest.approx(0.075)
    clean_running(limiter, now, 1)
    assert limiter.margin_s == pytest.approx(0.05)


def test_a_fresh_lesson_is_kept_for_an_hour_so_the_next_runs_draw_no_429() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0], margin_s=0.05, margin_age_s=60.0)
    clean_running(limiter, now, PROBE_AFTER_S - 61)
    assert limiter.margin_s == 0.05 and not limiter.snapshot().probing
    clean_running(limiter, now, PROBE_CLEAN_S)
    assert limiter.margin_s == INITIAL_MARGIN_S and limiter.snapshot().probing


def test_an_hour_old_lesson_that_still_holds_is_kept_dated_anew_and_tried_later() -> None:
    now = [0.0]
    learnt: list[MarginLesson] = []
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0], margin_s=0.05,
                                  margin_age_s=PROBE_AFTER_S, on_margin=learnt.append)
    clean_running(limiter, now, PROBE_CLEAN_S)
    assert limiter.margin_s == INITIAL_MARGIN_S  # tried one step narrower ...
    bunched_429(limiter, now)  # ... and the path still needs the lesson
    assert limiter.margin_s == 0.05 and not limiter.snapshot().probing
    clean_running(limiter, now, MARGIN_PROVEN_S)
    assert [(lesson.margin_s, lesson.refuted) for lesson in learnt] == [(0.05, 1)]
    assert learnt[0].age_s < 2 * MARGIN_PROVEN_S  # dated anew
    clean_running(limiter, now, 2 * PROBE_AFTER_S - 2 * MARGIN_PROVEN_S)
    assert limiter.margin_s == 0.05  # the next try waits twice as long
    clean_running(limiter, now, 2 * MARGIN_PROVEN_S)
    assert limiter.margin_s == INITIAL_MARGIN_S


def test_a_narrower_margin_that_held_becomes_the_lesson() -> None:
    now = [0.0]
    learnt: list[MarginLesson] = []
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0], margin_s=0.05,
                                  margin_age_s=PROBE_AFTER_S, on_margin=learnt.append)
    clean_running(limiter, now, PROBE_CLEAN_S + PROBE_HOLD_S + MARGIN_PROVEN_S)
    assert limiter.margin_s == INITIAL_MARGIN_S and not limiter.snapshot().probing
    assert [(lesson.margin_s, lesson.refuted) for lesson in learnt] == [(INITIAL_MARGIN_S, 0)]


def test_a_429_for_a_request_sent_before_the_try_does_not_refute_it() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0], margin_s=0.05,
                                  margin_age_s=PROBE_AFTER_S)
    limiter.on_server_limit(10, None, now[0])
    sent_at = full_rate(limiter, now)
    clean_running(limiter, now, PROBE_CLEAN_S)
    assert limiter.snapshot().probing
    limiter.on_throttled(None, 10, sent_at)  # sent at the lesson's margin, before the try
    assert limiter.snapshot().lesson.refuted == 0


def test_what_is_remembered_is_capped() -> None:
    now = [0.0]
    learnt: list[MarginLesson] = []
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0], on_margin=learnt.append)
    for _ in range(5):  # lone 429s, each a minute and more after the last
        bunched_429(limiter, now)
        clean_running(limiter, now, EPISODE_S + 1)
    assert max(lesson.margin_s for lesson in learnt) == pytest.approx(REMEMBERED_CAP_S)
    assert limiter.snapshot().lesson.margin_s == pytest.approx(REMEMBERED_CAP_S)


def test_the_tries_cost_at_most_four_429s_the_first_day_then_one_a_day() -> None:
    """The cost stated in pacer.py's docstring, on a path that always needs its lesson."""
    margin = ArrivalMargin(MarginLesson(0.05), now=0.0)
    tries_at: list[float] = []
    for minute in range(3 * 24 * 60):  # three days of continuous, otherwise clean running
        now = 60.0 * minute
        margin.refresh(now)
        if margin.probing:
            tries_at.append(now)
            margin.bunched(now + 1.0, sent_at=now + 0.5)  # the narrower margin draws a 429
    per_day = [sum(1 for t in tries_at if day * 86400 <= t < (day + 1) * 86400)
               for day in range(3)]
    assert per_day[0] <= 4 and per_day[1] <= 2 and per_day[2] <= 1
    assert probe_after_s(0) == PROBE_AFTER_S and probe_after_s(10) == 86400.0


def test_a_run_after_a_bad_episode_starts_narrow_and_a_50_ms_path_keeps_its_lesson() -> None:
    """Whole simulated runs: a lesson from jitter the path keeps, none from an episode."""
    bad = run_virtual(simulate(10.0, 0.15, 120.0, seed=1, retry_after_s=1.0))
    assert bad.limiter.rate == 10.0
    lesson = bad.limiter.snapshot().lesson
    assert lesson.margin_s <= INITIAL_MARGIN_S + MARGIN_STEP_S and lesson.age_s >= PROBE_AFTER_S
    after = run_virtual(simulate(10.0, 0.0, 60.0, seed=2, retry_after_s=1.0, lesson=lesson))
    assert after.throttled == 0 and after.fraction_of(10.0) >= 0.97
    assert after.limiter.snapshot().lesson.margin_s == INITIAL_MARGIN_S  # within the run

    first = run_virtual(simulate(10.0, 0.05, 60.0, seed=3, retry_after_s=1.0))
    assert first.throttled == 1 and first.fraction_of(10.0) >= 0.93
    second = run_virtual(simulate(10.0, 0.05, 60.0, seed=4, retry_after_s=1.0,
                                  lesson=first.limiter.snapshot().lesson))
    assert second.throttled == 0 and second.fraction_of(10.0) >= 0.95
