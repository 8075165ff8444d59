"""The command-line reference (docs/cli.md), rendered from the click commands themselves.

    python -m bulkgene.cli.reference > docs/cli.md

Every option, its meaning and its default come from what ``--help`` shows, so no default is
written twice; ``tests/test_docs.py`` fails when docs/cli.md and the commands disagree.
"""

from __future__ import annotations

import re

import click

from bulkgene.cli.main import main

# what click appends to an option's help: [default: …; env var: …; required; 1<=x<=100]
_TRAILER = re.compile(r"\s*\[((?:default|env var): [^\]]*|required|[^\]]*\bx\b[^\]]*)\]\s*$")
_HEADER = """# Command-line reference

Every command and option of `bulkgene`, as `bulkgene COMMAND --help` shows them (this file is
rendered from the commands: `python -m bulkgene.cli.reference > docs/cli.md`). The README
shows the options most runs need.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _split_trailers(help_text: str) -> tuple[str, list[str]]:
    """Help text without click's ``[default: …]``/``[env var: …]`` tails, and those tails."""
    tails: list[str] = []
    while match := _TRAILER.search(help_text):
        tails.insert(0, match.group(1))
        help_text = help_text[:match.start()]
    return help_text, tails


def _option_rows(command: click.Command, context: click.Context) -> list[str]:
    rows = []
    for param in command.get_params(context):
        if isinstance(param, click.Argument):
            required = "required" if param.required else ""
            rows.append(f"| `{param.make_metavar(context)}` | argument | {required} |")
            continue
        record = param.get_help_record(context)
        if record is None or "--help" in param.opts:
            continue
        names, help_text = record
        meaning, tails = _split_trailers(help_text)
        default = "; ".join(tail.removeprefix("default: ") for tail in tails)
        rows.append(f"| `{_cell(names)}` | {_cell(meaning)} | {_cell(default)} |")
    return rows


def render() -> str:
    """docs/cli.md: one section per command, its synopsis, first help paragraph and options."""
    parts = [_HEADER]
    for name in sorted(main.commands):
        command = main.commands[name]
        context = click.Context(command, info_name=f"bulkgene {name}", parent=click.Context(
            main, info_name="bulkgene"))
        summary = (command.help or "").strip().split("\n\n")[0]
        usage = " ".join(["bulkgene", name, *command.collect_usage_pieces(context)])
        parts.append(f"\n## `bulkgene {name}`\n\n    {usage}"
                     f"\n\n{' '.join(summary.split())}\n\n| option | meaning | default |\n"
                     "|---|---|---|\n" + "\n".join(_option_rows(command, context)) + "\n")
    return "".join(parts)


if __name__ == "__main__":  # pragma: no cover - the documented way to refresh docs/cli.md
    click.echo(render(), nl=False)
