"""Memory and scale: peak RSS for 1 M and 10 M IDs, stray large IDs, and resume start-up.

Two kinds of input. ``--sizes``: IDs spread over 1..2**28 like real GeneIDs (so the ID set
touches every range a whole-NCBI run would). ``--strays``: the same, but every 200th ID
(0.5 %) is a stray large number anywhere up to 2**31-1, as a mixed column of tax IDs or
PubMed IDs gives; a set that allocates per range of IDs, not per ID, pays for each stray.
IDS_ONLY keeps the emulator quick. Targets: peak RSS under 150 MB in every case and flat
within 10 % between spread sizes; ``plan.bitmap`` as small as the IDs; a re-run over
~10 000 committed batches starts in seconds.

    python bench/memory.py --repeats 3              # 1 M, 10 M and 2 M with strays, ~15 minutes
    python bench/memory.py --sizes 2000 20000 --strays 2000   # smoke
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import TypedDict

from bench.common import PYTHON, Emulator, bulkgene_env, median_spread, run_measured, save, write_ids

MAX_GENE_ID = 2**31 - 1


class CaseResult(TypedDict):
    kind: str
    ids: int
    peak_rss_mib: dict[str, float]
    resume_all_committed_s: dict[str, float]
    plan_bitmap_bytes: int
    batches: int

STRAY_EVERY = 200  # 0.5 %


def write_ids_with_strays(path: Path, count: int) -> Path:
    """``count`` IDs spread over 1..2**28, every 200th replaced by a stray up to 2**31-1."""
    with open(path, "w") as handle:
        chunk = []
        for i in range(1, count + 1):
            if i % STRAY_EVERY == 0:
                gene_id = (i * 0x9E3779B97F4A7C15 >> 7) % MAX_GENE_ID + 1
            else:
                gene_id = (i * 2654435761) % (2**28 - 1) + 1
            chunk.append(f"{gene_id}\n")
            if len(chunk) == 65536:
                handle.write("".join(chunk))
                chunk.clear()
        handle.write("".join(chunk))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000],
                        help="ID counts spread over 1..2**28")
    parser.add_argument("--strays", type=int, nargs="*", default=[2_000_000],
                        help="ID counts with 0.5 %% strays up to 2**31-1")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    cases = [("spread", size) for size in args.sizes] + [("strays", size) for size in args.strays]
    result: dict[str, CaseResult] = {}
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
    shutil.rmtree(work, ignore_errors=True)
    spread = [result[f"spread-{s}"]["peak_rss_mib"]["median"] for s in args.sizes]
    growth = max(spread) / min(spread) - 1 if spread else 0.0
    print()
    print("| input | IDs | peak RSS MiB, median (min-max) | plan.bitmap bytes "
          "| re-run with all batches committed, s |")
    print("|---|---|---|---|---|")
    for entry in result.values():
        peak, resume = entry["peak_rss_mib"], entry["resume_all_committed_s"]
        print(f"| {entry['kind']} | {entry['ids']:,} | "
              f"{peak['median']:.1f} ({peak['min']:.1f}-{peak['max']:.1f}) | "
              f"{entry['plan_bitmap_bytes']:,} | {resume['median']:.1f} |")
    if len(spread) > 1:
        print(f"\npeak RSS growth from smallest to largest spread input: {growth * 100:.1f} %")
    print(f"result: {save('memory', {'args': vars(args), 'cases': result, 'growth': growth})}")


if __name__ == "__main__":
    main()
