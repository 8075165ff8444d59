"""Inputs that can be read once (stdin, <(zcat ids.gz), a FIFO) are copied into --out once."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import EmulatorFactory, cli_command, cli_env, gene_ids_written, invoke_cli

from bulkgene.testing import EmulatorThread


def _bash(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, timeout=120,
                          check=False)


def _printed_command(stderr: bytes) -> list[str]:
    match = re.search(rb"^\s+bulkgene (fetch .*)$", stderr, re.MULTILINE)
    assert match is not None, stderr.decode()
    return shlex.split(match.group(1).decode())


@pytest.mark.slow
def test_process_substitution_is_read_whole(emulator: EmulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "out"
    fetch = shlex.join(cli_command("fetch"))
    result = _bash(f"{fetch} <(printf '7157\\n672\\n') --out {shlex.quote(str(out))}",
                   cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    assert set(gene_ids_written(out)) == {7157, 672}
    assert (out / "input-1.spool").read_bytes() == b"7157\n672\n"


def test_a_named_fifo_is_read_once_without_hanging(emulator: EmulatorThread,
                                                   tmp_path: Path) -> None:
    fifo = tmp_path / "ids.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as handle:  # blocks until bulkgene opens it, once
            handle.write(b"7157\n3105\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(fifo), "--out", str(out), env=cli_env(emulator.base_url),
                     timeout=60)
    writer.join()
    assert result.returncode == 0, result.stderr.decode()
    assert set(gene_ids_written(out)) == {7157, 3105}


def test_the_resume_command_after_piped_input_names_the_copy(make_emulator: EmulatorFactory,
                                                             tmp_path: Path) -> None:
    emulator = make_emulator()  # the server that fills a directory is the one it resumes on
    emulator.state.outage_status = 503
    out = tmp_path / "out"
    first = invoke_cli("fetch", "-", "--out", str(out), "--max-attempts", "1",
                    env=cli_env(emulator.base_url), stdin=b"7157\n672\n")
    assert first.returncode == 3, first.stderr.decode()
    command = _printed_command(first.stderr)
    assert command[:2] == ["fetch", str(out / "stdin.spool")]
    emulator.state.outage_status = None
    again = invoke_cli(*command, env=cli_env(emulator.base_url))  # nothing piped this time
    assert again.returncode == 0, again.stderr.decode()
    assert set(gene_ids_written(out)) == {7157, 672}


@pytest.mark.slow
def test_the_resume_command_after_process_substitution_names_the_copy(make_emulator: EmulatorFactory,
                                                                      tmp_path: Path) -> None:
    emulator = make_emulator()  # the server that fills a directory is the one it resumes on
    emulator.state.outage_status = 503
    good = tmp_path / "good.txt"
    good.write_text("3105\n")
    out = tmp_path / "out"
    fetch = shlex.join(cli_command("fetch"))
    first = _bash(f"{fetch} --max-attempts 1 {shlex.quote(str(good))} <(printf '7157\\n') "
                  f"-o {shlex.quote(str(out))}", cli_env(emulator.base_url))
    assert first.returncode == 3, first.stderr.decode()
    command = _printed_command(first.stderr)
    assert command == ["fetch", "--max-attempts", "1", str(good), str(out / "input-2.spool"),
                       "-o", str(out)]
    emulator.state.outage_status = None
    again = invoke_cli(*command, env=cli_env(emulator.base_url))
    assert again.returncode == 0, again.stderr.decode()
    assert set(gene_ids_written(out)) == {7157, 3105}
