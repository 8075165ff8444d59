"""Memory and scale: peak RSS for 1 M and 10 M IDs, stray large IDs, a full-rate run, resume.

Two kinds of input. ``--sizes``: IDs spread over 1..2**28 like real GeneIDs (so the ID set
touches every range a whole-NCBI run would). ``--strays``: the same, but every 200th ID
(0.5 %) is a stray large number anywhere up to 2**31-1, as a mixed column of tax IDs or
PubMed IDs gives; a set that allocates per range of IDs, not per ID, pays for each stray.
IDS_ONLY keeps the emulator quick. ``--full-rate``: what pages cost, the other way to run
out of memory. COMPLETE reports (the emulator's are 1-8 KB, as real ones: a 1000-gene page
is ~5 MB), the emulator as in bench/rate.py (0.3 s + 0.8 ms per gene, 10/s per key) and
bulkgene as by default with a key (its budget lease, 16 in flight). Targets: peak RSS under
150 MB (150 000 000 bytes) in every case and flat within 10 % between spread sizes;
``plan.bitmap`` as small as the IDs; a re-run over ~10 000 committed batches starts in
seconds. ``--diagnose`` adds one traced full-rate run (slower, not in the medians) that
reports which lines held the most memory at the traced peak.

    python -m bench.memory --repeats 3 --diagnose   # 1 M, 10 M, 2 M strays, full rate: ~40 min
    python -m bench.memory --sizes --strays --full-rate 50000 --repeats 3 --diagnose
    python -m bench.memory --sizes 2000 20000 --strays 2000 --full-rate 3000   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from bench.common import (
    PYTHON,
    Emulator,
    bulkgene_env,
    median_spread,
    run_measured,
    save,
    write_id_lines,
    write_ids,
    write_mixed_ids,
)

MAX_GENE_ID = 2**31 - 1
KEY = "bench-key"
TARGET_BYTES = 150_000_000
MIB = 1 << 20


class CaseResult(TypedDict):
    kind: str
    ids: int
    peak_rss_mib: dict[str, float]
    resume_all_committed_s: dict[str, float]
    plan_bitmap_bytes: int
    batches: int


class FullRateResult(TypedDict):
    ids: int
    genes: int
    peak_rss_mib: dict[str, float]
    genes_per_s: dict[str, float]
    rate_ratio: dict[str, float]
    throttled: dict[str, float]
    wall_s: dict[str, float]
    traced: dict[str, Any] | None


STRAY_EVERY = 200  # 0.5 %


def write_ids_with_strays(path: Path, count: int) -> Path:
    """``count`` IDs spread over 1..2**28, every 200th replaced by a stray up to 2**31-1."""
    return write_id_lines(path, ((i * 0x9E3779B97F4A7C15 >> 7) % MAX_GENE_ID + 1
                                 if i % STRAY_EVERY == 0 else (i * 2654435761) % (2**28 - 1) + 1
                                 for i in range(1, count + 1)))


def id_set_cases(args: argparse.Namespace, work: Path) -> dict[str, CaseResult]:
    cases = [("spread", size) for size in args.sizes] + [("strays", size) for size in args.strays]
    result: dict[str, CaseResult] = {}
    if not cases:
        return result
    with Emulator("--no-rate-limit", "--seed", "3") as emulator:
        for kind, size in cases:
            ids_path = work / f"ids-{kind}-{size}.txt"
            ids_file = (write_ids(ids_path, size, spread=True) if kind == "spread"
                        else write_ids_with_strays(ids_path, size))
            rss: list[float] = []
            resume_s: list[float] = []
            plan_bytes = 0
            for _ in range(args.repeats):
                out = work / f"out-{kind}-{size}"
                command = [PYTHON, "-m", "bulkgene", "fetch", str(ids_file), "--out", str(out),
                           "-q", "--returned-content", "IDS_ONLY", "--rate", "1000",
                           "--concurrency", "8"]
                env = bulkgene_env(emulator.base_url)
                child = run_measured(command, env=env)
                assert child.returncode == 0, f"bulkgene exited {child.returncode}"
                rss.append(child.peak_rss_mib)
                plan_bytes = sum(p.stat().st_size for p in out.rglob("plan.bitmap"))
                again = run_measured(command, env=env)  # everything committed: pure start-up
                assert again.returncode == 0
                resume_s.append(again.wall_s)
                shutil.rmtree(out)
            result[f"{kind}-{size}"] = {"kind": kind, "ids": size,
                                        "peak_rss_mib": median_spread(rss),
                                        "resume_all_committed_s": median_spread(resume_s),
                                        "plan_bitmap_bytes": plan_bytes,
                                        "batches": -(-size // 1000)}
            print(f"{kind} {size} IDs: peak RSS {rss} MiB, plan.bitmap {plan_bytes} bytes, re-run "
                  f"over {-(-size // 1000)} committed batches {resume_s} s", flush=True)
            ids_file.unlink()
    return result


def _fetch_command(ids_file: Path, out: Path, extra: list[str]) -> list[str]:
    return ["fetch", str(ids_file), "--out", str(out), "-q", *extra]


def _achieved_rate(arrivals: list[dict[str, Any]]) -> float:
    times = sorted(a["t"] for a in arrivals)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def _full_rate_run(emulator: Emulator, ids_file: Path, work: Path, args: argparse.Namespace,
                   traced: Path | None = None) -> dict[str, float]:
    """One default keyed bulkgene run (its own budget lease) against a fresh rate window."""
    emulator.reset()
    time.sleep(1.1)  # let the key's window empty
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    budget = Path(tempfile.mkdtemp(prefix="budget-", dir=work))
    knobs = {"BENCH_TRACE_FILE": str(traced or ""),
             "BENCH_FSYNC_DELAY_S": str(args.fsync_delay_s or "")}
    budget_args = (["--memory-budget-mb", str(max(1, round(args.budget_mib)))]
                   if args.budget_mib else [])
    # the plain command unless a knob needs the in-process wrapper below
    prefix = ([PYTHON, "-m", "bench.memory", "--child", "--"] if any(knobs.values())
              else [PYTHON, "-m", "bulkgene"])
    try:
        child = run_measured(prefix + _fetch_command(ids_file, out,
                                                     [*args.fetch_arg, *budget_args]),
                             env=bulkgene_env(emulator.base_url, budget, NCBI_API_KEY=KEY,
                                              **knobs))
        assert child.returncode == 0, f"bulkgene exited {child.returncode}"
        summary = json.loads((out / "summary.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(budget, ignore_errors=True)
    arrivals = emulator.arrivals()
    return {"peak_rss_mib": child.peak_rss_mib, "genes": float(summary["found"]),
            "genes_per_s": summary["found"] / child.wall_s, "wall_s": child.wall_s,
            "rate_ratio": _achieved_rate(arrivals) / 10.0,
            "throttled": float(sum(1 for a in arrivals if a["status"] == 429))}


def full_rate_case(args: argparse.Namespace, work: Path) -> FullRateResult | None:
    """Peak RSS of default keyed runs fetching COMPLETE reports at 10 requests/s."""
    if not args.full_rate:
        return None
    ids_file = work / "ids-full-rate.txt"
    write_mixed_ids(ids_file, args.full_rate)
    runs: dict[str, list[float]] = {}
    traced: dict[str, Any] | None = None
    with Emulator("--latency", "0.3", "--latency-per-gene", "0.0008", "--jitter", "0.1",
                  "--keyed-rate", "10", "--seed", "1") as emulator:
        # untimed: a cold emulator synthesises every gene afresh and can fall behind
        _full_rate_run(emulator, ids_file, work, args)
        for repeat in range(args.repeats):
            for name, value in _full_rate_run(emulator, ids_file, work, args).items():
                runs.setdefault(name, []).append(value)
            print(f"full rate {args.full_rate} IDs, repeat {repeat + 1}: " + ", ".join(
                f"{k}={v[-1]:.2f}" for k, v in runs.items()), flush=True)
        if args.diagnose:
            trace_file = work / "trace.json"
            _full_rate_run(emulator, ids_file, work, args, traced=trace_file)
            traced = json.loads(trace_file.read_text())
    ids_file.unlink()
    return {"ids": args.full_rate, "genes": int(runs["genes"][0]),
            "peak_rss_mib": median_spread(runs["peak_rss_mib"]),
            "genes_per_s": median_spread(runs["genes_per_s"]),
            "rate_ratio": median_spread(runs["rate_ratio"]),
            "throttled": median_spread(runs["throttled"]),
            "wall_s": median_spread(runs["wall_s"]), "traced": traced}


def child(argv: list[str]) -> None:
    """Run ``bulkgene argv`` in this process, with the knobs the environment asks for.

    BENCH_FSYNC_DELAY_S: every fsync takes this much longer, as on a busy network
    filesystem; BENCH_TRACE_FILE: trace allocations and save the sites holding the most at
    the traced peak. A sampler
    thread snapshots whenever the traced total passes its highest so far; tracing slows the
    run, which is why its figures stay out of the medians.
    """
    import threading
    import tracemalloc

    from bulkgene.cli.main import main as bulkgene_main

    if delay := os.environ.get("BENCH_FSYNC_DELAY_S"):
        real_fsync = os.fsync

        def slow_fsync(fd: Any) -> None:
            time.sleep(float(delay))
            real_fsync(fd)

        os.fsync = slow_fsync
    trace_file = Path(os.environ["BENCH_TRACE_FILE"]) if os.environ.get("BENCH_TRACE_FILE") \
        else None
    best: dict[str, Any] = {"bytes": 0, "snapshot": None}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            current, _ = tracemalloc.get_traced_memory()
            if current > best["bytes"] * 1.02:
                best["bytes"], best["snapshot"] = current, tracemalloc.take_snapshot()

    sampler = threading.Thread(target=sample, daemon=True)
    if trace_file is not None:
        tracemalloc.start(4)
        sampler.start()
    code = 0
    try:
        bulkgene_main(argv, prog_name="bulkgene", standalone_mode=False)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        done.set()
        if trace_file is not None:
            sampler.join()
            _, peak = tracemalloc.get_traced_memory()
            snapshot = best["snapshot"]
            top = [] if snapshot is None else [
                {"site": " <- ".join(f"{Path(frame.filename).name}:{frame.lineno}"
                                     for frame in reversed(stat.traceback)),  # newest first
                 "mib": stat.size / MIB, "blocks": stat.count}
                for stat in snapshot.statistics("traceback")[:15]]
            trace_file.write_text(json.dumps({"traced_peak_mib": peak / MIB,
                                              "snapshot_mib": best["bytes"] / MIB,
                                              "top": top}, indent=2))
    sys.exit(code)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000],
                        help="ID counts spread over 1..2**28")
    parser.add_argument("--strays", type=int, nargs="*", default=[2_000_000],
                        help="ID counts with 0.5 %% strays up to 2**31-1")
    parser.add_argument("--full-rate", type=int, default=50_000,
                        help="IDs of 5-9 digits for the full-rate COMPLETE case (0: skip)")
    parser.add_argument("--fetch-arg", action="append", default=[],
                        help="extra `bulkgene fetch` argument for the full-rate runs "
                             "(repeatable; e.g. --fetch-arg=--endpoint --fetch-arg=dataset-report)")
    parser.add_argument("--budget-mib", type=float, default=None,
                        help="the full-rate runs' --memory-budget-mb (default: bulkgene's, 80)")
    parser.add_argument("--fsync-delay-s", type=float, default=0.0,
                        help="full-rate runs: each fsync this much slower (a busy NFS)")
    parser.add_argument("--diagnose", action="store_true",
                        help="one more full-rate run under tracemalloc: where the memory goes")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--name", default="memory", help="results file: bench/results/NAME.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        result = id_set_cases(args, work)
        full = full_rate_case(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    spread = [result[f"spread-{s}"]["peak_rss_mib"]["median"] for s in args.sizes]
    growth = max(spread) / min(spread) - 1 if spread else 0.0
    print(f"\nmedian (min-max) of {args.repeats}\n")
    print("| input | IDs | peak RSS MiB | peak RSS MB | plan.bitmap bytes "
          "| re-run with all batches committed, s |")
    print("|---|---|---|---|---|---|")
    for entry in result.values():
        peak, resume = entry["peak_rss_mib"], entry["resume_all_committed_s"]
        print(f"| {entry['kind']}, IDS_ONLY | {entry['ids']:,} | "
              f"{peak['median']:.1f} ({peak['min']:.1f}-{peak['max']:.1f}) | "
              f"{peak['median'] * MIB / 1e6:.1f} | "
              f"{entry['plan_bitmap_bytes']:,} | {resume['median']:.1f} |")
    misses = [f"{entry['kind']} {entry['ids']}" for entry in result.values()
              if entry["peak_rss_mib"]["max"] * MIB >= TARGET_BYTES]
    if full is not None:
        peak = full["peak_rss_mib"]
        print(f"| full rate, COMPLETE, {full['genes']:,} genes | {full['ids']:,} | "
              f"{peak['median']:.1f} ({peak['min']:.1f}-{peak['max']:.1f}) | "
              f"{peak['median'] * MIB / 1e6:.1f} | - | - |")
        rate, speed = full["rate_ratio"], full["genes_per_s"]
        print(f"\nfull rate: requests/s / ceiling {rate['median']:.3f} ({rate['min']:.3f}-"
              f"{rate['max']:.3f}), genes/s {speed['median']:.0f} ({speed['min']:.0f}-"
              f"{speed['max']:.0f}), throttled max {full['throttled']['max']:.0f}")
        if full["traced"] is not None:
            traced = full["traced"]
            print(f"\ntraced run: traced peak {traced['traced_peak_mib']:.1f} MiB; at the "
                  f"snapshot ({traced['snapshot_mib']:.1f} MiB traced) the biggest holders:")
            for site in traced["top"][:10]:
                print(f"  {site['mib']:7.1f} MiB {site['blocks']:8d} blocks  {site['site']}")
        if peak["max"] * MIB >= TARGET_BYTES:
            misses.append("full rate")
    if len(spread) > 1:
        print(f"\npeak RSS growth from smallest to largest spread input: {growth * 100:.1f} %")
    print("\ntarget peak RSS < 150 MB: " + ("met" if not misses else "MISSED: " + ", ".join(misses)))
    saved = save(args.name, {"args": vars(args), "cases": result, "full_rate": full,
                             "growth": growth, "target_missed": misses})
    print(f"result: {saved}")


if __name__ == "__main__":
    main()
