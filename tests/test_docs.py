"""The docs are part of the feature: tables match the code (commands: test_readme_commands.py)."""

from __future__ import annotations

import re

import click
import pytest
from helpers import REPO, invoke_cli

from bulkgene.cli.main import main
from bulkgene.cli.reference import render
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


def test_the_cli_reference_is_what_the_commands_say() -> None:
    assert (REPO / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md differs from the commands' --help: run "
        "`python -m bulkgene.cli.reference > docs/cli.md`")


def test_every_fetch_option_is_in_the_cli_reference() -> None:
    reference = (REPO / "docs" / "cli.md").read_text()
    for param in main.commands["fetch"].params:
        if isinstance(param, click.Option) and "--help" not in param.opts:
            longest = max(param.opts, key=len)
            assert re.search(rf"{re.escape(longest)}\b", reference), longest


def test_every_option_the_readme_names_exists() -> None:
    """The README's short table may not name an option the CLI doesn't have."""
    table = _section("## Usage")
    known = {"--help", "-vv"} | {opt for command in main.commands.values()
                                 for param in command.params if isinstance(param, click.Option)
                                 for opt in [*param.opts, *param.secondary_opts]}
    named = set(re.findall(r"`(--?[a-z][a-z-]*)", table))
    assert named <= known, named - known


def test_the_exit_code_table_is_the_codes_the_code_uses() -> None:
    table = _section("## Resume, crash safety and exit codes")
    codes = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert codes == {EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_FAILED_BATCHES, EXIT_INTERRUPTED}


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings (lower case, punctuation dropped, spaces
    to hyphens; a repeated heading gets -1, -2, ...)."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        number = 0
        while (f"{slug}-{number}" if number else slug) in anchors:
            number += 1
        anchors.add(f"{slug}-{number}" if number else slug)
    return anchors


def test_every_link_to_a_section_of_another_page_finds_it() -> None:
    pages = [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "bench" / "README.md",
             *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
            if target.startswith(("http:", "https:")):
                continue
            linked = (page.parent / target).resolve() if target else page
            if not linked.exists() or anchor not in _anchors(linked.read_text()):
                broken.append(f"{page.relative_to(REPO)}: {target}#{anchor}")
    assert not broken, broken
