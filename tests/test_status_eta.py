"""status's total, pending and ETA, and the progress line's speed: only committed IDs count (#12)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import EmulatorFactory, invoke_cli, make_config, write_ids

import bulkgene
from bulkgene.cli.progress import ProgressReporter
from bulkgene.config import RetryPolicy
from bulkgene.errors import BulkgeneError
from bulkgene.model import Snapshot, Summary
from bulkgene.output.lock import RunLock
from bulkgene.testing import EmulatorThread

_IDS = range(1, 201)
class _Recorder(ProgressReporter):
    """Every snapshot the run reports; with ``stop_after`` commits, SIGTERM to itself once."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__(None, 0.001)
        self.snapshots: list[Snapshot] = []
        self.stop_after = stop_after

    def update(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)
        if self.stop_after is not None and snapshot.batches_done >= self.stop_after:
            self.stop_after = None
            os.kill(os.getpid(), signal.SIGTERM)  # as a user's kill would: a graceful stop


async def _fetch(make_emulator: EmulatorFactory, out: Path, faults: dict[str, float],
                 recorder: _Recorder, emulator: EmulatorThread | None = None) -> Summary:
    """A run into ``out``, on a new emulator with ``faults`` (or ``emulator``, its faults
    now ``faults``: a directory resumes only against the server that filled it)."""
    if emulator is None:
        emulator = make_emulator(faults=faults, seed=1)  # its first draw is a fault: one fails
    else:
        emulator.state.config.faults = faults
    source = write_ids(out.parent / "ids.txt", _IDS)
    config = make_config([str(source)], out, base_url=emulator.base_url,
                         requests_per_second=100.0, batch_size=10, concurrency=2,
                         retry=RetryPolicy(max_attempts=1),
                         progress_interval_s=recorder.tick_s)
    try:
        return await bulkgene.download(config, handle_signals=True,
                                       on_progress=recorder.update)
    except BulkgeneError as exc:  # exit 3, batches failed: the account is still there
        assert exc.summary is not None
        return exc.summary


def _status(out: Path) -> dict[str, Any]:
    shown = invoke_cli("status", str(out), "--json")
    assert shown.returncode == 0, shown.stderr.decode()
    task: dict[str, Any] = json.loads(shown.stdout)["tasks"][0]
    return task


def _assert_eta_from_committed_ids(task: dict[str, Any]) -> None:
    """ids_per_s is committed found + missing IDs over elapsed; ETA is pending at that rate."""
    committed = task["found"] + task["missing"] + task["unverified"]
    elapsed_s = task["latest_run_elapsed_s"]
    assert task["pending_ids"] == task["requested"] - committed - task["failed_ids"] > 0
    # elapsed_s is rounded to 1 ms and ids_per_s to 0.1: that much slack, no more
    slack = committed * 0.0005 / elapsed_s ** 2 + 0.05
    assert task["latest_run_ids_per_s"] == pytest.approx(committed / elapsed_s, abs=slack)
    assert abs(task["latest_run_ids_per_s"] - (committed + task["failed_ids"]) / elapsed_s) > slack, \
        "failed IDs are not speed"
    rounding_s = 0.05 + task["pending_ids"] * 0.05 / task["latest_run_ids_per_s"] ** 2 + 1e-9
    assert task["eta_s"] == pytest.approx(task["pending_ids"] / task["latest_run_ids_per_s"], abs=rounding_s)


async def test_a_running_runs_eta_is_pending_over_its_committed_rate(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = await _fetch(make_emulator, out, {"http_503": 0.3}, _Recorder(stop_after=3))
    assert summary.interrupted and summary.failed > 0 and summary.pending > 0
    lock = RunLock(out)  # this process holds the run's lock: status sees it running
    lock.acquire()
    try:
        task = _status(out)
    finally:
        lock.release()
    assert task["running"] and task["requested"] == len(_IDS)
    assert task["failed_ids"] == summary.failed
    _assert_eta_from_committed_ids(task)


async def test_an_interrupted_run_shows_pending_and_an_eta(make_emulator: EmulatorFactory,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = await _fetch(make_emulator, out, {"http_503": 0.3}, _Recorder(stop_after=3))
    assert summary.interrupted and summary.pending > 0
    task = _status(out)
    assert not task["running"] and task["pending_ids"] == summary.pending
    _assert_eta_from_committed_ids(task)
    table = invoke_cli("status", str(out)).stdout.decode()
    eta_column = table.splitlines()[0].split().index("ETA")
    assert table.splitlines()[1].split()[eta_column] != "-"


async def test_failed_ids_are_not_speed(make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    out = tmp_path / "out"
    recorder = _Recorder()
    summary = await _fetch(make_emulator, out, {"http_503": 1.0}, recorder)
    assert summary.failed == len(_IDS) and summary.found == summary.missing == 0
    assert recorder.snapshots and all(s.ids_per_s == 0 and s.ids_done == 0 and s.eta_s is None
                                      for s in recorder.snapshots)
    for running in (False, True):
        lock = RunLock(out)
        if running:
            lock.acquire()
        try:
            task = _status(out)
        finally:
            if running:
                lock.release()
        assert task["running"] is running
        assert task["failed_ids"] == len(_IDS) and task["pending_ids"] == 0
        assert task["latest_run_ids_per_s"] == 0 and task["eta_s"] is None


async def test_the_progress_lines_speed_counts_only_committed_found_and_missing(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _Recorder(stop_after=3)
    emulator = make_emulator(faults={"http_503": 0.3}, seed=1)
    summary = await _fetch(make_emulator, out, {"http_503": 0.3}, first, emulator)
    assert summary.failed > 0 and summary.pending > 0
    last = first.snapshots[-1]
    assert last.ids_done == summary.found + summary.missing + summary.unverified
    assert last.ids_per_s * last.elapsed_s == pytest.approx(last.ids_done)
    resumed = _Recorder()  # the re-run retries the failed batches and finishes the rest
    done_before = last.ids_done
    final = await _fetch(make_emulator, out, {}, resumed, emulator)
    assert final.found + final.missing == len(_IDS) and final.failed == 0
    end = resumed.snapshots[-1]
    assert end.ids_done == len(_IDS)
    assert end.ids_per_s * end.elapsed_s == pytest.approx(len(_IDS) - done_before), \
        "this run's speed: the IDs committed before it are not counted again"
    assert all(s.ids_per_s * s.elapsed_s == pytest.approx(s.ids_done - done_before)
               for s in resumed.snapshots)


def test_status_says_starting_while_a_run_holds_the_lock_before_its_checkpoint(
        tmp_path: Path) -> None:
    lock = RunLock(tmp_path)  # a run's first moments: locked, its input still being read
    lock.acquire()
    try:
        shown = invoke_cli("status", str(tmp_path))
        as_json = invoke_cli("status", str(tmp_path), "--json")
    finally:
        lock.release()
    assert shown.returncode == 0, shown.stderr.decode()
    assert b"holds no bulkgene run" not in shown.stderr + shown.stdout
    assert b"starting" in shown.stdout
    assert json.loads(as_json.stdout)["tasks"][0]["starting"] is True
