"""``bulkgene demo``: the whole pipeline against the local emulator, offline, in one command."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import tempfile
from pathlib import Path

import orjson

from bulkgene.cli.progress import ProgressReporter
from bulkgene.config import DownloadConfig, NetworkSpec, OutputSpec
from bulkgene.history.explain import explain
from bulkgene.history.source import HistorySource
from bulkgene.model import Summary
from bulkgene.run.download import download
from bulkgene.testing import EmulatorConfig, EmulatorThread

SAMPLES = Path(__file__).resolve().parents[2] / "sample_inputs"
DEMO_INPUTS = ("human_genes.txt", "ecoli_k12_genes.txt", "messy_ids.txt")
# when installed without the repository's sample_inputs: the three real records and some more
FALLBACK_IDS = "7157\n672\n3105\n59067\n1956\n3845\n" + "".join(f"{i}\n" for i in range(1, 201))


def demo_inputs(out_dir: Path) -> tuple[str, ...]:
    """The repository's sample_inputs, or a small list written into ``out_dir``."""
    found = tuple(str(SAMPLES / name) for name in DEMO_INPUTS if (SAMPLES / name).exists())
    if found:
        return found
    fallback = out_dir.parent / f"{out_dir.name}-ids.txt"
    fallback.write_text(FALLBACK_IDS)
    return (str(fallback),)


def run_demo(out_dir: Path, progress: ProgressReporter) -> tuple[Summary, str | None]:
    """Serve the emulator on 127.0.0.1 with a realistic latency, fetch the sample lists and
    explain their missing GeneIDs from the emulator's gene_history; the summary and what
    explaining found (None if the run did not complete)."""
    emulator_config = EmulatorConfig(rate_limit=True, latency_s=0.15, latency_per_gene_s=0.0005,
                                     latency_jitter=0.2)
    with EmulatorThread(emulator_config) as emulator:
        config = DownloadConfig(inputs=demo_inputs(out_dir), out_dir=out_dir,
                                network=NetworkSpec(base_url=emulator.base_url),
                                output=OutputSpec(batch_size=50), restart=True,
                                progress_interval_s=progress.tick_s)
        try:
            summary = asyncio.run(download(config, handle_signals=True,
                                           on_progress=progress.update))
        finally:
            progress.close()
        if not summary.complete:
            return summary, None
        with tempfile.TemporaryDirectory(prefix="bulkgene-demo-cache-") as cache:
            source = HistorySource(emulator.history_url, cache_dir=Path(cache))
            report = asyncio.run(explain(out_dir, source))
    missing = report.missing
    summary = dataclasses.replace(summary, missing_discontinued=missing["DISCONTINUED"],
                                  missing_replaced=missing["REPLACED"],
                                  missing_not_in_history=missing["NOT_IN_HISTORY"],
                                  missing_refused=missing["REFUSED"])
    return summary, report.line()


SYNTHETIC_NOTE = ("Note: the demo's genes come from bulkgene's local emulator, not from NCBI: "
                  "their symbols, descriptions, missing and replaced IDs are synthetic.")


def preview(out_dir: Path) -> str:
    """A few genes and missing IDs of a demo run, for when its directory is not kept."""
    lines = ["A few (synthetic) records:"]
    shard = out_dir / "shard-0000.ndjson"
    with contextlib.suppress(OSError), open(shard, "rb") as handle:
        for line in itertools.islice(handle, 3):
            gene = orjson.loads(line).get("gene", {})
            lines.append(f"  {gene.get('gene_id')}\t{gene.get('symbol')}\t"
                         f"{gene.get('description')}")
    with contextlib.suppress(OSError):
        rows = (out_dir / "missing.tsv").read_text().splitlines()[1:4]
        lines += ["A few missing IDs (gene_id, reason, and what NCBI's gene history says: "
                  "history, current_gene_id, discontinued_on, symbol, tax_id):",
                  *(f"  {row}" for row in rows)]
    return "\n".join(lines)


def how_to_look(out_dir: Path) -> str:
    """Commands to read the output, printed after the demo: a table first, then the raw
    reports (the globs match an array's task-* shards too)."""
    shards = f"{out_dir}/**/shard-*.ndjson"
    sql = f"select gene.symbol, gene.tax_id, gene.type from read_json('{shards}') limit 5"  # noqa: S608 - printed for the user, never run
    fields = "['gene-id', 'symbol', 'tax-name']"
    return "\n".join([
        "Look at the output:",
        f"  bulkgene export {out_dir} --to genes.tsv   # a row per gene, NCBI's field names "
        "(--list-fields)",
        f'  python -c "import bulkgene; print(bulkgene.open(\'{out_dir}\').to_frame(fields={fields}))"',
        f"  column -t -s $'\\t' {out_dir}/missing.tsv   # the GeneIDs NCBI has no record for, "
        "and why",
        f"  find {out_dir} -name 'shard-*.ndjson' -exec jq -c .gene {{}} + | head -c 700; echo   "
        "# the reports as NCBI sent them",
        f'  python -c "import duckdb; print(duckdb.sql(\\"{sql}\\"))"',
        f"  bulkgene status {out_dir}; bulkgene verify {out_dir}",
    ])
