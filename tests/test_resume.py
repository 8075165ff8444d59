"""Crash safety and resume through the real CLI: SIGKILL at random moments, then exactly once."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    EmulatorFactory,
    assert_complete_output,
    cli_command,
    cli_env,
    expected_for,
    invoke_cli,
    read_summary,
    run_cli,
    served,
    shard_files,
    tsv_gene_ids,
    write_ids,
)

from bulkgene.output import checkpoint as ckpt
from bulkgene.testing import EmulatorThread


def _fetch_args(source: Path, out: Path, *extra: str, rate: int = 1000) -> list[str]:
    return ["fetch", str(source), "--out", str(out), "--batch-size", "50", "--page-size", "20",
            "--rate", str(rate), "--concurrency", "6", "--shards", "3", *extra]


BATCHES = 240  # 12 000 IDs in batches of 50, 3 pages each at --page-size 20
MAX_ADVANCE = 3  # batches a run may commit before its kill; kills x this stays far below 240


def _committed(out: Path) -> int:
    state = ckpt.load(out)  # replaced atomically by the run: always whole
    return state.committed_batches if state else 0


def _kill_after_progress(process: subprocess.Popen[bytes], out: Path, rng: random.Random
                         ) -> int:
    """SIGKILL ``process`` once it has committed 1-3 more batches; return the count seen then.

    Driven by the checkpoint, not the clock: whatever the machine's speed, the kill lands
    after real progress and long before the end (the pacing leaves hundreds of requests to go).
    """
    target = _committed(out) + rng.randint(1, MAX_ADVANCE)
    deadline = time.monotonic() + 120  # only a hang guard; progress is what is waited for
    while (seen := _committed(out)) < target:
        assert process.poll() is None, f"the run exited ({process.returncode}) before its kill"
        assert time.monotonic() < deadline, f"no progress past {seen} committed batches"
        time.sleep(0.005)
    # a random moment inside the next batch: mid-write, mid-fsync or between commits
    time.sleep(rng.uniform(0, 0.05))
    process.send_signal(signal.SIGKILL)
    return seen


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("variant", "kills"), [
    ((), 20),
    (("--compress", "gzip", "--record", "gene"), 10),
    (("--endpoint", "dataset-report"), 10),
    (("--format", "ndjson"), 10),
    (("--format", "tsv", "--table-field", "gene-id", "--table-field", "symbol",
      "--compress", "gzip"), 10),
], ids=["default", "gzip-gene", "dataset-report", "ndjson", "tsv-gzip"])
def test_resume_after_random_sigkills_writes_each_gene_once(make_emulator: EmulatorFactory,
                                                             tmp_path: Path,
                                                             variant: tuple[str, ...],
                                                             kills: int) -> None:
    emulator = make_emulator(latency_s=0.01, latency_jitter=0.5)
    ids = list(range(1, 12001))
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    rng = random.Random(20261125)
    killed_mid_run = 0
    for _ in range(kills):
        # 60/s: each run has hundreds of requests to go when the kill lands
        process = subprocess.Popen(cli_command(*_fetch_args(source, out, *variant, rate=60)),
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen = _kill_after_progress(process, out, rng)
        process.wait(timeout=30)
        if process.returncode == -signal.SIGKILL and seen < BATCHES:
            killed_mid_run += 1
    assert killed_mid_run == kills, "every kill must land while the run is working"
    state = ckpt.load(out)
    assert state is not None and 0 < state.committed_batches < BATCHES, "kills must land mid-run"
    finals = 0
    while True:
        # the pace is no part of the fingerprint: the finishing run may go fast
        result = run_cli(*_fetch_args(source, out, *variant, rate=400), env=env, timeout=120)
        finals += 1
        if result.returncode == 0:
            break
        assert finals < 3, result.stderr.decode()
    expected = expected_for(emulator.state.universe, ids)
    if "tsv" in variant:
        written = tsv_gene_ids(out)
        assert max(written.values()) == 1 and set(written) == expected.genes
    else:
        assert_complete_output(out, expected)
    summary = read_summary(out)
    assert summary["batches_committed"] == BATCHES
    verified = run_cli("verify", str(out))
    assert verified.returncode == 0, verified.stderr.decode()


def _complete_run(emulator: EmulatorThread, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    source = write_ids(tmp_path / "ids.txt", range(1, 301))
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    result = invoke_cli(*_fetch_args(source, out), env=env)
    assert result.returncode == 0, result.stderr.decode()
    return source, out, env


def test_garbage_after_the_committed_end_is_cut_away(emulator: EmulatorThread,
                                                     tmp_path: Path) -> None:
    source, out, env = _complete_run(emulator, tmp_path)
    shard = shard_files(out)[0]
    clean = shard.read_bytes()
    with open(shard, "ab") as handle:
        handle.write(b'{"gene": {"gene_id": "7157"}, "query": ["71')  # a torn half batch
    result = invoke_cli(*_fetch_args(source, out), env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert shard.read_bytes() == clean
    assert_complete_output(out, expected_for(emulator.state.universe, range(1, 301)))


def test_a_completed_run_re_run_sends_nothing(emulator: EmulatorThread, tmp_path: Path) -> None:
    source, out, env = _complete_run(emulator, tmp_path)
    before = len(served(emulator.state.arrivals()))
    result = invoke_cli(*_fetch_args(source, out), env=env)
    assert result.returncode == 0
    assert len(served(emulator.state.arrivals())) == before


def test_changed_input_is_refused_until_restart(emulator: EmulatorThread, tmp_path: Path) -> None:
    source, out, env = _complete_run(emulator, tmp_path)
    with open(source, "a") as handle:
        handle.write("7157\n")
    refused = invoke_cli(*_fetch_args(source, out), env=env)
    assert refused.returncode == 1
    message = refused.stderr.decode()
    assert "input" in message and "--restart" in message and "Traceback" not in message
    restarted = invoke_cli(*_fetch_args(source, out, "--restart"), env=env)
    assert restarted.returncode == 0, restarted.stderr.decode()
    aside = list(tmp_path.glob("out.restarted-*"))
    assert len(aside) == 1 and (aside[0] / "checkpoint.json").exists()


def test_changed_batch_size_is_refused(emulator: EmulatorThread, tmp_path: Path) -> None:
    source, out, env = _complete_run(emulator, tmp_path)
    args = _fetch_args(source, out)
    args[args.index("--batch-size") + 1] = "40"
    refused = invoke_cli(*args, env=env)
    assert refused.returncode == 1
    assert "batch_size: was 50, now 40" in refused.stderr.decode()


def test_corrupt_checkpoint_stops_with_instructions(emulator: EmulatorThread,
                                                    tmp_path: Path) -> None:
    source, out, env = _complete_run(emulator, tmp_path)
    (out / "checkpoint.json").write_text("{ not json")
    result = invoke_cli(*_fetch_args(source, out), env=env)
    assert result.returncode == 1
    message = result.stderr.decode()
    assert "damaged" in message and "--restart" in message and "Traceback" not in message


def test_failed_batches_exit_3_and_a_re_run_retries_exactly_those(make_emulator: EmulatorFactory,
                                                                  tmp_path: Path) -> None:
    emulator: EmulatorThread = make_emulator(faults={"http_503": 0.3}, seed=3)
    ids = range(1, 1001)
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    args = _fetch_args(source, out, "--max-attempts", "1", "--page-size", "1000")
    first = invoke_cli(*args, env=env)
    assert first.returncode == 3, first.stderr.decode()
    summary = read_summary(out)
    assert summary["failed"] > 0 and summary["batches_failed"] > 0
    assert summary["requested"] == summary["found"] + summary["missing"] + summary["failed"]
    assert "run the same command again" in first.stderr.decode()
    failed_first_ids = {index * 50 + 1 for index in summary["failed_batch_indexes"]}
    emulator.state.config.faults.clear()
    emulator.state.reset()
    second = invoke_cli(*args, env=env)
    assert second.returncode == 0, second.stderr.decode()
    assert {a.first_id for a in served(emulator.state.arrivals())} == failed_first_ids
    assert_complete_output(out, expected_for(emulator.state.universe, ids))


def test_a_write_failure_stops_cleanly_and_says_what_to_do(emulator: EmulatorThread,
                                                           tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 301))
    out = tmp_path / "out"
    (out / "checkpoint.json.tmp").mkdir(parents=True)  # the first commit can't be saved
    result = invoke_cli(*_fetch_args(source, out), env=cli_env(emulator.base_url), timeout=60)
    assert result.returncode == 1
    message = result.stderr.decode()
    assert "writing to" in message and "run the same command" in message
    assert "Traceback" not in message
    (out / "checkpoint.json.tmp").rmdir()
    again = invoke_cli(*_fetch_args(source, out), env=cli_env(emulator.base_url))
    assert again.returncode == 0, again.stderr.decode()
    assert_complete_output(out, expected_for(emulator.state.universe, range(1, 301)))
