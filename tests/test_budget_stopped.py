"""A run stopped (SIGSTOP, Ctrl-Z) while another shares its key: no request until it is let in again."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import EmulatorFactory, assert_key_budget_kept, cli_command, cli_env, write_ids

from bulkgene.budget import list_leases
from bulkgene.errors import CorruptCheckpoint
from bulkgene.output import checkpoint as ckpt

KEY = "0123456789abcdef0123456789abcdef0a1b"


def _wait(condition: Callable[[], bool], what: str, deadline_s: float = 120.0) -> None:
    give_up = time.monotonic() + deadline_s  # a hang guard: progress is what is waited for
    while not condition():
        assert time.monotonic() < give_up, f"never saw {what}"
        time.sleep(0.05)


def _committed(out: Path) -> int:
    with contextlib.suppress(CorruptCheckpoint, FileNotFoundError):
        state = ckpt.load(out)
        return state.committed_batches if state else 0
    return 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_stopped_run_sends_nothing_until_it_is_let_in_again(make_emulator: EmulatorFactory,
                                                               tmp_path: Path) -> None:
    """At each SIGCONT the stopped run sent 1-2 requests while the other already ran at 10/s:
    11-12 in one second, a 429 each time, and its log blamed the filesystem."""
    emulator = make_emulator(keyed_requests_per_second=10.0, latency_s=0.01)
    budget = tmp_path / "budget"
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    runs = []
    for name, first, count in (("A", 1, 900), ("B", 100_001, 4000)):  # B outlasts A's stops
        source = write_ids(tmp_path / f"{name}.txt", range(first, first + count))
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen(cli_command("fetch", str(source), "--out",
                                               str(tmp_path / name), "--batch-size", "10",
                                               "--budget-dir", str(budget), "--no-progress"),
                                   env=env, stdout=subprocess.DEVNULL, stderr=log)
        runs.append((process, log, tmp_path / name))
    (stopped, _, out_a), (other, _, out_b) = runs
    try:
        _wait(lambda: _committed(out_a) >= 2 and _committed(out_b) >= 2, "both running")
        for _ in range(2):
            stopped.send_signal(signal.SIGSTOP)
            # held until the other counts it gone and takes the whole budget
            _wait(lambda: other.poll() is not None or any(
                view.record.pid == other.pid and view.record.share_rps == 10.0
                for view in list_leases(next(budget.glob("*/*")))),
                "the other run taking the whole budget")
            assert other.poll() is None, "the other run must outlast the stop"
            target = _committed(out_a) + 2
            stopped.send_signal(signal.SIGCONT)
            _wait(lambda: _committed(out_a) >= target, "the stopped run going on")  # noqa: B023 - waited for at once
        for process, _, _ in runs:
            assert process.wait(timeout=300) == 0
    finally:
        for process, log, _ in runs:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()
            log.close()
    arrivals = [a for a in emulator.state.arrivals() if a.path.startswith("/datasets/v2/")]
    assert_key_budget_kept(arrivals)
    said = (tmp_path / "A.log").read_text()
    assert "the filesystem does not answer" not in said
    assert "stopped" in said and "SIGSTOP" in said, said
