"""Explaining missing GeneIDs: ``bulkgene explain`` on 100 000 missing IDs against a 5-million-row history.

A synthetic gene_history (gzip, NCBI's five columns) of ``--rows`` rows over GeneIDs spread
like real ones: 80 % discontinued without a successor, 20 % replaced, and 5 % of the
replaced ones replaced by a GeneID that was itself discontinued later (chains of two and
three steps). A run directory is fetched from the emulator whose ``--missing`` missing
GeneIDs are 40 % discontinued in that history, 30 % replaced (a tenth of them through a
chain), 30 % not in it; then ``bulkgene explain DIR --history FILE`` is measured as a child
(wall time, peak RSS from wait4), ``--repeats`` times (each explains every row afresh).

Baselines in the same invocation, on the same file: ``gzip -dc FILE > /dev/null`` (reading
the file at all: the floor), and the join labs write by hand, pandas reading the whole
history into a frame and merging the missing IDs on ``Discontinued_GeneID`` (one step, no
chains). Target: explain's peak RSS under 150 MB (150 000 000 bytes).

    python -m bench.history --repeats 3                      # 5 M rows, 100 000 missing
    python -m bench.history --rows 20000 --missing 2000 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
import tempfile
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
    write_id_lines,
)

TARGET_BYTES = 150_000_000
MIB = 1 << 20
# the emulator knows no GeneID above 2e8: the missing IDs come from above it, the rest of the
# history from anywhere below 2**28
UNKNOWN_FROM = 200_000_001
TOP = 2**28
_TAXA = (9606, 10090, 10116, 7955, 7227, 562, 1280, 511145)

PANDAS_JOIN = """
import sys, pandas as pd
history = pd.read_csv(sys.argv[1], sep="\\t", compression="gzip",
                      names=["tax_id", "GeneID", "Discontinued_GeneID", "Discontinued_Symbol",
                             "Discontinue_Date"], comment="#", dtype=str)
missing = pd.read_csv(sys.argv[2], sep="\\t", dtype=str)
joined = missing.merge(history, how="left", left_on="gene_id", right_on="Discontinued_GeneID")
print(len(joined))
"""


def write_history(path: Path, rows: int, missing: list[int], seed: int) -> None:
    """The synthetic file: ``rows`` rows over GeneIDs spread below 2**28, ``missing`` among
    them as 40 % discontinued, 30 % replaced (a tenth of those through a chain of two or
    three steps) and 30 % left out."""
    rng = random.Random(seed)
    wanted = set(missing)
    lines: list[bytes] = []
    count = 0

    def row(disc: int, successor: int | None) -> None:
        nonlocal count
        date = rng.randrange(2005, 2026) * 10000 + rng.randrange(1, 13) * 100 + rng.randrange(1, 29)
        lines.append(b"%d\t%s\t%d\tG%X\t%d\n" % (rng.choice(_TAXA), b"-" if successor is None
                                                 else b"%d" % successor, disc, disc, date))
        count += 1

    middles = iter(range(TOP - 1, TOP - 1 - rows, -1))  # a band of their own for chain middles
    for index, gene_id in enumerate(missing):
        share = index % 10
        if share < 4:
            row(gene_id, None)
        elif share < 7:
            steps = (2 if index % 2 else 3) if share == 4 and index % 3 == 0 else 1
            current = gene_id
            for _ in range(steps - 1):  # gene -> middle (-> middle) -> live
                middle = next(middles)
                row(current, middle)
                current = middle
            row(current, rng.randrange(1, UNKNOWN_FROM))
    background = rows - count
    stride = (TOP - 2 * rows - 1) // max(1, background)
    with gzip.open(path, "wb", compresslevel=6) as handle:
        handle.write(b"#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\t"
                     b"Discontinue_Date\n")
        for index in range(background):  # one ID in each stride: unique, spread
            gene_id = 1 + index * stride + rng.randrange(stride)
            if gene_id in wanted:
                continue
            row(gene_id, None if rng.random() < 0.8 else rng.randrange(1, UNKNOWN_FROM))
            if len(lines) >= 65536:
                handle.write(b"".join(lines))
                lines.clear()
        handle.write(b"".join(lines))


def make_run(work: Path, missing: list[int], found: int) -> Path:
    """A fetched directory whose missing.tsv holds exactly ``missing``."""
    ids = write_id_lines(work / "ids.txt", [*range(1, found + 1), *missing])
    out = work / "genes"
    with Emulator("--no-rate-limit") as emulator:
        child = run_measured([PYTHON, "-m", "bulkgene", "fetch", str(ids), "--out", str(out),
                              "-q", "--returned-content", "IDS_ONLY", "--rate", "1000"],
                             env=bulkgene_env(emulator.base_url, work / "budget"))
    assert child.returncode == 0, f"the fetch exited {child.returncode}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--missing", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    try:
        rng = random.Random(1)
        missing = rng.sample(range(UNKNOWN_FROM, TOP - 2 * args.rows), args.missing)
        history = work / "gene_history.gz"
        write_history(history, args.rows, missing, seed=2)
        out = make_run(work, missing, found=args.missing // 20)
        runs: dict[str, list[float]] = {"explain_s": [], "explain_rss": [], "gunzip_s": [],
                                        "pandas_s": [], "pandas_rss": []}
        for repeat in range(args.repeats):
            explained = run_measured([PYTHON, "-m", "bulkgene", "explain", str(out), "--history",
                                      str(history), "-q"], env=bulkgene_env("http://127.0.0.1:9"))
            assert explained.returncode == 0, f"explain exited {explained.returncode}"
            runs["explain_s"].append(explained.wall_s)
            runs["explain_rss"].append(explained.peak_rss_mib)
            gunzip = run_measured(["sh", "-c", f"gzip -dc '{history}' > /dev/null"])
            runs["gunzip_s"].append(gunzip.wall_s)
            if not args.no_pandas:
                # the join a lab writes: the explained missing.tsv's first columns are the same
                joined = run_measured([PYTHON, "-c", PANDAS_JOIN, str(history),
                                       str(out / "missing.tsv")])
                assert joined.returncode == 0, "the pandas join failed"
                runs["pandas_s"].append(joined.wall_s)
                runs["pandas_rss"].append(joined.peak_rss_mib)
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k}={v[-1]:.2f}" for k, v in runs.items()
                                                       if v), flush=True)
        rows = (out / "missing.tsv").read_text().splitlines()[1:]
        classes: dict[str, int] = {}
        for line in rows:
            cls = line.split("\t")[2]
            classes[cls] = classes.get(cls, 0) + 1
        result: dict[str, Any] = {
            "rows": args.rows, "missing": args.missing, "classes": classes,
            "history_bytes": history.stat().st_size,
            **{name: median_spread(values) for name, values in runs.items() if values},
            "explain_over_gunzip": median_spread([e / g for e, g in zip(
                runs["explain_s"], runs["gunzip_s"], strict=True)]),
            "under_target": max(runs["explain_rss"]) * MIB < TARGET_BYTES,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save("history", result)
    print(f"\n{args.missing} missing GeneIDs ({classes}) against {args.rows} history rows "
          f"({result['history_bytes'] / 1e6:.0f} MB gzip), median (min-max) of {args.repeats}:\n")
    print("| run | wall s | peak RSS MiB |")
    print("|---|---|---|")
    print(f"| `bulkgene explain` | {fmt(result['explain_s'], 1)} | "
          f"{fmt(result['explain_rss'], 1)} |")
    print(f"| `gzip -dc` (reading the file at all) | {fmt(result['gunzip_s'], 1)} | - |")
    if "pandas_s" in result:
        print(f"| pandas: whole file into a frame, merge (one step, no chains) | "
              f"{fmt(result['pandas_s'], 1)} | {fmt(result['pandas_rss'], 1)} |")
    print(f"\nexplain ÷ gzip -dc: {fmt(result['explain_over_gunzip'], 2)}; peak RSS under "
          f"150 MB: {result['under_target']}")


if __name__ == "__main__":
    main()
