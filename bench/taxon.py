"""A whole organism: bulkgene ``fetch --taxon`` vs NCBI's serial approach, same emulator.

The organism is the emulator's bread wheat (tax ID 4565): 100 000 genes with nine-digit
GeneIDs, as real wheat has. The emulator answers as in bench.rate (NCBI's limit headers,
10/s per key, 0.3 s + 0.8 ms per gene on the page, +-10 %); IDS_ONLY pages cost the same per
gene as complete ones, since NCBI's cost for them is unrecorded (that makes listing, which is
serial per taxon for both clients, as slow as it can plausibly be). Side by side, per repeat:

1. bulkgene ``fetch --taxon 4565`` with a key (its budget lease, no --rate), GET (the
   default endpoint: nine-digit IDs take two requests a batch) and POST ``dataset-report``;
2. NCBI's approach, as its CLI's source does it (docs/ncbi-gene-taxon.md): one IDS_ONLY page
   of size 1 for ``total_count``, then IDS_ONLY pages of 1000 one after another, then the
   reports by GeneID, 1000 at a time, one request after another, written as JSON lines.

Reported: genes/s over the whole job (wall clock, process start to end), the time spent
listing and fetching (from the emulator's arrival log), requests, 429s, and the speed-up
of each bulkgene run over the serial client of the same repeat.

    python -m bench.taxon                                  # 3 repeats, ~25 minutes
    python -m bench.taxon --taxon 511145 --repeats 1       # 4 300 genes: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import PYTHON, Emulator, bulkgene_env, fmt, median_spread, run_measured, save

KEY = "bench-key"
ENDPOINTS = {"GET": "gene-id", "POST": "dataset-report"}


def _is_listing(arrival: dict[str, Any]) -> bool:
    return arrival["method"] == "POST" and '"taxon"' in arrival["query"]


def phases(arrivals: list[dict[str, Any]]) -> dict[str, float]:
    """Listing and fetching seconds, requests and 429s, from the emulator's arrival log."""
    times = sorted(a["t"] for a in arrivals)
    listing = sorted(a["t"] for a in arrivals if _is_listing(a))
    fetching = sorted(a["t"] for a in arrivals if not _is_listing(a))
    return {"listing_s": listing[-1] - times[0] if listing else 0.0,
            "fetching_s": times[-1] - fetching[0] if fetching else 0.0,
            "listing_requests": len(listing), "fetch_requests": len(fetching),
            "throttled": sum(1 for a in arrivals if a["status"] == 429)}


def run_bulkgene(emulator: Emulator, taxon: str, endpoint: str, budget: Path
                 ) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="bench-taxon-"))
    try:
        child = run_measured([PYTHON, "-m", "bulkgene", "fetch", "--taxon", taxon, "--out",
                              str(out), "-q", "--endpoint", endpoint],
                             env=bulkgene_env(emulator.base_url, budget, NCBI_API_KEY=KEY))
        assert child.returncode == 0, f"bulkgene exited {child.returncode}"
        summary = json.loads((out / "summary.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    genes = float(summary["found"])
    return {"genes": genes, "genes_per_s": genes / child.wall_s, "wall_s": child.wall_s,
            "peak_rss_mib": child.peak_rss_mib, **phases(emulator.arrivals())}


async def _page(session: aiohttp.ClientSession, url: str, body: dict[str, Any]
                ) -> dict[str, Any]:
    async with session.post(url, json=body) as response:
        assert response.status == 200, response.status
        page: dict[str, Any] = orjson.loads(await response.read())
        return page


async def serial_taxon(base_url: str, taxon: str, out_file: Path) -> tuple[int, float]:
    """NCBI's CLI's way: count, list serially, then fetch serially. (genes written, wall s)"""
    url = f"{base_url}/gene/dataset_report"
    started = time.monotonic()
    written = 0
    async with aiohttp.ClientSession(headers={"api-key": KEY}) as session:
        listing = {"taxon": taxon, "returned_content": "IDS_ONLY"}
        await _page(session, url, {**listing, "page_size": 1})  # total_count, for its bar
        ids: dict[int, None] = {}  # "client-side paged geneids can return duplicates"
        token = None
        while True:
            page = await _page(session, url, {**listing, "page_size": 1000,
                                              **({"page_token": token} if token else {})})
            ids.update((int(r["gene"]["gene_id"]), None) for r in page.get("reports", []))
            token = page.get("next_page_token")
            if not token:
                break
        gene_ids = list(ids)
        with open(out_file, "wb") as out:  # noqa: ASYNC230 - the baseline writes as plainly as its model
            for start in range(0, len(gene_ids), 1000):
                chunk = gene_ids[start:start + 1000]
                token = None
                while True:
                    page = await _page(session, url, {"gene_ids": chunk, "page_size": 1000,
                                                      **({"page_token": token} if token
                                                         else {})})
                    reports = page.get("reports", [])
                    out.write(b"".join(orjson.dumps(r) + b"\n" for r in reports))
                    written += len(reports)
                    token = page.get("next_page_token")
                    if not token:
                        break
    return written, time.monotonic() - started


def run_serial(emulator: Emulator, taxon: str) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="bench-taxon-serial-"))
    try:
        genes, wall_s = asyncio.run(serial_taxon(emulator.base_url, taxon, out / "genes.jsonl"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"genes": float(genes), "genes_per_s": genes / wall_s, "wall_s": wall_s,
            **phases(emulator.arrivals())}


def _warm(emulator: Emulator, taxon: str) -> None:
    """Build the emulator's listing of the taxon once (it is lazy), unmeasured."""
    request = urllib.request.Request(
        emulator.base_url + "/gene/dataset_report", method="POST",
        data=orjson.dumps({"taxon": taxon, "returned_content": "IDS_ONLY", "page_size": 1}),
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request).close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--taxon", default="4565", help="the emulator's taxon to fetch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--latency-per-gene", type=float, default=0.0008)
    parser.add_argument("--latency-jitter", type=float, default=0.1)
    parser.add_argument("--ceiling", type=float, default=10.0)
    args = parser.parse_args()
    started = time.monotonic()
    runs: dict[str, dict[str, list[float]]] = {}
    emulator_args = ["--latency", str(args.latency), "--latency-per-gene",
                     str(args.latency_per_gene), "--jitter", str(args.latency_jitter),
                     "--keyed-rate", str(args.ceiling), "--seed", "1"]
    budget = Path(tempfile.mkdtemp(prefix="bench-taxon-budget-"))
    with Emulator(*emulator_args) as emulator:
        _warm(emulator, args.taxon)
        for repeat in range(args.repeats):
            clients: list[tuple[str, Callable[[], dict[str, float]]]] = [
                ("bulkgene GET", partial(run_bulkgene, emulator, args.taxon, "gene-id", budget)),
                ("bulkgene POST", partial(run_bulkgene, emulator, args.taxon, "dataset-report",
                                          budget)),
                ("serial", partial(run_serial, emulator, args.taxon))]
            for label, run in clients:
                emulator.reset()
                time.sleep(1.1)  # let the key's window empty
                values = run()
                for name, value in values.items():
                    runs.setdefault(label, {}).setdefault(name, []).append(value)
                print(f"{label} repeat {repeat + 1}: " + ", ".join(
                    f"{k}={v:.3f}" for k, v in values.items()), flush=True)
    shutil.rmtree(budget, ignore_errors=True)
    serial = runs["serial"]["genes_per_s"]
    for label in ("bulkgene GET", "bulkgene POST"):
        runs[label]["speedup"] = [b / s for b, s in zip(runs[label]["genes_per_s"], serial,
                                                          strict=True)]
    stats = {label: {name: median_spread(values) for name, values in metrics.items()}
             for label, metrics in runs.items()}
    genes = int(runs["serial"]["genes"][0])
    print(f"\nTaxon {args.taxon}, {genes:,} genes; median (min-max) of {args.repeats}; "
          f"load {os.getloadavg()[0]:.1f}:\n")
    print("| client | genes/s | speed-up (x) | wall s | listing s | fetching s "
          "| listing requests | fetch requests | 429s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label in ("bulkgene GET", "bulkgene POST", "serial"):
        s = stats[label]
        speedup = fmt(s["speedup"], 1) if "speedup" in s else "1"
        print(f"| {label} | {fmt(s['genes_per_s'], 0)} | {speedup} | {fmt(s['wall_s'], 0)} "
              f"| {fmt(s['listing_s'], 0)} | {fmt(s['fetching_s'], 0)} "
              f"| {fmt(s['listing_requests'], 0)} | {fmt(s['fetch_requests'], 0)} "
              f"| {fmt(s['throttled'], 0)} |")
    path = save("taxon", {"args": vars(args), "stats": stats, "runs": runs,
                          "load": os.getloadavg(), "elapsed_s": time.monotonic() - started})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
