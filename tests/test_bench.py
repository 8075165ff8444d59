"""Smoke runs of every benchmark on tiny inputs, so bench/ can't rot. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("module", "args"), [
    ("bench.rate", ["--ids", "3000", "--repeats", "1", "--baseline-requests", "1",
                    "--latency", "0.02", "--latency-per-gene", "0"]),
    ("bench.pacing", ["--ids", "3000", "--episode-ids", "3000", "--repeats", "1"]),
    ("bench.cpu", ["--ids", "2000", "--repeats", "1"]),
    ("bench.memory", ["--sizes", "2000", "5000", "--strays", "2000", "--full-rate", "2000"]),
    ("bench.sharing", ["--repeats", "1", "--scale", "0.1", "--latency", "0.02"]),
    ("bench.failures", ["--repeats", "1", "--scale", "0.02", "--give-up-s", "90",
                        "--refused-shares", "0.01"]),
    ("bench.taxon", ["--taxon", "7227", "--repeats", "1", "--latency", "0.02",
                     "--latency-per-gene", "0"]),
    ("bench.history", ["--rows", "20000", "--missing", "2000", "--repeats", "1"]),
    ("bench.export", ["--ids", "2000", "--repeats", "1"]),
])
def test_benchmark_runs_and_writes_its_result(module: str, args: list[str],
                                              tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_RESULTS_DIR": str(tmp_path), "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                            capture_output=True, timeout=280, check=False)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"| " in result.stdout, "the benchmark prints its table"
    written = list(tmp_path.glob("*.json"))
    assert len(written) == 1
    data = json.loads(written[0].read_text())
    assert data["machine"]["cpus"] and data["command"]
