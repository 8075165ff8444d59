"""Rate saturation: bulkgene vs a serial client and the generated NCBI client, same emulator.

The emulator answers after 0.3 s + 0.8 ms per gene (+-20 %) and limits each key to the
ceiling (10/s with a key). bulkgene should sit at >= 98 % of the ceiling with no 429 and
>= 10x the genes/s of a client that fetches one page at a time (what NCBI's CLI does).

    python bench/rate.py                  # 200 000 IDs x 3 repeats, ~4 minutes
    python bench/rate.py --ids 5000 --repeats 1 --baseline-requests 2 --latency 0.05   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import (
    PYTHON,
    Emulator,
    bulkgene_env,
    fmt,
    median_spread,
    run_measured,
    save,
    write_ids,
)

KEY = "bench-key"


def achieved_rate(arrivals: list[dict[str, Any]]) -> float:
    times = sorted(a["t"] for a in arrivals)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def run_bulkgene(emulator: Emulator, ids_file: Path, genes: int, ceiling: float) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="bench-rate-"))
    try:
        child = run_measured([PYTHON, "-m", "bulkgene", "fetch", str(ids_file), "--out", str(out),
                              "-q", "--rate", str(ceiling)],
                             env=bulkgene_env(emulator.base_url, NCBI_API_KEY=KEY))
        assert child.returncode == 0, f"bulkgene exited {child.returncode}"
    finally:
        shutil.rmtree(out, ignore_errors=True)
    arrivals = emulator.arrivals()
    return {"rate_ratio": achieved_rate(arrivals) / ceiling, "genes_per_s": genes / child.wall_s,
            "throttled": sum(1 for a in arrivals if a["status"] == 429)}


async def serial_client(base_url: str, ids: list[int], requests: int) -> float:
    """One page at a time, following tokens: NCBI's CLI's pattern. Returns genes/s."""
    genes = 0
    started = time.monotonic()
    async with aiohttp.ClientSession(headers={"api-key": KEY}) as session:
        for n in range(requests):
            batch = ids[n * 1000:(n + 1) * 1000]
            token = None
            while True:
                params = {"page_size": "1000", **({"page_token": token} if token else {})}
                url = f"{base_url}/gene/id/{','.join(map(str, batch))}"
                async with session.get(url, params=params) as response:
                    page = orjson.loads(await response.read())
                genes += len(page.get("reports", []))
                token = page.get("next_page_token")
                if not token:
                    break
    return genes / (time.monotonic() - started)


def pyclient_loop(base_url: str, ids: list[int], requests: int) -> float:
    """The generated ncbi-datasets-pyclient, called in a loop as a Python user would."""
    import warnings

    from ncbi.datasets.openapi import ApiClient, Configuration, GeneApi

    configuration = Configuration(host=base_url)
    configuration.api_key["ApiKeyAuthHeader"] = KEY
    genes = 0
    started = time.monotonic()
    with ApiClient(configuration) as client, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        api = GeneApi(client)
        for n in range(requests):
            batch = ids[n * 1000:(n + 1) * 1000]
            token = None
            while True:
                page = api.gene_reports_by_id(gene_ids=batch, page_size=1000, page_token=token)
                genes += len(page.reports or [])
                token = page.next_page_token
                if not token:
                    break
    return genes / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-requests", type=int, default=12)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--latency-per-gene", type=float, default=0.0008)
    parser.add_argument("--ceiling", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rate-ids-"))
    ids_file = write_ids(work / "ids.txt", args.ids)
    ids = list(range(1, args.ids + 1))
    emulator_args = ["--latency", str(args.latency), "--latency-per-gene",
                     str(args.latency_per_gene), "--jitter", "0.2",
                     "--keyed-rate", str(args.ceiling), "--seed", "1"]
    runs: dict[str, list[float]] = {"rate_ratio": [], "genes_per_s": [], "throttled": [],
                                    "serial_genes_per_s": [], "pyclient_genes_per_s": []}
    with Emulator(*emulator_args) as emulator:
        for repeat in range(args.repeats):
            emulator.reset()
            genes = args.ids  # the emulator answers (almost) every ID; close enough for genes/s
            result = run_bulkgene(emulator, ids_file, genes, args.ceiling)
            for name, value in result.items():
                runs[name].append(value)
            time.sleep(1.1)  # let the key's window empty before the baselines
            runs["serial_genes_per_s"].append(
                asyncio.run(serial_client(emulator.base_url, ids, args.baseline_requests)))
            runs["pyclient_genes_per_s"].append(
                pyclient_loop(emulator.base_url, ids, args.baseline_requests))
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k}={v[-1]:.3f}" for k, v in runs.items()),
                  flush=True)
    shutil.rmtree(work, ignore_errors=True)
    stats = {name: median_spread(values) for name, values in runs.items()}
    speedup = [b / s for b, s in zip(runs["genes_per_s"], runs["serial_genes_per_s"], strict=True)]
    speedup_py = [b / s for b, s in zip(runs["genes_per_s"], runs["pyclient_genes_per_s"],
                                        strict=True)]
    stats["speedup_vs_serial"] = median_spread(speedup)
    stats["speedup_vs_pyclient"] = median_spread(speedup_py)
    print()
    print(f"| figure (median, min-max of {args.repeats}) | value |")
    print("|---|---|")
    print(f"| bulkgene requests/s / ceiling ({args.ceiling:g}/s) | {fmt(stats['rate_ratio'], 3)} |")
    print(f"| bulkgene genes/s | {fmt(stats['genes_per_s'], 0)} |")
    print(f"| bulkgene throttled requests | {fmt(stats['throttled'], 0)} |")
    print(f"| serial client genes/s | {fmt(stats['serial_genes_per_s'], 0)} |")
    print(f"| ncbi-datasets-pyclient loop genes/s | {fmt(stats['pyclient_genes_per_s'], 0)} |")
    print(f"| speed-up vs serial | {fmt(stats['speedup_vs_serial'], 1)}x |")
    print(f"| speed-up vs pyclient | {fmt(stats['speedup_vs_pyclient'], 1)}x |")
    print(f"\nresult: {save('rate', {'args': vars(args), 'stats': stats, 'runs': runs})}")


if __name__ == "__main__":
    main()
