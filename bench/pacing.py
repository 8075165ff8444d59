"""What a 429 costs (issue 20): bulkgene's pacing started cold, through arrival jitter and after a
bad episode, this tree and a baseline side by side in one invocation.

The emulator behaves as NCBI was recorded (``X-RateLimit-Limit``/``-Remaining`` on every
answer, ``Keep-Alive: timeout=4, max=40``, a limit of 10/s per key), answers after 0.3 s +
0.8 ms per gene (+-10 %), and counts ``Remaining`` at the request's arrival or, the other
reading docs/ncbi-api.md §6 leaves open, as the answer leaves. The IDs have 5-9 digits, as
real lists mix them; bulkgene runs as a new user's would (no ``--rate``: the key's budget
lease; GET). Each run gets a budget directory of its own (a path nothing was learnt on)
unless the scenario says otherwise. Scenarios, for both versions in turn:

* cold start, no jitter, each reading: target >= 0.97 of the ceiling and <= 1 x 429;
* 0-50 ms of arrival jitter, each reading: the first run on the path (<= 1 x 429, >= 0.93)
  and the second on the same path (0 x 429, >= 0.95);
* after a bad episode: a run at 0-150 ms of jitter, then one on the same path at 0 ms
  (it should run at the narrow margin: 25 ms, >= 0.97);
* after an old lesson: the path's memory holds 100 ms learnt two hours ago (as an older
  bulkgene left it on this machine): the run should be back at 25 ms by its end.

The baseline is any other checkout of bulkgene: ``--baseline-commit main`` extracts that
commit (``git archive``) into a temporary directory; ``--baseline-tree DIR`` uses one you
made. Its runs start ``python -m bulkgene`` in that directory, against the same emulator.

    python -m bench.pacing --baseline-commit main          # 150 000 IDs, 3 repeats, ~35 min
    python -m bench.pacing --ids 3000 --episode-ids 3000 --repeats 1   # smoke, this tree only
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    Emulator,
    bulkgene_env,
    fmt,
    median_spread,
    run_measured,
    save,
    write_mixed_ids,
)
from bench.rate import achieved_rate
from bulkgene.budget.margin import recall_margin_s, remember_margin_s
from bulkgene.net.pacer import INITIAL_MARGIN_S, REMEMBERED_CAP_S

KEY = "bench-key"
REPO = Path(__file__).resolve().parent.parent
READINGS = ("arrival", "answer")
_HALVED = "requests/s after HTTP 429"  # the pacer's -v line for a rate cut, old and new
_STALE_LESSON_S = 0.1
_STALE_AGE_S = 2 * 3600.0


def run_bulkgene(emulator: Emulator, ids_file: Path, budget: Path, tree: Path | None,
                 keep_log: Path | None = None) -> dict[str, float]:
    """One measured run of the bulkgene in ``tree`` (None: this one), leasing in ``budget``;
    ``margin_ms_after``: the margin the next run on the path starts from."""
    emulator.reset()
    time.sleep(1.1)  # the key's window empties
    out = Path(tempfile.mkdtemp(prefix="bench-pacing-"))
    try:
        with open(out.with_suffix(".log"), "w+b") as log:
            child = run_measured([PYTHON, "-m", "bulkgene", "fetch", str(ids_file), "--out",
                                  str(out / "run"), "-v", "--endpoint", "gene-id"],
                                 env=bulkgene_env(emulator.base_url, budget,
                                                  NCBI_API_KEY=KEY),
                                 stderr=log, cwd=tree)
            log.seek(0)
            stderr = log.read().decode(errors="replace")
        if keep_log is not None:
            keep_log.write_text(stderr)
        assert child.returncode == 0, f"bulkgene exited {child.returncode}: {stderr[-2000:]}"
    finally:
        out.with_suffix(".log").unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)
    arrivals = emulator.arrivals()
    margin_s = max(INITIAL_MARGIN_S, recall_margin_s(budget / "127.0.0.1") or 0.0)
    if tree is None:  # where this tree's next run starts: what is remembered, capped
        margin_s = min(REMEMBERED_CAP_S, margin_s)
    return {"rate_ratio": achieved_rate(arrivals) / 10.0,
            "throttled": sum(1 for a in arrivals if a["status"] == 429),
            "halvings": stderr.count(_HALVED), "requests": len(arrivals),
            "wall_s": child.wall_s,
            "margin_ms_after": 1000 * margin_s}


def extract(commit: str) -> Path:
    """``commit`` of this repository as a plain directory (removed at the end)."""
    tree = Path(tempfile.mkdtemp(prefix="bench-pacing-baseline-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=150_000, help="IDs per measured run")
    parser.add_argument("--episode-ids", type=int, default=50_000,
                        help="IDs of the bad episode's run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--logs", type=Path, help="keep each run's -v log in this directory")
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline-commit", help="compare with this commit (git archive)")
    baseline.add_argument("--baseline-tree", type=Path, help="compare with this checkout")
    args = parser.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-pacing-ids-"))
    write_mixed_ids(work / "ids.txt", args.ids)
    episode_file = work / "episode.txt"
    episode_file.write_text("".join((work / "ids.txt").read_text().splitlines(True)
                                    [:args.episode_ids]))
    extracted = extract(args.baseline_commit) if args.baseline_commit else None
    versions: dict[str, Path | None] = {"after": None}
    if extracted or args.baseline_tree:
        versions["before"] = extracted or args.baseline_tree
    runs: dict[str, dict[str, dict[str, list[float]]]] = {}

    def record(scenario: str, version: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            runs.setdefault(scenario, {}).setdefault(version, {}).setdefault(name, []).append(
                value)
        print(f"{scenario}, {version}: " + ", ".join(f"{k}={v:.3f}" for k, v in values.items()),
              flush=True)

    def measure(ids_file: Path, budget: Path, tree: Path | None, scenario: str,
                version: str) -> dict[str, float]:
        keep_log = None
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            name = "".join(c if c.isalnum() else "-" for c in scenario)
            done = len(runs.get(scenario, {}).get(version, {}).get("requests", []))
            keep_log = args.logs / f"{name}.{version}.{done}.log"
        return run_bulkgene(emulator, ids_file, budget, tree, keep_log)

    def fresh_budget() -> Path:
        return Path(tempfile.mkdtemp(prefix="bench-pacing-budget-", dir=work))

    with Emulator("--latency", "0.3", "--latency-per-gene", "0.0008", "--jitter", "0.1",
                  "--keyed-rate", "10", "--seed", "1") as emulator:
        # a cold emulator synthesises every gene afresh and, on 2 busy cores, can stamp
        # arrivals late and bunched; real NCBI has no such stall, so it is warmed first
        emulator.path(0.0)
        run_bulkgene(emulator, work / "ids.txt", fresh_budget(), None)
        for repeat in range(args.repeats):
            order = list(versions.items())
            if repeat % 2:
                order.reverse()  # drift in the machine's load falls on both versions alike
            for version, tree in order:
                for reading in READINGS:
                    emulator.path(0.0, reading)
                    scenario = f"cold start, no jitter, Remaining at {reading}"
                    record(scenario, version,
                           measure(work / "ids.txt", fresh_budget(), tree, scenario, version))
                for reading in READINGS:
                    emulator.path(50.0, reading)
                    budget = fresh_budget()
                    for which in ("first", "second"):
                        scenario = f"0-50 ms jitter, {which} run on the path, Remaining at {reading}"
                        record(scenario, version,
                               measure(work / "ids.txt", budget, tree, scenario, version))
                budget = fresh_budget()
                emulator.path(150.0)
                scenario = "a bad episode: 0-150 ms jitter"
                record(scenario, version, measure(episode_file, budget, tree, scenario, version))
                emulator.path(0.0)
                scenario = "the next run on the path, no jitter"
                record(scenario, version,
                       measure(work / "ids.txt", budget, tree, scenario, version))
                budget = fresh_budget()
                remember_margin_s(budget / "127.0.0.1", _STALE_LESSON_S, age_s=_STALE_AGE_S)
                scenario = "after an old 100 ms lesson, no jitter"
                record(scenario, version,
                       measure(work / "ids.txt", budget, tree, scenario, version))
    if extracted is not None:
        shutil.rmtree(extracted, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    stats = {scenario: {version: {name: median_spread(values) for name, values in metrics.items()}
                        for version, metrics in by_version.items()}
             for scenario, by_version in runs.items()}
    elapsed_s = time.monotonic() - started
    print_table(stats, list(versions), args)
    misses = targets_missed(stats)
    print("targets (this tree): " + ("all met" if not misses else "MISSED: " + "; ".join(misses)))
    print(f"whole bench: {elapsed_s:.0f} s")
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                              "stats": stats, "runs": runs, "elapsed_s": elapsed_s,
                              "targets_missed": misses}
    print(f"result: {save('pacing', result)}")


def print_table(stats: dict[str, dict[str, dict[str, dict[str, float]]]], versions: list[str],
                args: argparse.Namespace) -> None:
    print(f"\n{args.ids:,} IDs a run (the bad episode {args.episode_ids:,}); median (min-max) "
          f"of {args.repeats}; {' | '.join(versions)}:\n")
    columns = [("rate_ratio", "requests/s ÷ ceiling", 3), ("throttled", "429s", 0),
               ("halvings", "rate halvings", 0), ("margin_ms_after", "margin after, ms", 0)]
    header = " | ".join(f"{label}, {version}" for _, label, _ in columns for version in versions)
    print(f"| scenario | {header} |")
    print("|---|" + "---|" * (len(columns) * len(versions)))
    for scenario, by_version in stats.items():
        cells = [fmt(by_version[version][name], digits) if version in by_version else "-"
                 for name, _, digits in columns for version in versions]
        print(f"| {scenario} | " + " | ".join(cells) + " |")
    print()


_TARGETS = (("cold start", 0.97, 1), ("0-50 ms jitter, first", 0.93, 1),
            ("0-50 ms jitter, second", 0.95, 0), ("the next run", 0.97, 0))


def targets_missed(stats: dict[str, dict[str, dict[str, dict[str, float]]]]) -> list[str]:
    """Issue 20's targets, on this tree's figures (the median ratio, the worst run's 429s and
    margin)."""
    misses = []
    for scenario, by_version in stats.items():
        after = by_version.get("after")
        if after is None:
            continue
        ratio, throttled = after["rate_ratio"]["median"], after["throttled"]["max"]
        for prefix, least, most_429 in _TARGETS:
            if scenario.startswith(prefix) and (ratio < least or throttled > most_429):
                misses.append(f"{scenario}: {ratio:.3f} of the ceiling, {throttled:.0f} x 429")
        if scenario.startswith(("the next run", "after an old")) and (
                after["margin_ms_after"]["max"] > 25.0):
            misses.append(f"{scenario}: margin {after['margin_ms_after']['max']:.0f} ms after")
    return misses


if __name__ == "__main__":
    main()
