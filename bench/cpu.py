"""CPU overhead: bulkgene's CPU seconds per million COMPLETE reports vs a minimal loop.

Both run as child processes against one emulator without latency or rate limit; CPU time
(user + system) comes from wait4(), so the emulator's own work is not counted. Target:
bulkgene <= 1.5x the minimal aiohttp + orjson fetch-and-append loop (bench/minimal_client.py).

    python bench/cpu.py                   # 100 000 IDs x 3 repeats, ~2 minutes
    python bench/cpu.py --ids 3000 --repeats 1    # smoke
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.common import PYTHON, Emulator, bulkgene_env, fmt, median_spread, run_measured, save, write_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    ids_file = write_ids(work / "ids.txt", args.ids)
    runs: dict[str, list[float]] = {"bulkgene_cpu_s_per_million": [],
                                    "minimal_cpu_s_per_million": [], "ratio": []}
    with Emulator("--no-rate-limit", "--seed", "2") as emulator:
        for repeat in range(args.repeats):
            out = work / f"out-{repeat}"
            child = run_measured(
                [PYTHON, "-m", "bulkgene", "fetch", str(ids_file), "--out", str(out), "-q",
                 "--rate", "1000", "--concurrency", str(args.concurrency)],
                env=bulkgene_env(emulator.base_url))
            assert child.returncode == 0, f"bulkgene exited {child.returncode}"
            records = sum(1 for shard in out.glob("shard-*.ndjson") for _ in shard.open("rb"))
            shutil.rmtree(out)
            minimal_out = work / f"minimal-{repeat}.ndjson"
            baseline = run_measured([PYTHON, "-m", "bench.minimal_client", emulator.base_url,
                                     str(ids_file), str(minimal_out), str(args.concurrency)])
            assert baseline.returncode == 0
            minimal_records = sum(1 for _ in minimal_out.open("rb"))
            minimal_out.unlink()
            ours = child.cpu_s / records * 1e6
            theirs = baseline.cpu_s / minimal_records * 1e6
            runs["bulkgene_cpu_s_per_million"].append(ours)
            runs["minimal_cpu_s_per_million"].append(theirs)
            runs["ratio"].append(ours / theirs)
            print(f"repeat {repeat + 1}: bulkgene {ours:.1f} s/M ({records} records), "
                  f"minimal {theirs:.1f} s/M ({minimal_records}), ratio {ours / theirs:.2f}",
                  flush=True)
    shutil.rmtree(work, ignore_errors=True)
    stats = {name: median_spread(values) for name, values in runs.items()}
    print()
    print(f"| figure (median, min-max of {args.repeats}) | value |")
    print("|---|---|")
    print(f"| bulkgene CPU s per million reports | {fmt(stats['bulkgene_cpu_s_per_million'], 1)} |")
    print(f"| minimal loop CPU s per million reports | {fmt(stats['minimal_cpu_s_per_million'], 1)} |")
    print(f"| ratio bulkgene / minimal | {fmt(stats['ratio'], 2)} |")
    print(f"\nresult: {save('cpu', {'args': vars(args), 'stats': stats, 'runs': runs})}")


if __name__ == "__main__":
    main()
