"""The docs are part of the feature: tables match the code (commands: test_readme_commands.py)."""

from __future__ import annotations

import re

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
