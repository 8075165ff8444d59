"""Shared bench plumbing: the emulator in a subprocess, children measured by wait4, medians."""

from __future__ import annotations

import itertools
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
PYTHON = sys.executable


@dataclass
class Child:
    """A finished child process: exit code, wall seconds, CPU seconds, peak RSS in MiB."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float


def run_measured(command: list[str], env: dict[str, str] | None = None,
                 stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.DEVNULL,
                 cwd: Path | None = None) -> Child:
    """Run ``command`` and read its own CPU time and peak RSS from wait4().

    Linux carries the parent's high-water RSS into a forked child's ru_maxrss, so once this
    process has grown (the pyclient baseline imports ~100 MiB) wait4() would report the
    parent's peak, not the child's. Then the child's own VmHWM, sampled every 20 ms until it
    exits, stands in (it may miss a peak in the child's last 20 ms).
    """
    parent_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, cwd=cwd)
    sampled_kib = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        sampled_kib = max(sampled_kib, _vm_hwm_kib(process.pid))
        time.sleep(0.02)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    peak_kib = usage.ru_maxrss if usage.ru_maxrss > parent_peak_kib or not sampled_kib \
        else sampled_kib
    return Child(process.returncode, wall, usage.ru_utime + usage.ru_stime, peak_kib / 1024)


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Emulator:
    """``bulkgene emulate`` in a subprocess on a free loopback port."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([PYTHON, "-m", "bulkgene", "emulate", "--port", "0", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.base_url = line.strip().rsplit(" ", 1)[-1]
        self.root_url = self.base_url.removesuffix("/datasets/v2")

    def arrivals(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.root_url + "/_emulator/arrivals") as response:
            data: list[dict[str, Any]] = json.load(response)
        return [a for a in data if a["path"].startswith("/datasets/v2/")]

    def reset(self) -> None:
        request = urllib.request.Request(self.root_url + "/_emulator/reset", method="POST")
        urllib.request.urlopen(request).close()

    def path(self, arrival_jitter_ms: float, remaining_counted_at: str = "arrival") -> None:
        """The path's arrival jitter and the server's reading of ``Remaining`` from now on."""
        query = urllib.parse.urlencode({"arrival_jitter_ms": arrival_jitter_ms,
                                        "remaining_counted_at": remaining_counted_at})
        request = urllib.request.Request(f"{self.root_url}/_emulator/path?{query}", method="POST")
        urllib.request.urlopen(request).close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_id_lines(path: Path, gene_ids: Iterable[int]) -> Path:
    """One GeneID per line, written in chunks (tens of millions don't fit a string)."""
    with open(path, "w") as handle:
        for chunk in _chunks(gene_ids, 65536):
            handle.write("".join(f"{gene_id}\n" for gene_id in chunk))
    return path


def _chunks(items: Iterable[int], size: int) -> Iterator[tuple[int, ...]]:
    iterator = iter(items)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk


def write_ids(path: Path, count: int, spread: bool = False) -> Path:
    """``count`` unique GeneIDs: 1..count, or spread over 1..2**28 like real ones."""
    modulus = 2**28 - 1
    return write_id_lines(path, ((i * 2654435761) % modulus + 1 if spread else i
                                 for i in range(1, count + 1)))


def write_mixed_ids(path: Path, count: int, seed: int = 1) -> list[int]:
    """``count`` unique GeneIDs of 5-9 digits, the digit count uniform, as real lists mix them.

    Nine-digit IDs stay below 2e8 (the emulator's and NCBI's known range, ~1.3e8 today),
    so every ID is answered and genes/s counts real reports.
    """
    rng = random.Random(seed)
    ids: dict[int, None] = {}
    while len(ids) < count:
        digits = rng.randint(5, 9)
        low = 10 ** (digits - 1)
        ids[rng.randrange(low, 2 * low if digits == 9 else 10 * low)] = None
    path.write_text("".join(f"{gene_id}\n" for gene_id in ids))
    return list(ids)


def median_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def fmt(stat: dict[str, float], digits: int = 2) -> str:
    if stat["runs"] == 1:
        return f"{stat['median']:.{digits}f}"
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "system": platform.platform(),
            "max_rss_limit": resource.getrlimit(resource.RLIMIT_AS)[0]}


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    result["machine"] = machine()
    result["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def bulkgene_env(base_url: str, budget_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """The child's environment; ``budget_dir`` keeps its key lease apart from other runs'."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NCBI_API_KEY", "BULKGENE_BASE_URL", "BULKGENE_BUDGET_DIR")}
    env["BULKGENE_BASE_URL"] = base_url
    if budget_dir is not None:
        env["BULKGENE_BUDGET_DIR"] = str(budget_dir)
    env.update(extra)
    return env
