"""The pacer (bulkgene/net/pacer.py) on a virtual or fake clock, no sleeping: no start-up
burst, spacing by send time, its reading of the server's Remaining and Limit, what each kind
of 429 costs, AIMD. The margin's learning is in test_arrival_margin.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import EmulatorFactory, cli_command, cli_env, earned_429s, served, write_ids

from bulkgene.budget.margin import recall_margin_s
from bulkgene.net.arrival_margin import PROBE_AFTER_S, Widening
from bulkgene.net.pacer import INITIAL_MARGIN_S, MARGIN_STEP_S, AdaptiveRateLimiter, MarginLesson
from bulkgene.testing.virtual_time import VirtualTimeLoop, run_virtual
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
    limiter.on_throttled(None)  # a first 429: the request is resent, nothing else
    assert limiter.rate == 10.0
    limiter.on_throttled(None)  # and another: they keep coming
    assert limiter.rate == 5.0
    now[0] += 1.5
    limiter.on_throttled(None)  # the server's window still holds the old burst: no second cut
    assert limiter.rate == 5.0
    now[0] += 1.0
    limiter.on_throttled(None)
    assert limiter.rate == 2.5
    for expected in (3.5, 4.5, 4.6, 4.7):  # fast to 90 % of the throttled 5.0, then a creep
        now[0] += 5.0
        limiter.refresh()
        assert abs(limiter.rate - expected) < 1e-9


async def test_a_server_that_names_its_limit_sets_the_ceiling() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_throttled(1.0, server_limit=4.0)
    assert limiter.rate == 4.0 and limiter.ceiling == 4.0
    now[0] += 100
    limiter.refresh()
    assert limiter.rate == 4.0


# -- reading the server's count --------------------------------------------------

async def send(limiter: AdaptiveRateLimiter, count: int) -> list[float]:
    """Send ``count`` requests one after the other; their send times."""
    times: list[float] = []
    for _ in range(count):
        await limiter.acquire()
        times.append(limiter.on_sent())
    return times


def after_remaining(sent: int, limit: float | None, remaining: int, answers: int = 1
                    ) -> tuple[list[float], float]:
    """Send ``sent`` requests, read the headers of the last ``answers`` of them (all with the
    same count); the sends and the next send time."""

    async def scenario() -> tuple[list[float], float]:
        limiter = AdaptiveRateLimiter(10.0)
        times = await send(limiter, sent)
        for sent_at in times[-answers:]:
            limiter.on_server_limit(limit, remaining, sent_at)
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
    # 10 counted, 3 ours: 7 from another process, as two answers show
    times, next_at = after_remaining(3, 10, 0, answers=2)
    assert next_at >= times[-1] + 1.0


def test_one_answer_alone_does_not_show_another_process() -> None:
    times, next_at = after_remaining(3, 10, 0)  # the same count, but from one answer only
    assert next_at - times[-1] < 0.2


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
        limiter.note_sent(now[0])
    limiter.on_throttled(None, server_limit=10.0)  # NCBI sends its Limit on every answer
    assert limiter.rate == 10.0 and limiter.margin_s == INITIAL_MARGIN_S  # resent, no more
    limiter.note_sent(now[0])
    limiter.on_throttled(None, server_limit=10.0)  # and again: 429s keep coming
    assert limiter.rate == 5.0 and limiter.ceiling == 10.0
    for expected in (6.0, 7.0, 8.0, 9.0, 9.1):  # fast to 90 % of the throttled 10, then creep
        now[0] += 2.0
        limiter.refresh()
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
        for _ in range(2):  # 429s that keep coming are still 429s: halve
            limiter.on_throttled(None, server_limit=absurd)
    assert limiter.ceiling == 10.0 and limiter.rate == 5.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ignoring it" in warnings[0]
    assert f"{absurd:g} requests/s" in warnings[0]


# -- what a 429 costs: the sequences of issue 20, on a scripted key ----------------------

@dataclass
class ScriptedKey:
    """A server's one-second window over our key, scripted: every request is answered
    ``answer_after_s`` after it was sent, with NCBI's headers, its ``Remaining`` counted at the
    request's arrival or as the answer leaves (docs/ncbi-api.md §6 leaves open which); the requests
    numbered in ``throttle`` (from 0) get a 429 instead, as bunched arrivals would draw; a
    stranger's requests at ``stranger_at`` (virtual seconds from the start) count too."""

    limiter: AdaptiveRateLimiter
    limit: float | None = 10.0
    counted_at: str = "arrival"
    answer_after_s: float = 0.7
    refused_after_s: float = 0.001
    throttle: frozenset[int] = frozenset()
    retry_after_s: float | None = None
    busy_after: dict[int, float] = field(default_factory=dict)  # request -> loop busy for (s)
    sent: list[float] = field(default_factory=list)
    admitted: list[float] = field(default_factory=list)
    throttled: int = 0

    def _remaining(self, at: float) -> int:
        assert self.limit is not None
        return max(0, int(self.limit) - sum(1 for t in self.admitted if at - 1.0 < t <= at))

    async def run(self, requests: int, workers: int = 16) -> None:
        loop = asyncio.get_running_loop()
        numbers = iter(range(requests))

        async def worker() -> None:
            for number in numbers:
                await self.limiter.acquire()
                sent_at = self.limiter.on_sent()
                self.sent.append(sent_at)
                if number in self.busy_after:
                    cast(VirtualTimeLoop, loop).busy(self.busy_after[number])
                refused = number in self.throttle
                if not refused:
                    self.admitted.append(sent_at)
                await asyncio.sleep(self.refused_after_s if refused else self.answer_after_s)
                if self.limit is not None:
                    counted_at = sent_at if self.counted_at == "arrival" else loop.time()
                    self.limiter.on_server_limit(
                        self.limit, 0 if refused else self._remaining(counted_at), sent_at)
                if refused:
                    self.throttled += 1
                    self.limiter.on_throttled(self.retry_after_s, self.limit, sent_at)

        await asyncio.gather(*(worker() for _ in range(workers)))

    def longest_gap_s(self) -> float:
        return max(b - a for a, b in itertools.pairwise(sorted(self.sent)))


def scripted(requests: int, **settings: Any) -> ScriptedKey:
    """A cold pacer at 10/s against a scripted key, run on the virtual clock."""

    async def scenario() -> ScriptedKey:
        key = ScriptedKey(AdaptiveRateLimiter(10.0), **settings)
        await key.run(requests)
        return key

    return run_virtual(scenario())


@pytest.mark.parametrize("counted_at", ["arrival", "answer"])
@pytest.mark.parametrize("retry_after_s", [None, 1.0])
def test_a_lone_cold_429_costs_one_margin_step_and_nothing_else(
        counted_at: str, retry_after_s: float | None) -> None:
    """Issue 20: a lone run drew one 429 a second in and then ran at half rate."""
    key = scripted(60, counted_at=counted_at, throttle=frozenset({10}),
                   retry_after_s=retry_after_s)
    after = key.limiter.snapshot()
    assert key.limiter.rate == 10.0 and not after.stranger_shown
    assert key.limiter.margin_s == pytest.approx(INITIAL_MARGIN_S + MARGIN_STEP_S)
    assert key.longest_gap_s() < 0.2, "nobody paused: the 429 only cost its own resend"


@pytest.mark.parametrize("counted_at", ["arrival", "answer"])
def test_slow_answers_counted_as_they_leave_are_not_taken_for_another_process(
        counted_at: str) -> None:
    """An answer that took 0.7 s carries, in the second reading, our own later requests."""
    key = scripted(60, counted_at=counted_at)
    assert not key.limiter.snapshot().stranger_shown
    assert key.longest_gap_s() < 0.2, "no pause for a stranger that is not there"


def test_429s_that_keep_coming_halve_the_rate_and_pause_everyone() -> None:
    key = scripted(30, limit=None, throttle=frozenset({10}), retry_after_s=1.0)
    assert key.limiter.rate == 10.0  # a server that names no limit: the first is only resent
    key = scripted(30, limit=None, throttle=frozenset({10, 25}), retry_after_s=1.0)
    assert key.limiter.rate == 5.0
    assert key.longest_gap_s() >= 1.0, "everyone paused for the Retry-After"


def test_bunched_429s_that_keep_coming_widen_the_margin_for_this_run_only() -> None:
    key = scripted(40, throttle=frozenset({10, 30}))
    snapshot = key.limiter.snapshot()
    assert key.limiter.rate == 10.0
    assert key.limiter.margin_s == pytest.approx(INITIAL_MARGIN_S + 2 * MARGIN_STEP_S)
    assert snapshot.lesson.age_s >= PROBE_AFTER_S, "an episode: the lesson is in doubt"


def test_a_429_in_flight_when_the_first_was_heard_is_answered_by_it() -> None:
    key = scripted(40, limit=None, throttle=frozenset({10, 11}), refused_after_s=0.3)
    assert key.limiter.rate == 10.0  # the second was sent 0.1 s after the first, 0.2 s
    # before its 429 came back


@pytest.mark.parametrize(("answers", "halved"), [(1, False), (2, True)])
def test_another_process_halves_the_rate_once_more_than_one_answer_shows_it(
        answers: int, halved: bool) -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    sent = []
    for _ in range(5):  # half the key's rate: the rest of the server's count is someone else's
        limiter.note_sent(now[0])
        sent.append(now[0])
        now[0] += 0.2
    for sent_at in sent[:answers]:
        limiter.on_server_limit(10, 0, sent_at)  # ten counted, one or two of them ours
    assert limiter.snapshot().stranger_shown is halved
    limiter.note_sent(now[0])
    limiter.on_throttled(1.0, 10, now[0])
    assert limiter.rate == (5.0 if halved else 10.0)
    assert (limiter.snapshot().paused_until > now[0]) is halved  # the Retry-After, for all


def test_a_429_that_our_own_event_loop_lag_explains_teaches_nothing() -> None:
    """The loop was busy 60 ms after a send (parsing a page): work queued behind it, such as
    a POST's body, may have reached the wire that much later, and bunched."""
    learnt: list[MarginLesson] = []

    async def scenario() -> ScriptedKey:
        key = ScriptedKey(AdaptiveRateLimiter(10.0, on_margin=learnt.append),
                          throttle=frozenset({10}), busy_after={1: 0.06})
        await key.run(80)
        return key

    key = run_virtual(scenario())
    assert key.limiter.rate == 10.0
    assert key.limiter.margin_s == pytest.approx(INITIAL_MARGIN_S + MARGIN_STEP_S)  # this run
    assert key.limiter.snapshot().lesson.margin_s == INITIAL_MARGIN_S and learnt == []


def test_a_429_after_our_own_late_send_overfilled_the_second_changes_nothing() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, clock=lambda: now[0])
    limiter.on_server_limit(10, None, now[0])
    for _ in range(10):
        limiter.note_sent(now[0])
        now[0] += 0.1
    limiter.note_sent(0.35)  # a slow connect: reported after the next ones had gone
    limiter.on_throttled(None, 10, now[0] - 0.1)
    assert limiter.rate == 10.0 and limiter.margin_s == INITIAL_MARGIN_S


@pytest.mark.slow  # 40 requests at the key's 10/s, after the lease's admission
@pytest.mark.parametrize("counted_at", ["arrival", "answer"])
def test_a_lone_cold_run_draws_at_most_one_429_and_never_halves(
        make_emulator: EmulatorFactory, tmp_path: Path, counted_at: str) -> None:
    """Issue 20 end to end: NCBI as recorded (limit headers on every answer, Keep-Alive 4 s/40),
    0-50 ms of arrival jitter, answers in 0.3-0.7 s; a new user's first run (no --rate: the
    key's budget, a path nothing was learnt on)."""
    emulator = make_emulator(rate_limit=True, arrival_jitter_ms=50.0, latency_s=0.3,
                             latency_per_gene_s=0.004, remaining_counted_at=counted_at, seed=1)
    source = write_ids(tmp_path / "ids.txt", range(1, 4001))
    result = subprocess.run(cli_command("fetch", str(source), "--out", str(tmp_path / "out"),
                                        "--batch-size", "100", "-v"),
                            env=cli_env(emulator.base_url, NCBI_API_KEY="a-new-users-key"),
                            capture_output=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr.decode()
    arrivals = served(emulator.state.arrivals())
    statuses = [a.status for a in arrivals]
    # a machine so busy that our own sends left late may add 429s of its own: -v says so; and
    # the emulator's loop, late on the same machine, judges some itself (earned_429s)
    own_lag = result.stderr.count(Widening.OWN_LAG.value.encode())
    assert statuses.count(200) == 40 and len(earned_429s(arrivals)) - own_lag <= 1
    assert b"requests/s after HTTP 429" not in result.stderr, "the rate was never cut"
    learnt = recall_margin_s(next(Path(os.environ["BULKGENE_BUDGET_DIR"]).glob("127.0.0.1")))
    assert learnt is None or learnt <= INITIAL_MARGIN_S + MARGIN_STEP_S  # one step at most
