"""Signals while the gene history is downloaded or read: exit 75, saying what stopped, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import EmulatorFactory, cli_command, cli_env, invoke_cli, write_ids

from bulkgene.history.cache import CacheEntry
from bulkgene.testing import EmulatorThread

EXPLAINED_HEADER = b"gene_id\treason\thistory\tcurrent_gene_id\tdiscontinued_on\tsymbol\ttax_id\n"


def env_for(emulator: EmulatorThread, tmp_path: Path) -> dict[str, str]:
    return cli_env(emulator.base_url, BULKGENE_HISTORY=emulator.history_url,
                   BULKGENE_CACHE_DIR=str(tmp_path / "cache"))


def wait_for(condition: object, process: subprocess.Popen[bytes], what: str) -> None:
    """Until ``condition()`` holds, the process still running (progress, not time)."""
    assert callable(condition)
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, f"it ended before {what}"
        assert time.monotonic() < deadline, f"no progress: never {what}"
        time.sleep(0.01)


@pytest.mark.parametrize(("command", "signum"), [
    ("fetch", signal.SIGTERM),
    pytest.param("fetch", signal.SIGINT, marks=pytest.mark.slow),
    pytest.param("fetch", signal.SIGHUP, marks=pytest.mark.slow),
    ("explain", signal.SIGTERM),
    pytest.param("explain", signal.SIGINT, marks=pytest.mark.slow),
])
@pytest.mark.slow
def test_a_signal_during_the_history_download_exits_75_and_the_next_run_resumes_it(
        make_emulator: EmulatorFactory, tmp_path: Path, command: str,
        signum: signal.Signals) -> None:
    # a slow body (16 KiB every 50 ms), signalled once part of it is on disk
    emulator = make_emulator(history_chunk_bytes=16 << 10, history_chunk_delay_s=0.05)
    env = env_for(emulator, tmp_path)
    ids = write_ids(tmp_path / "ids.txt", range(1, 300))
    out = tmp_path / "genes"
    fetch = ("fetch", str(ids), "--out", str(out), "--rate", "1000")
    if command == "explain":
        assert invoke_cli(*fetch, env=env).returncode == 0
        args: tuple[str, ...] = ("explain", str(out))
    else:
        args = (*fetch, "--explain")
    part = CacheEntry(tmp_path / "cache", emulator.history_url).part
    process = subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    wait_for(lambda: part.exists() and part.stat().st_size >= 32 << 10, process,
             "downloading the history")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    text = stderr.decode()
    assert process.returncode == 75, text
    assert (f"{signum.name} while the gene history was being downloaded from "
            f"{emulator.history_url}") in text
    assert "had arrived, and are kept in the cache" in text
    assert "no report was changed, and running the same command again resumes the download" \
        in text
    assert ("the fetch is complete; " in text) == (command == "fetch")
    assert "Traceback" not in text and "Aborted" not in text
    kept = part.stat().st_size
    assert kept >= 32 << 10
    assert not (out / "missing.tsv").read_bytes().startswith(EXPLAINED_HEADER)
    again = invoke_cli(*args, env=env)
    assert again.returncode == 0, again.stderr.decode()
    assert b"downloaded (resumed)" in again.stderr
    assert emulator.state.history_requests()[-1].range == f"bytes={kept}-"
    assert (out / "missing.tsv").read_bytes().startswith(EXPLAINED_HEADER)


def _reading(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open and has read into it (its offset, in
    /proc: the reading is observed, not timed)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        for fd in fds.iterdir():
            if os.readlink(fd) == str(path):
                info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
                return int(info.split("pos:")[1].split()[0]) > 0
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return False


@pytest.mark.slow  # writes a 2-million-row history to read
@pytest.mark.parametrize("command", ["fetch", "explain"])
def test_a_signal_while_the_history_is_read_exits_75_with_nothing_changed(
        emulator: EmulatorThread, tmp_path: Path, command: str) -> None:
    history = tmp_path / "gene_history"  # plain text: read 1 MiB at a time, seconds in all
    with history.open("wb") as handle:
        handle.write(b"#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\t"
                     b"Discontinue_Date\n")
        for start in range(2_000_000, 4_000_000, 100_000):
            handle.write(b"".join(b"9606\t-\t%d\tSYM%d\t20050510\n" % (g, g)
                                  for g in range(start, start + 100_000)))
    env = env_for(emulator, tmp_path)
    ids = write_ids(tmp_path / "ids.txt", range(1, 300))
    out = tmp_path / "genes"
    fetch = ("fetch", str(ids), "--out", str(out), "--rate", "1000")
    if command == "explain":
        assert invoke_cli(*fetch, env=env).returncode == 0
        args: tuple[str, ...] = ("explain", str(out), "--history", str(history))
    else:
        args = (*fetch, "--explain", "--history", str(history))
    process = subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    wait_for(lambda: _reading(process.pid, history), process, "reading the history")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    text = stderr.decode()
    assert process.returncode == 75, text
    assert ("SIGTERM while the gene history was being read: no report was changed; running "
            "the same command again explains every report") in text
    assert not (out / "missing.tsv").read_bytes().startswith(EXPLAINED_HEADER)
    again = invoke_cli(*args, env=env)
    assert again.returncode == 0, again.stderr.decode()
    assert (out / "missing.tsv").read_bytes().startswith(EXPLAINED_HEADER)
