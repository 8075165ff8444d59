"""The pacer against a simulated NCBI window on virtual time: arrival = send + random delay.

The server admits a request unless ``limit`` requests already arrived in the second before
it, and answers every request with ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` (as
real NCBI does, docs/ncbi-api.md §6), counted at the request's arrival or, with
``--counted-at answer``, when its answer leaves. Nothing sleeps: the event loop jumps to the
next timer.

    python bench/pacer_sim.py                 # 10/s, delay spread 0 / 20 / 50 ms, 120 s each
    python bench/pacer_sim.py --foreign 4     # plus another process using 4/s of the same key
    python bench/pacer_sim.py --counted-at answer --latency 1.1   # slow answers, NCBI's other reading
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import deque
from dataclasses import dataclass, field

from bulkgene.net.pacer import INITIAL_MARGIN_S, AdaptiveRateLimiter, MarginLesson
from bulkgene.testing.virtual_time import VirtualTimeLoop, run_virtual
from bulkgene.testing.windows import max_in_window

# the virtual clock moved to bulkgene.testing; re-exported for the tests that import it here
__all__ = ["ServerWindow", "SimResult", "VirtualTimeLoop", "max_in_window", "run_virtual",
           "simulate"]


@dataclass
class ServerWindow:
    """The server's per-key sliding window over arrivals; 429s are not counted."""

    limit: int
    admitted: deque[float] = field(default_factory=deque)

    def arrive(self, now_s: float) -> int | None:
        """Admit a request arriving now: its ``Remaining``, or None for a 429."""
        while self.admitted and self.admitted[0] <= now_s - 1.0:
            self.admitted.popleft()
        if len(self.admitted) >= self.limit:
            return None
        self.admitted.append(now_s)
        return self.limit - len(self.admitted)

    def remaining(self, now_s: float) -> int:
        """What is left of the window now, without counting a request."""
        return max(0, self.limit - sum(1 for t in self.admitted if t > now_s - 1.0))


@dataclass
class SimResult:
    """What the server saw of our requests."""

    arrivals_s: list[float]
    throttled_at_s: list[float]  # arrival times of the requests answered 429
    limiter: AdaptiveRateLimiter

    @property
    def throttled(self) -> int:
        return len(self.throttled_at_s)

    def fraction_of(self, ceiling: float, skip_s: float = 0.0) -> float:
        """Achieved rate over the run (after ``skip_s``) as a fraction of ``ceiling``."""
        times = sorted(self.arrivals_s)
        times = [t for t in times if t >= times[0] + skip_s]
        return (len(times) - 1) / (times[-1] - times[0]) / ceiling


async def simulate(rate: float, delay_spread_s: float, duration_s: float = 60.0, *,
                   server_limit: int = 10, workers: int = 16, latency_s: float = 0.3,
                   foreign_rate: float = 0.0, seed: int = 1,
                   limiter: AdaptiveRateLimiter | None = None,
                   margin_s: float | None = None, counted_at: str = "arrival",
                   retry_after_s: float | None = None,
                   lesson: MarginLesson | None = None) -> SimResult:
    """Requests from ``workers`` concurrent tasks for ``duration_s`` virtual seconds;
    ``counted_at``: when the server counts the ``Remaining`` it answers ("arrival" or
    "answer"); ``retry_after_s``: what its 429s say; ``lesson``: what an earlier run on the
    path left (instead of ``margin_s``)."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    if limiter is None:
        if lesson is None:
            lesson = MarginLesson(INITIAL_MARGIN_S if margin_s is None else margin_s)
        limiter = AdaptiveRateLimiter(rate, margin_s=lesson.margin_s,
                                      margin_refuted=lesson.refuted, margin_age_s=lesson.age_s)
    server = ServerWindow(server_limit)
    end_s = loop.time() + duration_s
    arrivals: list[float] = []
    throttled: list[float] = []

    async def request() -> int | None:
        await limiter.acquire()
        sent_at = limiter.on_sent()
        await asyncio.sleep(rng.uniform(0.0, delay_spread_s))
        arrivals.append(loop.time())
        remaining = server.arrive(loop.time())
        if remaining is None:
            throttled.append(loop.time())
        if remaining is not None:  # a 429 is answered at once
            await asyncio.sleep(latency_s * rng.uniform(0.8, 1.2))
            if counted_at == "answer":
                remaining = server.remaining(loop.time())
        limiter.on_server_limit(server_limit, remaining or 0, sent_at)
        if remaining is None:
            limiter.on_throttled(retry_after_s, server_limit, sent_at)
        return remaining

    async def worker() -> None:
        while loop.time() < end_s:
            if await request() is None:  # the fetcher's backoff, at least the Retry-After
                await asyncio.sleep(max(retry_after_s or 0.0, rng.uniform(0.0, 1.0)))

    async def foreign() -> None:
        while loop.time() < end_s:
            await asyncio.sleep(1.0 / foreign_rate)
            server.arrive(loop.time())

    tasks = [worker() for _ in range(workers)]
    if foreign_rate > 0:
        tasks.append(foreign())
    await asyncio.gather(*tasks)
    return SimResult(arrivals, throttled, limiter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=120.0, help="virtual seconds")
    parser.add_argument("--foreign", type=float, default=0.0, help="another process's req/s")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--margin-ms", type=float, default=None,
                        help="the pacer's starting margin [default: its own, 25 ms]")
    parser.add_argument("--counted-at", choices=["arrival", "answer"], default="arrival",
                        help="when the server counts the Remaining it answers")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds to answer")
    args = parser.parse_args()
    print(f"limit {args.rate:g}/s, {args.duration:g} virtual s, foreign {args.foreign:g}/s, "
          f"Remaining counted at {args.counted_at}, answers after {args.latency:g} s")
    for spread_ms in (0, 20, 50):
        for seed in range(1, args.seeds + 1):
            result = run_virtual(simulate(args.rate, spread_ms / 1000, args.duration,
                                          server_limit=round(args.rate),
                                          foreign_rate=args.foreign, seed=seed,
                                          margin_s=None if args.margin_ms is None
                                          else args.margin_ms / 1000,
                                          counted_at=args.counted_at, latency_s=args.latency))
            print(f"delay 0-{spread_ms:2d} ms seed {seed}: "
                  f"{result.fraction_of(args.rate):.3f} of the ceiling, "
                  f"{result.throttled} throttled, max {max_in_window(result.arrivals_s)} "
                  f"of ours in any 1 s, final rate {result.limiter.rate:.2f}/s, "
                  f"margin {1000 * result.limiter.margin_s:.0f} ms")


if __name__ == "__main__":
    main()
