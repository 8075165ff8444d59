"""The run lock: many simultaneous starts give exactly one holder; only provably stale locks are broken."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    EmulatorFactory,
    assert_complete_output,
    cli_command,
    cli_env,
    expected_for,
    run_cli,
)

from bulkgene.errors import StateError
from bulkgene.layout import LOCK_NAME
from bulkgene.output.lock import RunLock, read_lock
from bulkgene.testing import EmulatorThread

NO_SUCH_PID = 2**22 + 1  # above Linux's largest pid_max
CONTENDERS = 20
ROUNDS = 10

# the code is on the command line, so /proc/<pid>/cmdline says "bulkgene" as a real run's does
CONTENDER = r"""
import sys
from pathlib import Path
from bulkgene.errors import StateError
from bulkgene.output.lock import RunLock
directory = Path(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "go":
        break
    lock = RunLock(directory)
    try:
        lock.acquire()
    except StateError as exc:
        print("lost " + " ".join(str(exc).split()), flush=True)
    else:
        print("won", flush=True)
    sys.stdin.readline()  # hold the lock until every contender has answered
    lock.release()
    print("released", flush=True)
"""


def _write_lock(directory: Path, content: bytes) -> None:
    tmp = directory / "lock-being-planted"
    tmp.write_bytes(content)
    tmp.rename(directory / LOCK_NAME)  # appears whole, as a crashed run's would


def _stale_record() -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": NO_SUCH_PID}).encode()


@pytest.mark.slow
def test_simultaneous_starts_give_exactly_one_holder(tmp_path: Path) -> None:
    """Every round, 20 processes released together try the lock; odd rounds over a stale one."""
    directory = tmp_path
    processes = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(directory)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                 for _ in range(CONTENDERS)]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        for round_number in range(ROUNDS):
            if round_number % 2:
                _write_lock(directory, _stale_record())
            for process in processes:  # the barrier: every contender is waiting on stdin
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                process.stdin.flush()
            answers: dict[int, str] = {}
            for process in processes:
                assert process.stdout is not None
                answers[process.pid] = process.stdout.readline().decode().strip()
            winners = [pid for pid, answer in answers.items() if answer == "won"]
            assert len(winners) == 1, f"round {round_number}: {len(winners)} holders: {answers}"
            holder = read_lock(directory)
            assert holder is not None and holder.pid == winners[0]
            for pid, answer in answers.items():
                if pid != winners[0]:
                    assert f"pid {winners[0]} on {socket.gethostname()}" in answer, answer
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"end\n")
                process.stdin.flush()
            for process in processes:
                assert process.stdout is not None and process.stdout.readline() == b"released\n"
            assert not (directory / LOCK_NAME).exists()
    finally:
        for process in processes:
            process.kill()
            process.communicate()
    leftovers = sorted(p.name for p in directory.iterdir())
    assert leftovers == [], leftovers


def test_a_dead_process_lock_on_this_host_is_taken_over(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    _write_lock(tmp_path, _stale_record())
    lock = RunLock(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        lock.acquire()
    assert f"stale lock of pid {NO_SUCH_PID}" in caplog.text
    holder = read_lock(tmp_path)
    assert holder is not None and holder.pid == os.getpid()
    lock.release()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b'{"host": "', b'{"host": "h"}', b"[1, 2]",
                                     b'{"host": "h", "pid": "12"}'],
                         ids=["empty", "torn", "no-pid", "not-an-object", "pid-text"])
def test_an_incomplete_lock_is_never_taken_for_stale(tmp_path: Path, content: bytes) -> None:
    _write_lock(tmp_path, content)
    with pytest.raises(StateError, match=r"bulkgene.lock is incomplete \(") as raised:
        RunLock(tmp_path).acquire()
    assert f"delete {tmp_path / LOCK_NAME}" in str(raised.value)
    assert (tmp_path / LOCK_NAME).read_bytes() == content


def test_a_lock_from_another_host_is_left_alone(tmp_path: Path) -> None:
    content = json.dumps({"host": "some-other-node", "pid": NO_SUCH_PID}).encode()
    _write_lock(tmp_path, content)
    with pytest.raises(StateError, match="can't check"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).read_bytes() == content


def test_release_leaves_a_lock_that_is_not_ours(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    lock.acquire()
    (tmp_path / LOCK_NAME).unlink()  # removed by hand, and someone else took the directory
    content = json.dumps({"host": socket.gethostname(), "pid": 1}).encode()
    _write_lock(tmp_path, content)
    lock.release()
    assert (tmp_path / LOCK_NAME).read_bytes() == content


def test_a_symlinked_lock_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(StateError, match="symbolic link"):
        RunLock(out).acquire()
    assert victim.read_bytes() == b"precious"


def _exited(processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    while True:  # the holder blocks on its stdin, so only the refused one can exit
        for process in processes:
            if process.poll() is not None:
                return process
        time.sleep(0.01)


@pytest.mark.slow
def test_two_resumes_started_together_one_proceeds(make_emulator: EmulatorFactory,
                                                   tmp_path: Path) -> None:
    emulator = make_emulator(faults={"http_503": 0.3}, seed=3)
    ids = range(1, 1001)
    source = "".join(f"{gene_id}\n" for gene_id in ids).encode()
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    args = ["fetch", "-", "--out", str(out), "--batch-size", "50", "--page-size", "1000",
            "--max-attempts", "1", "--shards", "3"]
    first = run_cli(*args, env=env, stdin=source)
    assert first.returncode == 3, first.stderr.decode()  # a partial run to resume
    emulator.state.config.faults.clear()
    # both take the lock (or fail to) before reading their input from stdin
    resumes = [subprocess.Popen(cli_command(*args), env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for _ in range(2)]
    try:
        refused = _exited(resumes)
        holder = next(p for p in resumes if p is not refused)
        _, refused_err = refused.communicate(timeout=60)
        assert refused.returncode == 1, refused_err.decode()
        assert f"pid {holder.pid} on {socket.gethostname()}".encode() in refused_err
        _, holder_err = holder.communicate(source, timeout=120)
        assert holder.returncode == 0, holder_err.decode()
    finally:
        for process in resumes:
            process.kill()
            process.communicate()
    assert_complete_output(out, expected_for(emulator.state.universe, ids))
    assert not (out / LOCK_NAME).exists()


# a script or notebook: nothing on its command line says "bulkgene"
LIBRARY_RUN = r"""
import asyncio
import sys
from pathlib import Path

import bulkgene

config = bulkgene.DownloadConfig(
    inputs=(sys.argv[1],), out_dir=Path(sys.argv[2]),
    output=bulkgene.OutputSpec(batch_size=10),
    network=bulkgene.NetworkSpec(base_url=sys.argv[3], requests_per_second=1000.0))
summary = asyncio.run(bulkgene.download(config))
print(summary.exit_code, flush=True)
"""


@pytest.mark.slow
def test_the_cli_never_breaks_the_lock_of_a_live_library_run(emulator: EmulatorThread,
                                                              tmp_path: Path) -> None:
    """A script's download() has no 'bulkgene' in its command line: the CLI took its lock
    for stale and wrote 945 GeneIDs a second time."""
    ids = range(1, 201)
    fifo = tmp_path / "ids.fifo"  # the library run holds its lock while it waits for its input
    os.mkfifo(fifo)
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{gene_id}\n" for gene_id in ids))
    out = tmp_path / "out"
    script = tmp_path / "analysis.py"
    script.write_text(LIBRARY_RUN)
    library = subprocess.Popen([sys.executable, str(script), str(fifo), str(out),
                                emulator.base_url], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=cli_env(emulator.base_url))
    try:
        assert b"bulkgene" not in Path(f"/proc/{library.pid}/cmdline").read_bytes()
        deadline = time.monotonic() + 60  # a hang guard: the lock file is what is waited for
        while read_lock(out) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        held = (out / LOCK_NAME).read_bytes()
        cli = run_cli("fetch", str(source), "--out", str(out), "--batch-size", "10",
                      env=cli_env(emulator.base_url))
        assert cli.returncode == 1, cli.stderr.decode()
        assert f"pid {library.pid} on {socket.gethostname()}".encode() in cli.stderr
        assert (out / LOCK_NAME).read_bytes() == held
        with open(fifo, "wb") as feed:
            feed.write(source.read_bytes())
        stdout, stderr = library.communicate(timeout=120)
    finally:
        library.kill()
        library.wait()
    assert library.returncode == 0 and stdout.strip() == b"0", stderr.decode()
    assert_complete_output(out, expected_for(emulator.state.universe, ids))


def test_a_lock_whose_holder_lives_is_never_broken_even_if_it_is_no_bulkgene(
        tmp_path: Path) -> None:
    """A live pid in an older lock (no run-long flock to ask) is taken at its word."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        content = json.dumps({"host": socket.gethostname(), "pid": sleeper.pid}).encode()
        _write_lock(tmp_path, content)
        with pytest.raises(StateError, match=f"pid {sleeper.pid}"):
            RunLock(tmp_path).acquire()
        assert (tmp_path / LOCK_NAME).read_bytes() == content
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lock_naming_a_recycled_pid_is_stale_when_its_flock_is_free(tmp_path: Path) -> None:
    """A lock written by a run that held its flock names a pid now used by another program:
    nobody holds the flock, so that run is gone."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(tmp_path, json.dumps({"host": socket.gethostname(), "pid": sleeper.pid,
                                          "flock": True}).encode())
        lock = RunLock(tmp_path)
        lock.acquire()
        holder = read_lock(tmp_path)
        assert holder is not None and holder.pid == os.getpid()
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait()
