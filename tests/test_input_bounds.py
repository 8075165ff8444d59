"""Endless or huge inputs are bounded: devices refused, spools cut and stoppable, key files small."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import cli_command, cli_env, gene_ids_written, invoke_cli, small_filesystem

from bulkgene.errors import EXIT_INTERRUPTED
from bulkgene.testing import EmulatorThread


def _limit_memory() -> None:  # so that reading /dev/zero whole fails fast instead of OOM
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_character_device_is_refused_as_input(tmp_path: Path, dry_run: bool) -> None:
    """`fetch /dev/zero` spooled 54 GB in 60 s."""
    out = tmp_path / "out"
    args = ["fetch", "/dev/zero", "--out", str(out), *(["--dry-run"] if dry_run else [])]
    result = subprocess.run(cli_command(*args, "--rate", "1000"), capture_output=True,
                            timeout=60, check=False, env=cli_env("http://127.0.0.1:9/x"),
                            preexec_fn=_limit_memory)
    assert result.returncode == 1, result.stderr.decode()
    assert b"character device" in result.stderr and b"Traceback" not in result.stderr
    assert not out.exists()


def test_stdin_from_a_character_device_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open("/dev/zero", "rb") as zero:
        result = subprocess.run(cli_command("fetch", "-", "--out", str(out), "--rate", "1000"),
                                stdin=zero, capture_output=True, timeout=60, check=False,
                                env=cli_env("http://127.0.0.1:9/x"), preexec_fn=_limit_memory)
    assert result.returncode == 1, result.stderr.decode()
    assert b"character device" in result.stderr and not out.exists()


def test_an_api_key_file_is_read_as_a_small_file(tmp_path: Path) -> None:
    """`--api-key-file /dev/zero` read the whole "file": 23.8 GB RSS, OOM-killed."""
    result = subprocess.run(
        cli_command("fetch", "ids.txt", "--out", str(tmp_path / "out"), "--api-key-file",
                    "/dev/zero"), capture_output=True, timeout=60, check=False,
        preexec_fn=_limit_memory)
    assert result.returncode == 2, result.stderr.decode()
    assert b"--api-key-file" in result.stderr and b"Traceback" not in result.stderr
    big = tmp_path / "key"
    big.write_bytes(b"k" * 100_000)
    result = invoke_cli("fetch", "ids.txt", "--out", str(tmp_path / "out"), "--api-key-file",
                        str(big))
    assert result.returncode == 2 and b"too big" in result.stderr


def test_a_line_of_megabytes_is_a_reject_without_being_copied_whole(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = b"7157\n" + b"x" * (8 << 20) + b"\n672\n"
    result = invoke_cli("fetch", "-", "--out", str(out), stdin=data,
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    assert set(gene_ids_written(out)) == {7157, 672}
    assert (out / "stdin.spool").stat().st_size < 2 << 20
    (reject,) = (out / "rejects.tsv").read_text().splitlines()[1:]
    assert reject.split("\t")[1] == "2" and reject.endswith("LINE_TOO_LONG")


def _start(tmp_path: Path, out: Path) -> subprocess.Popen[bytes]:
    """A fetch of stdin from a pipe this test holds open; its stderr goes to a file."""
    with (tmp_path / "stderr").open("wb") as stderr:  # the child keeps its own copy
        return subprocess.Popen(cli_command("fetch", "-", "--out", str(out), "--rate", "1000"),
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                env=cli_env("http://127.0.0.1:9/x"))


def _stop(process: subprocess.Popen[bytes], tmp_path: Path, timeout_s: float = 60) -> bytes:
    """Wait for the process (killing it if it outlives ``timeout_s``) and return its stderr."""
    try:
        process.wait(timeout=timeout_s)
    finally:
        process.kill()
        process.wait()
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
    return (tmp_path / "stderr").read_bytes()


def _endless(process: subprocess.Popen[bytes], line: bytes) -> threading.Thread:
    def feed() -> None:
        block = line * (65536 // len(line))
        assert process.stdin is not None
        try:
            while True:
                process.stdin.write(block)
        except (BrokenPipeError, ValueError, OSError):
            pass

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def _wait_for(path: Path, size: int, process: subprocess.Popen[bytes]) -> None:
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up and process.poll() is None:
        if path.exists() and path.stat().st_size >= size:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {size} bytes")


@pytest.mark.parametrize("line", [b"7157\n", b"\x00"])
@pytest.mark.slow
def test_sigterm_stops_a_spool_of_an_endless_pipe(tmp_path: Path, line: bytes) -> None:
    """SIGTERM was deferred to the end of the input: never, for an endless one."""
    out = tmp_path / "out"
    process = _start(tmp_path, out)
    feeder = _endless(process, line)
    try:
        _wait_for(out / "stdin.spool.new", 1, process)
        process.send_signal(signal.SIGTERM)
    finally:
        stderr = _stop(process, tmp_path)
    feeder.join(timeout=10)
    assert process.returncode == EXIT_INTERRUPTED, stderr.decode()
    assert b"Traceback" not in stderr and b"run the same command again" in stderr
    assert not out.exists()  # nothing of the copy left behind


def test_an_idle_pipe_is_stoppable_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = _start(tmp_path, out)  # nothing is ever written to its stdin, nor closed
    try:
        _wait_for(out / "stdin.spool.new", 0, process)
        process.send_signal(signal.SIGTERM)
    finally:
        stderr = _stop(process, tmp_path)
    assert process.returncode == EXIT_INTERRUPTED, stderr.decode()
    assert not out.exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "small", "16m") as mount:
        yield mount


def test_a_spool_stops_before_the_disk_is_full(small_disk: Path) -> None:
    out = small_disk / "out"
    process = _start(small_disk.parent, out)
    feeder = _endless(process, b"7157\n")
    stderr = _stop(process, small_disk.parent, timeout_s=120)
    feeder.join(timeout=10)
    assert process.returncode == 1, stderr.decode()
    assert b"free" in stderr and b"Traceback" not in stderr
    assert not out.exists()
    free = os.statvfs(small_disk)
    assert free.f_bavail * free.f_frsize > 1 << 20  # room left for everyone else

