"""One key, several independent runs: the combined rate at the server, and how fast a survivor rises.

Against one emulator limiting the key to 10 requests/s (as NCBI was recorded: limit headers on
every answer), each scenario starts real ``bulkgene fetch`` processes without ``--rate`` that
share one budget directory, as jobs of one user on one host do:

1. two runs into different directories, the second started 1 s after the first: requests/s of
   both together while both run (from the second's first request to its last), the most
   requests in any 1-s window at the server, 429s, and the survivor's rise: seconds from the
   other's last request until the survivor's own rate over a 2-s window reaches 90 % of the
   budget, and its rate afterwards;
2. the same, the second run SIGKILLed after 40 of its requests;
3. three runs started at the same instant: the most requests in any 1-s window, first second
   included, and 429s.

    python -m bench.sharing                # 3 repeats, ~4 minutes
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import PYTHON, Emulator, bulkgene_env, fmt, median_spread, save
from bulkgene.testing.windows import max_in_window

KEY = "bench-sharing-key"
BUDGET_RPS = 10.0


def rate_between(times: list[float], start: float, end: float) -> float:
    inside = [t for t in times if start <= t <= end]
    return (len(inside) - 1) / (inside[-1] - inside[0]) if len(inside) > 2 else 0.0


def rise_s(times: list[float], since: float, window_s: float = 2.0) -> float:
    """Seconds after ``since`` until ``times`` hold 90 % of the budget over ``window_s``."""
    times = sorted(t for t in times if t >= since)
    for i, t in enumerate(times):
        inside = [u for u in times[i:] if u < t + window_s]
        if len(inside) >= 0.9 * BUDGET_RPS * window_s:
            return t - since
    return float("inf")


def start_run(ids: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PYTHON, "-m", "bulkgene", "fetch", str(ids), "--out", str(out), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ids_from(first: int, count: int, directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text("".join(f"{first + i}\n" for i in range(count)))
    return path


def two_runs(emulator: Emulator, work: Path, scale: float, kill_after: int | None
             ) -> dict[str, float]:
    """Scenario 1 (``kill_after`` None) or 2: the figures of one repeat."""
    emulator.reset()
    time.sleep(1.1)
    budget = Path(tempfile.mkdtemp(prefix="bench-sharing-budget-", dir=work))
    env = bulkgene_env(emulator.base_url, budget, NCBI_API_KEY=KEY)
    # 1000-ID batches of consecutive IDs: one request each, so requests are easy to attribute
    survivor = start_run(ids_from(1, int(120_000 * scale), work, "a.txt"),
                         work / f"a-{time.time()}", env)
    time.sleep(1.0)  # "started 1 s apart"
    other = start_run(ids_from(10_000_001, int(40_000 * scale), work, "b.txt"),
                      work / f"b-{time.time()}", env)
    if kill_after is not None:
        while other.poll() is None and sum(
                1 for a in emulator.arrivals() if (a["first_id"] or 0) > 10_000_000) < kill_after:
            time.sleep(0.1)
        other.send_signal(signal.SIGKILL)
    other_code = other.wait(timeout=600)
    survivor_code = survivor.wait(timeout=600)
    assert survivor_code == 0 and (kill_after is not None or other_code == 0), \
        (survivor_code, other_code)
    arrivals = [a for a in emulator.arrivals() if a["first_id"] is not None]
    times = [a["t"] for a in arrivals]
    mine = [a["t"] for a in arrivals if a["first_id"] <= 10_000_000]
    theirs = [a["t"] for a in arrivals if a["first_id"] > 10_000_000]
    rise = rise_s(mine, theirs[-1])
    return {"together_rps": rate_between(times, theirs[0], theirs[-1]),
            "max_in_any_second": max_in_window(times),
            "throttled": sum(1 for a in arrivals if a["status"] == 429),
            "survivor_rise_s": rise,
            "survivor_rps_after": rate_between(mine, theirs[-1] + rise, mine[-1])}


def three_at_once(emulator: Emulator, work: Path, scale: float) -> dict[str, float]:
    """Scenario 3: the figures of one repeat."""
    emulator.reset()
    time.sleep(1.1)
    budget = Path(tempfile.mkdtemp(prefix="bench-sharing-budget-", dir=work))
    env = bulkgene_env(emulator.base_url, budget, NCBI_API_KEY=KEY)
    runs = [start_run(ids_from(n * 10_000_000 + 1, int(20_000 * scale), work, f"{n}.txt"),
                      work / f"three-{n}-{time.time()}", env) for n in range(3)]
    assert [run.wait(timeout=600) for run in runs] == [0, 0, 0]
    arrivals = [a for a in emulator.arrivals() if a["first_id"] is not None]
    times = sorted(a["t"] for a in arrivals)
    return {"max_in_any_second": max_in_window(times),
            "max_in_first_second": sum(1 for t in times if t < times[0] + 1.0),
            "throttled": sum(1 for a in arrivals if a["status"] == 429),
            "together_rps": rate_between(times, times[0], times[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="of each run's ID count")
    parser.add_argument("--latency", type=float, default=0.3)
    args = parser.parse_args()
    started = time.monotonic()
    runs: dict[str, dict[str, list[float]]] = {}
    scale = args.scale
    scenarios: dict[str, Callable[[Emulator, Path], dict[str, float]]] = {
        "two runs, 1 s apart": lambda e, w: two_runs(e, w, scale, None),
        "two runs, the second SIGKILLed": lambda e, w: two_runs(e, w, scale,
                                                                max(2, int(40 * scale))),
        "three runs at the same instant": lambda e, w: three_at_once(e, w, scale)}
    with tempfile.TemporaryDirectory(prefix="bench-sharing-") as tmp, \
            Emulator("--latency", str(args.latency), "--latency-per-gene", "0.0008", "--jitter",
                     "0.1", "--keyed-rate", str(BUDGET_RPS), "--seed", "1") as emulator:
        work = Path(tmp)
        for repeat in range(args.repeats):
            for name, scenario in scenarios.items():
                figures = scenario(emulator, work)
                for key, value in figures.items():
                    runs.setdefault(name, {}).setdefault(key, []).append(value)
                print(f"{name}, repeat {repeat + 1}: "
                      + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()), flush=True)
    stats: dict[str, Any] = {name: {k: median_spread(v) for k, v in figures.items()}
                             for name, figures in runs.items()}
    print(f"\nmedian (min-max) of {args.repeats}, budget {BUDGET_RPS:g}/s:\n")
    print("| scenario | together req/s | max in any 1 s | 429s | survivor rises in s "
          "| survivor req/s after |")
    print("|---|---|---|---|---|---|")
    for name, s in stats.items():
        def cell(key: str, digits: int = 2, s: dict[str, Any] = s) -> str:
            return fmt(s[key], digits) if key in s else "-"
        print(f"| {name} | {cell('together_rps')} | {cell('max_in_any_second', 0)} "
              f"| {cell('throttled', 0)} | {cell('survivor_rise_s', 1)} "
              f"| {cell('survivor_rps_after')} |")
    print(f"\nwhole bench: {time.monotonic() - started:.0f} s")
    print(f"result: {save('sharing', {'args': vars(args), 'stats': stats, 'runs': runs})}")


if __name__ == "__main__":
    main()
