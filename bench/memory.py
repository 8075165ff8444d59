"""Memory and scale: peak RSS for 1 M and 10 M IDs, and resume start-up over committed batches.

IDs are spread over 1..2**28 like real GeneIDs (so the bitmaps touch every range they would
in a whole-NCBI run); IDS_ONLY keeps the emulator quick. Targets: peak RSS flat within 10 %
between sizes and under 150 MB; a re-run over ~10 000 committed batches starts in seconds.

    python bench/memory.py                          # 1 M and 10 M IDs, ~5 minutes
    python bench/memory.py --sizes 2000 20000       # smoke
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import TypedDict

from bench.common import PYTHON, Emulator, bulkgene_env, median_spread, run_measured, save, write_ids


class SizeResult(TypedDict):
    peak_rss_mib: dict[str, float]
    resume_all_committed_s: dict[str, float]
    batches: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    result: dict[str, SizeResult] = {}
    with Emulator("--no-rate-limit", "--seed", "3") as emulator:
        for size in args.sizes:
            ids_file = write_ids(work / f"ids-{size}.txt", size, spread=True)
            rss: list[float] = []
            resume_s: list[float] = []
            for _ in range(args.repeats):
                out = work / f"out-{size}"
                command = [PYTHON, "-m", "bulkgene", "fetch", str(ids_file), "--out", str(out),
                           "-q", "--returned-content", "IDS_ONLY", "--rate", "1000",
                           "--concurrency", "8"]
                env = bulkgene_env(emulator.base_url)
                child = run_measured(command, env=env)
                assert child.returncode == 0, f"bulkgene exited {child.returncode}"
                rss.append(child.peak_rss_mib)
                again = run_measured(command, env=env)  # everything committed: pure start-up
                assert again.returncode == 0
                resume_s.append(again.wall_s)
                shutil.rmtree(out)
            result[str(size)] = {"peak_rss_mib": median_spread(rss),
                                 "resume_all_committed_s": median_spread(resume_s),
                                 "batches": -(-size // 1000)}
            print(f"{size} IDs: peak RSS {rss} MiB, re-run over {-(-size // 1000)} committed "
                  f"batches {resume_s} s", flush=True)
            ids_file.unlink()
    shutil.rmtree(work, ignore_errors=True)
    sizes = [str(s) for s in args.sizes]
    peaks = [result[s]["peak_rss_mib"]["median"] for s in sizes]
    growth = max(peaks) / min(peaks) - 1
    print()
    print("| IDs | peak RSS MiB | re-run with all batches committed, s |")
    print("|---|---|---|")
    for s in sizes:
        entry = result[s]
        print(f"| {int(s):,} | {entry['peak_rss_mib']['median']:.1f} | "
              f"{entry['resume_all_committed_s']['median']:.1f} |")
    print(f"\npeak RSS growth from smallest to largest: {growth * 100:.1f} %")
    print(f"result: {save('memory', {'args': vars(args), 'sizes': result, 'growth': growth})}")


if __name__ == "__main__":
    main()
