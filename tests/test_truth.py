"""Never a false success: exit 0, "complete" and verify ok only when the user has it all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    EmulatorFactory,
    cli_command,
    cli_env,
    invoke_cli,
    make_config,
    served,
    wait_for_commits,
    write_ids,
)

import bulkgene
from bulkgene.config import RetryPolicy
from bulkgene.errors import FatalHTTPError, FingerprintMismatch
from bulkgene.output import checkpoint as ckpt
from bulkgene.testing import EmulatorThread

FAST = RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.02, unreachable_s=0.5)


def _fetch(source: Path, out: Path, *extra: str) -> list[str]:
    return ["fetch", str(source), "--out", str(out), "--batch-size", "20", "--rate", "200",
            "--retry-wait", "0.01", "--no-progress", *extra]


def test_verify_and_status_fail_for_a_directory_with_an_array_task_missing(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    out = tmp_path / "out"
    done = invoke_cli(*_fetch(source, out, "--task-index", "0", "--task-count", "2"),
                   env=cli_env(emulator.base_url))
    assert done.returncode == 0, done.stderr.decode()
    verify = invoke_cli("verify", str(out))
    assert verify.returncode == 1
    assert b"task-0001" in verify.stderr and b"run them" in verify.stderr
    status = invoke_cli("status", str(out), "--json")
    assert json.loads(status.stdout)["total"]["complete"] is False


def test_verify_fails_when_every_batch_failed(make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(faults={"http_503": 1.0})
    source = write_ids(tmp_path / "ids.txt", range(1, 61))
    out = tmp_path / "out"
    result = invoke_cli(*_fetch(source, out, "--max-attempts", "1"), env=cli_env(emulator.base_url))
    assert result.returncode == 3
    verify = invoke_cli("verify", str(out))
    assert verify.returncode == 1 and b"failed" in verify.stderr
    assert json.loads(invoke_cli("status", str(out), "--json").stdout)["total"]["complete"] is False


@pytest.mark.slow
def test_an_interrupted_run_is_not_complete_until_it_is_finished(make_emulator: EmulatorFactory,
                                                                 tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.05)
    source = write_ids(tmp_path / "ids.txt", range(1, 2001))
    out = tmp_path / "out"
    args = ["fetch", str(source), "--out", str(out), "--batch-size", "20", "--rate", "20",
            "--no-progress"]
    process = subprocess.Popen(cli_command(*args), env=cli_env(emulator.base_url),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # driven by observed progress: a few commits
        summary_free = (out / "checkpoint.json")
        if summary_free.exists() and b'"done_below": 0,' not in summary_free.read_bytes():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr.decode()
    verify = invoke_cli("verify", str(out))
    assert verify.returncode == 1 and b"pending" in verify.stderr
    status = json.loads(invoke_cli("status", str(out), "--json").stdout)
    assert status["total"]["complete"] is False and status["total"]["pending_ids"] > 0
    assert invoke_cli(*args, env=cli_env(emulator.base_url)).returncode == 0
    assert invoke_cli("verify", str(out)).returncode == 0


async def _finished_run(emulator: EmulatorThread, tmp_path: Path) -> tuple[Path, Path]:
    """A complete 40-ID run from the emulator: its input and its directory."""
    source = write_ids(tmp_path / "ids.txt", range(1, 41))
    out = tmp_path / "out"
    await bulkgene.download(make_config([str(source)], out, base_url=emulator.base_url,
                                        requests_per_second=200.0, progress_interval_s=0))
    return source, out


async def test_a_directory_filled_from_another_server_is_not_resumed(emulator: EmulatorThread,
                                                                     tmp_path: Path) -> None:
    source, out = await _finished_run(emulator, tmp_path)
    other = emulator.base_url.replace("127.0.0.1", "localhost")
    with pytest.raises(FingerprintMismatch, match="server") as caught:
        await bulkgene.download(make_config([str(source)], out, base_url=other,
                                            progress_interval_s=0))
    assert "http://127.0.0.1" in str(caught.value) and "http://localhost" in str(caught.value)


async def test_an_unreachable_host_stops_the_run_naming_it(tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 41))
    config = make_config([str(source)], tmp_path / "out",
                         base_url="http://127.0.0.1:9/datasets/v2",  # discard: refused
                         retry=RetryPolicy(max_attempts=1000, backoff_base_s=0.01,
                                           backoff_cap_s=0.05, unreachable_s=0.3),
                         requests_per_second=100.0, progress_interval_s=0)
    with pytest.raises(FatalHTTPError, match=r"cannot reach 127\.0\.0\.1") as caught:
        await bulkgene.download(config)
    assert "doctor" in str(caught.value)
    assert caught.value.summary is not None and caught.value.summary.found == 0


async def test_a_directory_that_never_got_an_answer_may_be_taken_over_by_another_server(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    """The README's first command run offline leaves a directory bound to nothing at all."""
    source = write_ids(tmp_path / "ids.txt", range(1, 41))
    out = tmp_path / "out"
    with pytest.raises(FatalHTTPError, match="cannot reach"):
        await bulkgene.download(make_config(
            [str(source)], out, base_url="http://localhost:9/datasets/v2",
            retry=RetryPolicy(max_attempts=1000, backoff_base_s=0.01, backoff_cap_s=0.05,
                              unreachable_s=0.3),
            requests_per_second=100.0, progress_interval_s=0))
    summary = await bulkgene.download(make_config([str(source)], out, base_url=emulator.base_url,
                                                  requests_per_second=200.0,
                                                  progress_interval_s=0))
    assert summary.exit_code == 0 and summary.complete
    assert invoke_cli("verify", str(out)).returncode == 0


async def test_a_setting_the_server_refuses_everywhere_stops_the_run(emulator: EmulatorThread,
                                                                     tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    config = make_config([str(source)], tmp_path / "out", base_url=emulator.base_url,
                         format="tsv", table_fields=("gene-id", "symbl"), retry=FAST,
                         requests_per_second=200.0, progress_interval_s=0)
    with pytest.raises(FatalHTTPError, match="symbl"):
        await bulkgene.download(config)
    arrivals = served(emulator.state.arrivals())
    assert len(arrivals) < 10, "no split down to single IDs: the probe shows it's systematic"
    missing = tmp_path / "out" / "missing.tsv"
    assert not missing.exists() or not missing.read_text().splitlines()[1:], "nothing 'missing'"


def test_sigterm_once_the_command_is_loaded_exits_75() -> None:
    # the earliest moment bulkgene's own code runs: the command line's package is imported
    code = ("import os, signal, time; import bulkgene.cli; os.kill(os.getpid(), signal.SIGTERM); "
            "time.sleep(5)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 75, result.stderr.decode()
    assert b"Run the same command again" in result.stderr


@pytest.mark.slow
def test_sigterm_while_the_input_is_read_exits_75(emulator: EmulatorThread,
                                                  tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 400_001))
    out = tmp_path / "out"
    process = subprocess.Popen(cli_command(*_fetch(source, out)), env=cli_env(emulator.base_url),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:  # prepare has begun
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr.decode()


async def test_verify_finds_a_gene_nobody_asked_for(emulator: EmulatorThread,
                                                    tmp_path: Path) -> None:
    _, out = await _finished_run(emulator, tmp_path)
    assert invoke_cli("verify", str(out)).returncode == 0
    shard = out / "shard-0000.ndjson"
    shard.write_bytes(shard.read_bytes() + b'{"gene":{"gene_id":"424242"},"query":["424242"]}\n')
    verify = invoke_cli("verify", str(out))
    assert verify.returncode == 1 and b"424242 was never asked for" in verify.stderr


def test_status_after_a_fatal_error_says_the_error_not_interrupted(tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 41))
    out = tmp_path / "out"
    # two attempts: what status says after the error is the point, not how long it took
    result = invoke_cli(*_fetch(source, out, "--max-attempts", "2"),
                        env=cli_env("http://127.0.0.1:9/datasets/v2"))
    assert result.returncode == 1
    status = invoke_cli("status", str(out))
    assert b"stopped by an error: cannot reach 127.0.0.1" in status.stdout
    assert b"h ago" not in status.stdout, "no 'last commit' from the epoch"


def test_status_says_starting_before_the_first_commit(tmp_path: Path) -> None:
    from bulkgene.results.status import task_status

    holder = subprocess.Popen(  # a bulkgene process holding the lock, nothing committed yet
        [sys.executable, "-c", "import sys; from bulkgene.output.lock import RunLock; "
         f"lock = RunLock(__import__('pathlib').Path({str(tmp_path)!r})); lock.acquire(); "
         "print('held', flush=True); sys.stdin.readline(); lock.release()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        status = task_status(tmp_path)
        assert status.starting and status.running and not status.complete
    finally:
        holder.communicate(b"\n", timeout=30)


def test_a_failed_commit_is_not_counted_in_the_end_of_run_account(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.05)
    source = write_ids(tmp_path / "ids.txt", range(1, 2001))
    out = tmp_path / "out"
    run = subprocess.Popen(cli_command(*_fetch(source, out, "--rate", "20")),
                           env=cli_env(emulator.base_url), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    wait_for_commits(out, 2)
    (out / "checkpoint.json.tmp").mkdir()  # the next checkpoint can't be saved
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr.decode()
    (out / "checkpoint.json.tmp").rmdir()
    summary = json.loads((out / "summary.json").read_text())
    state = ckpt.load(out)
    assert state is not None
    assert summary["batches_committed"] == state.committed_batches
    assert summary["found"] + summary["missing"] == state.ids_done


def test_output_without_a_checkpoint_is_refused_not_overwritten(emulator: EmulatorThread,
                                                               tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 41))
    out = tmp_path / "out"
    out.mkdir()
    (out / "shard-0000.ndjson").write_bytes(b'{"gene":{"gene_id":"1"}}\n')
    refused = invoke_cli(*_fetch(source, out), env=cli_env(emulator.base_url))
    assert refused.returncode == 1 and b"no checkpoint.json" in refused.stderr
    assert (out / "shard-0000.ndjson").read_bytes() == b'{"gene":{"gene_id":"1"}}\n'


def test_a_server_that_answers_nothing_found_to_everything_is_an_error_not_a_done(
        tmp_path: Path) -> None:
    """200 ``{}`` for every request, TP53 included: the CLI stops with exit 1, and verify
    does not certify the directory (attacker trial: exit 0, 396 'missing', verify ok)."""
    from aiohttp import web
    from hostile import HostileServer

    async def nothing(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{}", content_type="application/json")

    source = write_ids(tmp_path / "ids.txt", [7157, 672, 100])
    out = tmp_path / "out"
    with HostileServer(nothing) as server:
        result = invoke_cli("fetch", str(source), "--out", str(out), "--rate", "100",
                            env=cli_env(server.base_url))
    assert result.returncode == 1, result.stderr.decode()
    assert b"finds nothing for a whole batch" in result.stderr
    assert invoke_cli("verify", str(out)).returncode != 0
