"""``bulkgene retry DIR`` and fetch's ``--add``: growing a finished run (run/growth.py)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from bulkgene.cli import signals
from bulkgene.cli.console import configure_logging, read_api_key, report_end
from bulkgene.cli.options import server_options
from bulkgene.cli.progress import ProgressReporter, Terminal, TerminalLog
from bulkgene.config import NetworkSpec
from bulkgene.errors import EXIT_OK, BulkgeneError, ConfigError

if TYPE_CHECKING:
    from bulkgene.model import Summary
    from bulkgene.run.growth import Regrowth

F = TypeVar("F", bound=Callable[..., object])


def rate_option(function: F) -> F:
    """``--rate`` for commands that go on with a run (retry, explain --follow-replaced)."""
    return click.option(
        "--rate", type=float, default=None,
        help="A fixed requests/s ceiling for this process alone, as fetch's. [default: the "
        "key's budget, shared live]")(function)


def add_option(function: F) -> F:
    """fetch's ``--add``: the INPUTs are IDs to add to the finished run in --out."""
    return click.option(
        "--add", is_flag=True,
        help="Add the GeneIDs of INPUT... to the finished run in --out: only IDs it doesn't "
        "have are fetched, and its accounting (requested, found, missing) and fingerprint "
        "grow with them. Running it again with the same file adds nothing twice.")(function)


RETRY_EXAMPLES = """
\b
Examples:
  bulkgene retry genes/                 # refused and failed GeneIDs, once more
  bulkgene retry genes/ --base-url http://127.0.0.1:8765/datasets/v2   # the run's own server

\b
Exit codes as fetch: 0 when every GeneID is found or missing with a reason.
"""


@click.command(epilog=RETRY_EXAMPLES)
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR")
@server_options
@rate_option
@click.option("--progress/--no-progress", default=None,
              help="A live bar on a terminal, a plain line every 30 s elsewhere. "
              "[default: on, unless -q]")
@click.option("-q", "--quiet", count=True, help="Less logging (-qq: errors only).")
@click.option("-v", "--verbose", count=True, help="More logging.")
def retry(out_dir: Path, base_url: str, api_key_file: Path | None, api_key: str | None,
          rate: float | None, progress: bool | None, quiet: int, verbose: int) -> None:
    """Fetch again the GeneIDs of a finished run that ended failed or REJECTED_BY_SERVER.

    A server that refused some GeneIDs yesterday may answer them today. Their rows leave
    missing.tsv and they are fetched once more through the run's own settings (every task of
    an array); an ID found now is counted found, one still missing gets its new row. Safe to
    kill and run again at any moment: the same command goes on. A run with other work left
    (its list, an --add, an interrupted --follow-replaced) is refused, with the command that
    finishes it; --base-url must name the run's own server (it is refused before anything
    changes otherwise, with the run's).
    """
    show_progress = progress if progress is not None else quiet == 0
    terminal = Terminal(sys.stderr, live=show_progress and sys.stderr.isatty())
    configure_logging(verbose, quiet, TerminalLog(terminal))
    reporter = ProgressReporter(terminal, 30.0)
    try:
        network = NetworkSpec(base_url=base_url, api_key=read_api_key(api_key, api_key_file),
                              requests_per_second=rate)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from bulkgene.run import growth
    from bulkgene.run.resume import go_on

    signals.now("as the retry was being prepared", "nothing was fetched, and what a step "
                "left half-done is finished or undone by the next start")
    try:
        growth.check_servers(out_dir, network)  # before anything changes
        again = growth.grow_again(out_dir, "retry", "refused GeneIDs, again",
                                  growth.refused_rows, f"bulkgene retry {out_dir}")
        if not (again.originals or again.resumed or again.failed_batches):
            click.echo("bulkgene: nothing to fetch again: no GeneID in missing.tsv was refused "
                       "by the server, and no batch failed", err=True)
            sys.exit(EXIT_OK)
        click.echo(f"bulkgene: fetching again {_what(again)}", err=True)

        def task_end(summary: Summary) -> None:
            reporter.close()
            report_end(summary, ["retry", str(out_dir)])

        summaries = asyncio.run(go_on(
            out_dir, network, handle_signals=True,
            on_progress=reporter.update if show_progress else None, on_task_end=task_end,
            progress_interval_s=reporter.tick_s if show_progress else 0))
    except BulkgeneError as exc:
        reporter.close()
        if exc.summary is not None:
            click.echo(f"bulkgene: {exc.summary.line()}", err=True)
        click.echo(f"bulkgene: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    reporter.close()
    sys.exit(max([EXIT_OK, *(summary.exit_code for summary in summaries)]))


def _what(again: Regrowth) -> str:
    """What a retry fetches, counted truly (an interrupted one's IDs included)."""
    parts = []
    if again.originals or not again.resumed:
        parts.append(f"{again.originals} refused GeneIDs")
    if again.resumed:
        parts.append(f"{again.resumed} refused GeneIDs an interrupted retry left")
    if again.failed_batches:
        parts.append(f"{again.failed_batches} failed batches ({again.failed_ids} GeneIDs)")
    return " and ".join(parts)
