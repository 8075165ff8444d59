"""What a user sees: the bar on a terminal, plain lines elsewhere, dry-run, demo, reading output."""

from __future__ import annotations

import os
import pty
import select
import subprocess
from pathlib import Path

import pytest
from helpers import (
    SAMPLES,
    EmulatorFactory,
    cli_command,
    cli_env,
    invoke_cli,
    read_summary,
    served,
    write_ids,
)

from bulkgene.testing import EmulatorThread


def _run_under_pty(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run the CLI with stderr on a pseudo-terminal; return its exit code and what it drew."""
    master, slave = pty.openpty()
    process = subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.DEVNULL,
                               stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    return process.wait(timeout=60), output


@pytest.mark.slow
def test_a_terminal_gets_a_live_bar_that_log_lines_do_not_garble(make_emulator: EmulatorFactory,
                                                                 tmp_path: Path) -> None:
    emulator: EmulatorThread = make_emulator(latency_s=0.3)
    source = write_ids(tmp_path / "ids.txt", range(1, 201))
    code, drawn = _run_under_pty(["fetch", str(source), "--out", str(tmp_path / "out"),
                                  "--batch-size", "20", "--rate", "10"],
                                 cli_env(emulator.base_url))
    assert code == 0, drawn.decode(errors="replace")
    assert b"\r\x1b[K[" in drawn and b"] " in drawn and b"IDs/s" in drawn
    assert b"ETA" in drawn and b"throttled" in drawn
    for line in drawn.split(b"\n"):
        # a log line is never glued to the bar: each one starts after the bar was cleared
        text = line.split(b"\r\x1b[K")[-1]
        assert not (b"bulkgene:" in text and b"] " in text.split(b"bulkgene:")[0])


@pytest.mark.slow
def test_without_a_terminal_progress_is_plain_lines_without_carriage_returns(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator: EmulatorThread = make_emulator(latency_s=0.2)
    source = write_ids(tmp_path / "ids.txt", range(1, 201))
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--batch-size", "20",
                        "--rate", "10", "--progress", "--progress-interval", "1",
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0
    assert b"\r" not in result.stderr and b"\x1b" not in result.stderr
    assert b"IDs/s" in result.stderr, "a periodic progress line was printed"
    quiet = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out2"), "-q",
                       env=cli_env(emulator.base_url))
    assert quiet.stderr.count(b"\n") == 1, "-q: only the final account line"


def test_dry_run_counts_and_plans_but_sends_and_writes_nothing(emulator: EmulatorThread,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(SAMPLES / "human_genes.txt"), str(SAMPLES / "messy_ids.txt"),
                        "--out", str(out), "--dry-run", "--batch-size", "100",
                        "--task-count", "2", "--task-index", "1",
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    assert "input: 396 unique GeneIDs, 8 duplicates, 9 rejected lines" in text
    assert "batches: 4 of up to 100 IDs; task 1 of 2 takes 2 (196 IDs)" in text
    assert "messy_ids.txt:9: 'TP53'" in text and "time: about" in text
    assert not served(emulator.state.arrivals())
    assert not out.exists()


@pytest.mark.slow
def test_demo_runs_offline_and_says_how_to_look(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NCBI_API_KEY", "BULKGENE_BASE_URL")}
    env["BULKGENE_BASE_URL"] = "http://192.0.2.1:9/unreachable"  # the demo must not use it
    result = invoke_cli("demo", "--out", str(tmp_path / "genes"), env=env)
    assert result.returncode == 0, result.stderr.decode()
    summary = read_summary(tmp_path / "genes")
    assert summary["complete"] and summary["found"] > 350 and summary["rejected"] == 9
    assert b"Look at the output" in result.stdout and b"duckdb" in result.stdout
    assert f"requested {summary['requested']} = found".encode() in result.stderr


@pytest.fixture
def fetched(emulator: EmulatorThread, tmp_path: Path) -> tuple[Path, dict[str, int]]:
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(SAMPLES / "human_genes.txt"), "--out", str(out),
                        "--rate", "50", env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    return out, read_summary(out)


def test_duckdb_reads_the_shard_glob(fetched: tuple[Path, dict[str, int]]) -> None:
    duckdb = pytest.importorskip("duckdb")
    out, summary = fetched
    rows = duckdb.sql(f"select gene.gene_id as id from read_json('{out}/shard-*.ndjson')"  # noqa: S608
                      ).fetchall()
    assert len(rows) == summary["records"]
    assert {int(r[0]) for r in rows} >= {7157, 672, 3105, 59067}


def test_pandas_reads_every_shard(fetched: tuple[Path, dict[str, int]]) -> None:
    pandas = pytest.importorskip("pandas")
    out, summary = fetched
    frame = pandas.concat(pandas.read_json(path, lines=True, dtype=False)
                          for path in sorted(out.glob("shard-*.ndjson")))
    assert len(frame) == summary["records"]
    gene_ids = {int(gene["gene_id"]) for gene in frame["gene"]}
    assert len(gene_ids) == summary["records"] and 7157 in gene_ids
