"""What a failure costs: refused GeneIDs, and hosts that never answer, before and after.

Side by side in one invocation, this tree's bulkgene and, with ``--baseline-tree``, another
checkout's (e.g. a worktree of ``main``), run as ``python -m bulkgene fetch`` from that tree:

1. refused GeneIDs: the emulator as NCBI 18.23 (a request naming a refused GeneID fails
   whole with 404 "Your request is invalid."), latency 0.3 s + 0.8 ms per gene +-10 %, 10
   requests/s per key, IDs of 5-9 digits as real lists mix them (GET: ~2 requests a batch);
   at 0.01 %, 0.1 % and 1 % refused, each against the same list on an emulator that refuses
   none: requests per refused ID (the extra requests over the clean run, per refused ID),
   time / the clean run's, requests/s / the ceiling while it ran (busy), and whether exactly
   the refused IDs ended REJECTED_BY_SERVER;
2. hosts that never answer, 600 000 nine-digit IDs, default options: an unreachable host
   (every connection refused), a black hole (accepts, never answers) and a name that does
   not resolve: seconds to exit, the exit code, and the error lines printed. A run still
   going after ``--give-up-s`` is killed and shown as such (once: not repeated).

    python -m bench.failures --baseline-tree /path/to/main-worktree      # ~1.5 h on 2 cores
    python -m bench.failures --scale 0.05 --repeats 1 --give-up-s 60     # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, Emulator, fmt, median_spread, save, write_mixed_ids
from bulkgene.testing import EmulatorConfig
from bulkgene.testing.blackhole import BlackHoleThread

HERE = Path(__file__).resolve().parent.parent
KEY = "bench-failures-key"
CEILING = 10.0
SEED = 7
# refused share -> IDs in the list (fewer where each refused ID costs more, so that every
# case has tens of refused IDs and takes minutes, not hours, before the fix)
REFUSED = {0.0001: 100_000, 0.001: 30_000, 0.01: 5_000}
DEAD_HOSTS = {"unreachable": "http://127.0.0.1:9/datasets/v2",
              "DNS failing": "http://no-such-host.invalid/datasets/v2"}


def fetch(tree: Path, ids: Path, base_url: str, work: Path, give_up_s: float,
          *options: str, key: bool = True) -> dict[str, Any]:
    """One ``bulkgene fetch`` of ``tree``: wall seconds, exit code, error lines, summary."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    env = {k: v for k, v in os.environ.items()
           if k not in ("NCBI_API_KEY", "BULKGENE_BASE_URL", "PYTHONPATH")}
    env.update(BULKGENE_BASE_URL=base_url, BULKGENE_BUDGET_DIR=str(work / "budget"))
    if key:
        env["NCBI_API_KEY"] = KEY
    stderr_path = out.with_suffix(".stderr")
    started = time.monotonic()
    with open(stderr_path, "wb") as stderr:
        # run from the tree, so that `-m bulkgene` is that tree's, whatever is installed
        process = subprocess.Popen([PYTHON, "-m", "bulkgene", "fetch", str(ids), "--out",
                                    str(out), "--no-progress", *options], cwd=tree, env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            code: int | None = process.wait(timeout=give_up_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            code = None
    wall_s = time.monotonic() - started
    text = stderr_path.read_text(errors="replace")
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    missing = out / "missing.tsv"
    rows = [line.split("\t") for line in missing.read_text().splitlines()[1:]
            ] if missing.exists() else []
    refused = {int(row[0]) for row in rows if len(row) > 1 and row[1] == "REJECTED_BY_SERVER"}
    shutil.rmtree(out, ignore_errors=True)
    stderr_path.unlink(missing_ok=True)
    return {"wall_s": wall_s, "exit": code, "summary": summary, "refused": refused,
            "errors": sum(1 for line in text.splitlines()
                          if line.startswith(("bulkgene: error:", "bulkgene: stopping:"))),
            "traceback": "Traceback" in text}


def busy(arrivals: list[dict[str, Any]]) -> float:
    """Requests/s at the server over the run, as a share of the ceiling."""
    times = sorted(a["t"] for a in arrivals)
    return (len(times) - 1) / (times[-1] - times[0]) / CEILING if len(times) > 2 else 0.0


def emulator(per_mille: float) -> Emulator:
    return Emulator("--latency", "0.3", "--latency-per-gene", "0.0008", "--jitter", "0.1",
                    "--keyed-rate", f"{CEILING:g}", "--seed", str(SEED),
                    "--invalid-id-per-mille", f"{per_mille:g}")


def refused_case(trees: dict[str, Path], share: float, ids_count: int, repeats: int,
                 work: Path, give_up_s: float) -> dict[str, dict[str, list[float]]]:
    ids_path = work / f"ids-{share:g}.txt"
    ids = write_mixed_ids(ids_path, ids_count, seed=SEED)
    truth = EmulatorConfig(seed=SEED, invalid_id_per_mille=1000 * share)
    bad = {gene_id for gene_id in ids if truth.is_invalid_id(gene_id)}
    runs: dict[str, dict[str, list[float]]] = {}
    killed: set[str] = set()
    with emulator(0) as clean, emulator(1000 * share) as refusing:
        for repeat in range(repeats):
            for name, tree in trees.items():
                if name in killed:
                    continue  # another try would only be killed again
                clean.reset()
                time.sleep(1.1)  # let the key's window empty
                base = fetch(tree, ids_path, clean.base_url, work, give_up_s, "--rate", "10")
                base_requests = len(clean.arrivals())
                refusing.reset()
                time.sleep(1.1)
                run = fetch(tree, ids_path, refusing.base_url, work, give_up_s, "--rate", "10")
                arrivals = refusing.arrivals()
                values = {
                    "refused_ids": float(len(bad)),
                    "requests_per_refused": (len(arrivals) - base_requests) / max(1, len(bad)),
                    "time_ratio": run["wall_s"] / base["wall_s"],
                    "s_per_refused": (run["wall_s"] - base["wall_s"]) / max(1, len(bad)),
                    "wall_s": run["wall_s"], "clean_wall_s": base["wall_s"],
                    "busy": busy(arrivals),
                    "exact": float(run["refused"] == bad and run["exit"] == 0),
                    "killed": float(run["exit"] is None)}
                for metric, value in values.items():
                    runs.setdefault(name, {}).setdefault(metric, []).append(value)
                print(f"refused {100 * share:g} %, {name}, repeat {repeat + 1}: " + ", ".join(
                    f"{k}={v:.3f}" for k, v in values.items()), flush=True)
                if run["exit"] is None:
                    killed.add(name)
    return runs


def dead_host_case(trees: dict[str, Path], host: str, ids_path: Path, repeats: int,
                   work: Path, give_up_s: float) -> dict[str, dict[str, list[float]]]:
    runs: dict[str, dict[str, list[float]]] = {}
    for name, tree in trees.items():
        for repeat in range(repeats):
            if host == "black hole":
                with BlackHoleThread() as hole:
                    run = fetch(tree, ids_path, hole.base_url, work, give_up_s, key=False)
            else:
                run = fetch(tree, ids_path, DEAD_HOSTS[host], work, give_up_s, key=False)
            values = {"wall_s": run["wall_s"], "exit": float(-1 if run["exit"] is None
                                                             else run["exit"]),
                      "error_lines": float(run["errors"]),
                      "traceback": float(run["traceback"])}
            for metric, value in values.items():
                runs.setdefault(name, {}).setdefault(metric, []).append(value)
            print(f"{host}, {name}, repeat {repeat + 1}: " + ", ".join(
                f"{k}={v:.1f}" for k, v in values.items()), flush=True)
            if run["exit"] is None:
                break  # killed: another try would only be killed again
    return runs


def _cell(stats: dict[str, dict[str, float]] | None, metric: str, digits: int) -> str:
    return "-" if stats is None else fmt(stats[metric], digits)


def _refused_cell(stats: dict[str, dict[str, float]] | None, metric: str, digits: int) -> str:
    """A figure of the refused table; a run killed at --give-up-s has none (only a bound)."""
    if stats is not None and stats["killed"]["max"]:
        return f"killed at {stats['wall_s']['max']:.0f} s"
    return _cell(stats, metric, digits)


def _exit_cell(stats: dict[str, dict[str, float]] | None) -> str:
    if stats is None:
        return "-"
    if stats["exit"]["min"] < 0:
        return f"killed at {stats['wall_s']['max']:.0f} s"
    return (f"{fmt(stats['wall_s'], 1)} s, exit {stats['exit']['median']:.0f}, "
            f"{stats['error_lines']['median']:.0f} error line(s)"
            + (", traceback" if stats["traceback"]["max"] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tree", type=Path,
                        help="another checkout to measure side by side (e.g. a worktree of main)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="of every list's length")
    parser.add_argument("--give-up-s", type=float, default=600.0,
                        help="kill a run still going after this long")
    parser.add_argument("--skip", nargs="*", default=[], choices=["refused", "dead-hosts"])
    parser.add_argument("--refused-shares", type=float, nargs="+", default=list(REFUSED),
                        choices=list(REFUSED), help="which refused shares to run")
    args = parser.parse_args()
    trees = {"after": HERE}
    if args.baseline_tree is not None:
        trees = {"before": args.baseline_tree.resolve(), "after": HERE}
    started = time.monotonic()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-failures-"))
    results: dict[str, Any] = {"refused": {}, "dead_hosts": {}}
    try:
        if "refused" not in args.skip:
            for share in args.refused_shares:
                count = REFUSED[share]
                results["refused"][f"{share:g}"] = refused_case(
                    trees, share, max(1000, round(count * args.scale)), args.repeats, work,
                    args.give_up_s)
        if "dead-hosts" not in args.skip:
            ids_path = work / "dead-host-ids.txt"
            ids_path.write_text("".join(f"{100_000_001 + i}\n"
                                        for i in range(round(600_000 * args.scale))))
            for host in ("unreachable", "black hole", "DNS failing"):
                results["dead_hosts"][host] = dead_host_case(trees, host, ids_path,
                                                             args.repeats, work, args.give_up_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats = {kind: {case: {tree: {m: median_spread(v) for m, v in metrics.items()}
                           for tree, metrics in by_tree.items()}
                    for case, by_tree in cases.items()}
             for kind, cases in results.items()}
    elapsed_s = time.monotonic() - started
    load_after = os.getloadavg()
    n = args.repeats
    if stats["refused"]:
        print(f"\nRefused GeneIDs (GET, IDs of 5-9 digits, 10 requests/s); median (min-max) "
              f"of {n}:\n")
        print("| refused | IDs (refused) | requests per refused ID, before / after | time / "
              "without them, before / after | seconds per refused ID, before / after "
              "| busy / ceiling, before / after | exact, after |")
        print("|---|---|---|---|---|---|---|")
        for share, by_tree in stats["refused"].items():
            after, before = by_tree["after"], by_tree.get("before")
            ids_count = max(1000, round(REFUSED[float(share)] * args.scale))
            print(f"| {100 * float(share):g} % | {ids_count} "
                  f"({after['refused_ids']['median']:.0f}) "
                  f"| {_refused_cell(before, 'requests_per_refused', 1)} / "
                  f"{_refused_cell(after, 'requests_per_refused', 1)} "
                  f"| {_refused_cell(before, 'time_ratio', 2)} / "
                  f"{_refused_cell(after, 'time_ratio', 2)} "
                  f"| {_refused_cell(before, 's_per_refused', 2)} / "
                  f"{_refused_cell(after, 's_per_refused', 2)} "
                  f"| {_refused_cell(before, 'busy', 3)} / {_cell(after, 'busy', 3)} "
                  f"| {after['exact']['min'] == 1} |")
    if stats["dead_hosts"]:
        print(f"\nHosts that never answer, {round(600_000 * args.scale)} nine-digit IDs, "
              f"default options; median (min-max) of up to {n}:\n")
        print("| host | before | after |")
        print("|---|---|---|")
        for host, by_tree in stats["dead_hosts"].items():
            print(f"| {host} | {_exit_cell(by_tree.get('before'))} "
                  f"| {_exit_cell(by_tree['after'])} |")
    print(f"\nload average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
          f"whole bench {elapsed_s:.0f} s")
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "stats": stats,
              "elapsed_s": elapsed_s, "load_average": [load_before, load_after]}
    print(f"result: {save('failures', result)}")


if __name__ == "__main__":
    main()
