"""The docs are part of the feature: README commands run as written, tables match the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from helpers import REPO, invoke_cli

from bulkgene.cli.main import main
from bulkgene.errors import (
    EXIT_FAILED_BATCHES,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)

README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(title)
    following = README.find("\n#", start + len(title))
    return README[start:following if following > 0 else len(README)]


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_has_help_with_an_example(name: str) -> None:
    shown = invoke_cli(name, "--help")
    assert shown.returncode == 0
    assert b"Example" in shown.stdout, f"`bulkgene {name} --help` shows no example"
    assert f"bulkgene {name}" in README, f"the README never mentions `bulkgene {name}`"


def test_every_fetch_option_is_in_the_readme_table() -> None:
    fetch = main.commands["fetch"]
    table = _section("## Usage")
    for param in fetch.params:
        if isinstance(param, click.Option):
            longest = max(param.opts, key=len)
            if longest in ("--help", "--api-key", "--api-key-file", "--progress-interval",
                           "--dry-run", "--quiet", "--verbose", "--progress"):
                continue  # described in the table's prose rows
            assert re.search(rf"{re.escape(longest)}\b", table), \
                f"{longest} is missing from the README's options"


def test_the_exit_code_table_is_the_codes_the_code_uses() -> None:
    table = _section("## Resume, crash safety and exit codes")
    codes = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert codes == {EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_FAILED_BATCHES, EXIT_INTERRUPTED}


@pytest.mark.slow
def test_reading_the_output_commands_work_as_written(tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed here; the README's jq command needs it")
    made = invoke_cli("demo", "--out", str(tmp_path / "genes"))
    assert made.returncode == 0, made.stderr.decode()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    lines = [line for block in _code_blocks(_section("### Reading the output"), "sh")
             for line in block.splitlines() if line.strip()]
    assert len(lines) == 3
    for line in lines:
        result = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env,
                                capture_output=True, timeout=120, check=False)
        assert result.returncode == 0, f"{line}\n{result.stderr.decode()}"
        assert result.stdout.strip(), f"{line} printed nothing"
    quick = next(line for line in README.splitlines() if line.startswith("jq -r '.gene |"))
    shown = subprocess.run(["bash", "-c", quick], cwd=tmp_path, env=env, capture_output=True,
                           timeout=60, check=False)
    assert shown.returncode == 0 and shown.stdout.count(b"\n") == 10
    assert invoke_cli("verify", str(tmp_path / "genes")).returncode == 0
