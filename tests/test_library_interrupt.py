"""Ctrl-C stops bulkgene.fetch as it stops the CLI: commit, release the lock, KeyboardInterrupt.

Real SIGINTs to real processes: a plain script, and a script whose fetch runs inside a
running event loop (asyncio.run(main()) calling fetch: the download then runs in a worker
thread with a loop of its own, as in Jupyter). The first Ctrl-C lets in-flight batches
finish; a second drops them at once. Either way the process ends with KeyboardInterrupt,
nothing committed is lost, and running the same fetch again finishes the list exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from helpers import (
    EmulatorFactory,
    assert_complete_output,
    expected_for,
    invoke_cli,
    served,
    wait_for_commits,
)

import bulkgene

IDS = list(range(1, 5001))
BATCHES = 100  # of 50 IDs: far more than a run does between a commit and the stop

SCRIPT = """
import asyncio, sys, bulkgene
def fetch():
    return bulkgene.fetch(list(range(1, 5001)), sys.argv[2], base_url=sys.argv[3], rate=20,
                          batch_size=50, concurrency=2, progress=False)
if sys.argv[1] == "plain":
    fetch()
else:
    async def main():
        return fetch()  # a sync call inside a running loop, as in a notebook cell
    asyncio.run(main())
print("returned")
"""


def _interrupted(out: Path, url: str, mode: str, signals: int) -> subprocess.CompletedProcess[str]:
    """Run the script, Ctrl-C it after two commits (again once it said it heard the first)."""
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, mode, str(out), url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    heard = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            said.append(line)
            if "SIGINT received" in line:
                heard.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        wait_for_commits(out, 2)
        process.send_signal(signal.SIGINT)
        if signals > 1:  # two at once would be one: the second waits for the first's word
            assert heard.wait(120), "".join(said)
            process.send_signal(signal.SIGINT)
        stdout = process.stdout.read() if process.stdout else ""
        process.wait(timeout=120)
    finally:
        process.kill()
        reader.join(timeout=60)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(said))


@pytest.mark.parametrize("mode", ["plain", "in-a-running-loop"])
@pytest.mark.parametrize("signals", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_ctrl_c_stops_fetch_commits_and_raises_keyboard_interrupt(
        make_emulator: EmulatorFactory, tmp_path: Path, mode: str, signals: int) -> None:
    # a slow server: the batches in flight when Ctrl-C comes take a while to finish
    emulator = make_emulator(latency_s=0.5 if signals == 1 else 2.0)
    out = tmp_path / "genes"
    ended = _interrupted(out, emulator.base_url, mode, signals)
    assert ended.returncode in (-signal.SIGINT, 130), ended.stderr
    assert "KeyboardInterrupt: bulkgene.fetch stopped by Ctrl-C" in ended.stderr
    assert "returned" not in ended.stdout
    if signals == 2:
        assert "dropping the batches in flight now" in ended.stderr
    assert not (out / "bulkgene.lock").exists()
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["interrupted"] is True and summary["pending"] > 0
    assert len(served(emulator.state.arrivals())) < BATCHES  # it stopped, it did not finish
    assert bulkgene.open(out, partial=True).summary["running"] == 0
    # the same call again (to the same, now quick, server) finishes the list exactly once
    emulator.state.config.latency_s = 0.0
    quick = emulator
    bulkgene.fetch(IDS, out, base_url=quick.base_url, rate=1000, batch_size=50,
                   progress=False)
    assert_complete_output(out, expected_for(quick.state.universe, IDS))
    assert invoke_cli("verify", str(out)).returncode == 0
