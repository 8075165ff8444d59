"""Export: a 200 000-record run to a 10-field table, bulkgene vs DuckDB vs pandas; time and RSS.

The run is fetched once from the emulator (COMPLETE reports, 4 shards, plain and gzip) and
kept in ``--work`` for later invocations. Each contender runs as a child process (wait4 gives
its peak RSS) on the same files, ``--repeats`` times, alternating, so load drifts hit all:

    bulkgene export DIR --to t.tsv|t.parquet --fields <10 fields>
    DuckDB   COPY (SELECT <10 fields> FROM read_json('DIR/shard-*.ndjson[.gz]')) TO t.parquet|t.tsv
    pandas   read_json(lines=True) of every shard + json_normalize, the 10 columns to Parquet
    bulkgene.open(DIR).to_frame(fields=<10 fields>)

    python -m bench.export                       # 200 000 IDs, 3 repeats, ~10 minutes
    python -m bench.export --ids 5000 --repeats 1 --skip-pandas   # smoke
    python -m bench.export --baseline-tree /path/to/main-worktree --skip-duckdb --skip-pandas

``--baseline-tree`` adds that checkout's ``bulkgene export`` (run from the tree, so that
``-m bulkgene`` is its own) beside this one's, in the same alternation: the ratio says
what a change to the readers costs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import PYTHON, Emulator, bulkgene_env, fmt, median_spread, run_measured, save, write_ids

FIELDS = ("query", "gene-id", "symbol", "description", "tax-id", "tax-name", "gene-type",
          "chromosomes", "synonyms", "transcript-count")
_DUCK_COLUMNS = ("query, gene.gene_id, gene.symbol, gene.description, gene.tax_id, "
                 "gene.taxname, gene.type, gene.chromosomes, gene.synonyms, "
                 "gene.transcript_count")
_PANDAS_COLUMNS = ["query", "gene.gene_id", "gene.symbol", "gene.description", "gene.tax_id",
                   "gene.taxname", "gene.type", "gene.chromosomes", "gene.synonyms",
                   "gene.transcript_count"]


def _child(kind: str, source: str, target: str) -> None:
    """One contender's work, in this (child) process."""
    if kind == "duckdb":
        import duckdb

        glob = f"{source}/shard-*.ndjson{'.gz' if source.endswith('-gz') else ''}"
        options = ("(FORMAT parquet)" if target.endswith(".parquet")
                   else "(FORMAT csv, DELIMITER '\t', HEADER)")
        # the bench's own paths, not input from anyone: no injection to fear here
        duckdb.sql(f"COPY (SELECT {_DUCK_COLUMNS} FROM read_json('{glob}', "  # noqa: S608
                   f"format='newline_delimited')) TO '{target}' {options}")
    elif kind == "pandas":
        import pandas as pd

        shards = sorted(Path(source).glob("shard-*.ndjson*"))
        raw = pd.concat([pd.read_json(shard, lines=True, dtype=False) for shard in shards],
                        ignore_index=True)
        flat = pd.json_normalize(raw.to_dict("records"))
        flat[[c for c in _PANDAS_COLUMNS if c in flat.columns]].to_parquet(target)
    elif kind == "frame":
        import bulkgene

        frame = bulkgene.open(source).to_frame(fields=list(FIELDS))
        print(len(frame))
    else:
        raise SystemExit(f"unknown child {kind!r}")


def _without_pythonpath() -> dict[str, str]:
    """The environment, without a PYTHONPATH that would choose the tree's bulkgene for it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _make_run(work: Path, ids: int) -> dict[str, Path]:
    runs = {"plain": work / f"run-{ids}", "gzip": work / f"run-{ids}-gz"}
    if all((run / "summary.json").exists() for run in runs.values()):
        return runs
    ids_file = write_ids(work / f"ids-{ids}.txt", ids)
    with Emulator("--no-rate-limit", "--seed", "3") as emulator:
        for compress, run in (("none", runs["plain"]), ("gzip", runs["gzip"])):
            shutil.rmtree(run, ignore_errors=True)
            child = run_measured([PYTHON, "-m", "bulkgene", "fetch", str(ids_file), "--out",
                                  str(run), "-q", "--rate", "1000", "--concurrency", "8",
                                  "--shards", "4", "--compress", compress],
                                 env=bulkgene_env(emulator.base_url))
            assert child.returncode == 0, f"the fetch exited {child.returncode}"
    return runs


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=206_000,
                        help="IDs to fetch (206 000 give ~200 000 records)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir())
                        / "bulkgene-bench-export", help="where the run is kept between runs")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--skip-duckdb", action="store_true")
    parser.add_argument("--baseline-tree", type=Path,
                        help="another checkout whose export to measure alongside (e.g. main)")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    trees = {"bulkgene": here}
    if args.baseline_tree is not None:
        trees = {"baseline": args.baseline_tree.resolve(), "bulkgene": here}
    args.work.mkdir(parents=True, exist_ok=True)
    runs = _make_run(args.work, args.ids)
    out = args.work / "tables"
    out.mkdir(exist_ok=True)
    contenders: list[tuple[str, list[str]]] = []
    cwd: dict[str, Path] = {}
    for shape, run in runs.items():
        for table in ("tsv", "parquet"):
            for tree_name, tree in trees.items():
                target = str(out / f"{tree_name}-{shape}.{table}")
                contenders.append((f"{tree_name} {table} {shape}",
                                   [PYTHON, "-m", "bulkgene", "export", str(run), "--to",
                                    target, "--fields", ",".join(FIELDS)]))
                cwd[contenders[-1][0]] = tree
            if not args.skip_duckdb:
                contenders.append((f"duckdb {table} {shape}",
                                   [PYTHON, "-m", "bench.export", "--child", "duckdb", str(run),
                                    str(out / f"duckdb-{shape}.{table}")]))
        if not args.skip_pandas:
            contenders.append((f"pandas parquet {shape}",
                               [PYTHON, "-m", "bench.export", "--child", "pandas", str(run),
                                str(out / f"pandas-{shape}.parquet")]))
    contenders.append(("bulkgene.open().to_frame plain",
                       [PYTHON, "-m", "bench.export", "--child", "frame", str(runs["plain"]),
                        "-"]))
    samples: dict[str, dict[str, list[float]]] = {
        name: {"wall_s": [], "peak_rss_mib": []} for name, _ in contenders}
    for repeat in range(args.repeats):
        with open("/proc/loadavg") as load:
            print(f"repeat {repeat + 1}, load {load.read().split()[:3]}", flush=True)
        for name, command in contenders:
            child = run_measured(command, env=_without_pythonpath(), cwd=cwd.get(name))
            assert child.returncode == 0, f"{name} exited {child.returncode}"
            samples[name]["wall_s"].append(child.wall_s)
            samples[name]["peak_rss_mib"].append(child.peak_rss_mib)
            print(f"  {name}: {child.wall_s:.2f} s, {child.peak_rss_mib:.0f} MiB", flush=True)
    stats = {name: {key: median_spread(values) for key, values in figures.items()}
             for name, figures in samples.items()}
    records = sum(1 for shard in runs["plain"].glob("shard-*.ndjson") for _ in shard.open("rb"))
    print(f"\n{records} records, {sum(f.stat().st_size for f in runs['plain'].iterdir()) >> 20}"
          f" MiB plain, {sum(f.stat().st_size for f in runs['gzip'].iterdir()) >> 20} MiB gzip")
    print(f"\n| table, shards (median, min-max of {args.repeats}) | wall s | peak RSS MiB | "
          "time ÷ DuckDB's |")
    print("|---|---|---|---|")
    for name, _ in contenders:
        parts = name.split()
        duck = (stats.get(f"duckdb {parts[1]} {parts[2]}")
                if parts[0] in ("bulkgene", "pandas", "baseline") else None)
        ratio = (f"{stats[name]['wall_s']['median'] / duck['wall_s']['median']:.2f}"
                 if duck is not None else "")
        print(f"| {name} | {fmt(stats[name]['wall_s'])} | "
              f"{fmt(stats[name]['peak_rss_mib'], 0)} | {ratio} |")
    if args.baseline_tree is not None:
        print("\n| table, shards | this tree's time ÷ the baseline's (medians) |\n|---|---|")
        for shape in runs:
            for table in ("tsv", "parquet"):
                ours = stats[f"bulkgene {table} {shape}"]["wall_s"]["median"]
                theirs = stats[f"baseline {table} {shape}"]["wall_s"]["median"]
                print(f"| {table} {shape} | {ours / theirs:.2f} |")
    result = {"args": {**vars(args), "work": str(args.work),
                       "baseline_tree": str(args.baseline_tree or "")}, "records": records,
              "stats": stats, "samples": samples}
    print(f"\nresult: {save('export', result)}")


if __name__ == "__main__":
    main()
