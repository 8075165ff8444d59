"""The command line: help with examples, usage errors, stdin, clear messages instead of tracebacks."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import cli_env, gene_ids_written, invoke_cli, read_summary, write_ids

from bulkgene.cli.main import main
from bulkgene.testing import EmulatorThread

COMMANDS = sorted(main.commands)


def test_every_command_is_listed() -> None:
    assert {"fetch", "emulate"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [[], *[[name] for name in COMMANDS]])
def test_help_shows_an_example(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and "bulkgene " in result.output


def test_out_of_range_option_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke_cli("fetch", "ids.txt", "--out", str(tmp_path / "o"), "--batch-size", "5000")
    assert result.returncode == 2
    assert b"batch-size" in result.stderr


def test_missing_input_file_says_so_without_a_traceback(emulator: EmulatorThread,
                                                        tmp_path: Path) -> None:
    result = invoke_cli("fetch", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"),
                        env=cli_env(emulator.base_url))
    assert result.returncode == 1
    assert b"nope.txt" in result.stderr and b"Traceback" not in result.stderr


def test_ids_from_stdin_and_gzip_files_together(emulator: EmulatorThread, tmp_path: Path) -> None:
    gz = tmp_path / "more.txt.gz"
    gz.write_bytes(gzip.compress(b"672\n3105\n"))
    out = tmp_path / "out"
    result = invoke_cli("fetch", "-", str(gz), "--out", str(out), "--rate", "50",
                        env=cli_env(emulator.base_url), stdin=b"7157\n672\n")
    assert result.returncode == 0, result.stderr.decode()
    assert set(gene_ids_written(out)) == {7157, 672, 3105}
    assert read_summary(out)["duplicates"] == 1
    again = invoke_cli("fetch", "-", str(gz), "--out", str(out), "--rate", "50",
                       env=cli_env(emulator.base_url), stdin=b"7157\n672\n")
    assert again.returncode == 0, "the same stdin resumes"
    other = invoke_cli("fetch", "-", str(gz), "--out", str(out), "--rate", "50",
                       env=cli_env(emulator.base_url), stdin=b"59067\n")
    assert other.returncode == 1 and b"--restart" in other.stderr


def test_final_line_on_stderr_reconciles(emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157, 672, 7157])
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--rate", "50",
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0
    assert b"requested 2 = found 2 + missing 0 + failed 0" in result.stderr


def test_wrong_base_url_is_a_clear_fatal_error(emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157])
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"),
                        "--retry-wait", "0", "--rate", "1000",  # the 404s are retried first
                        env=cli_env(emulator.root_url + "/wrong/v9"))
    assert result.returncode == 1
    assert b"--base-url" in result.stderr and b"Traceback" not in result.stderr


def test_a_different_stdin_is_refused_and_the_old_copy_kept(emulator: EmulatorThread,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = invoke_cli("fetch", "-", "--out", str(out), env=cli_env(emulator.base_url),
                       stdin=b"7157\n672\n")
    assert first.returncode == 0
    refused = invoke_cli("fetch", "-", "--out", str(out), env=cli_env(emulator.base_url),
                         stdin=b"3105\n")
    assert refused.returncode == 1
    assert (out / "stdin.spool").read_bytes() == b"7157\n672\n"
    assert not (out / "stdin.spool.new").exists()


@pytest.mark.parametrize("command", ["verify", "status"])
def test_a_directory_that_is_not_there_is_named_as_such(tmp_path: Path, command: str) -> None:
    """`verify /nonexistent` ended with advice to re-run the fetch."""
    result = invoke_cli(command, str(tmp_path / "nope"))
    assert result.returncode == 1
    assert b"does not exist" in result.stderr and b"re-running" not in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke_cli(command, str(empty))
    assert result.returncode == 1
    assert b"no bulkgene run" in result.stderr and b"re-running" not in result.stderr
