"""``bulkgene explain DIR`` and fetch's ``--explain`` / ``--follow-replaced``: every missing GeneID explained.

The fetch options are declared once here (``explain_fetch_options``) and reach ``fetch`` as
one ``after_fetch`` argument, which ``finish_fetch`` carries out after a complete run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from bulkgene import layout
from bulkgene.cli import signals
from bulkgene.cli.console import account_shown, configure_logging, read_api_key, report_end
from bulkgene.cli.grow import rate_option
from bulkgene.cli.options import server_options
from bulkgene.cli.progress import ProgressReporter, Terminal, TerminalLog
from bulkgene.config import DownloadConfig, NetworkSpec
from bulkgene.errors import EXIT_OK, BulkgeneError, ConfigError, Interrupted, StateError
from bulkgene.history import DEFAULT_HISTORY_URL, HISTORY_ENV
from bulkgene.history.chains import MAX_HOPS
from bulkgene.model import Summary

log = logging.getLogger("bulkgene")
F = TypeVar("F", bound=Callable[..., object])


def history_options(function: F) -> F:
    """``--history`` and ``--cache-dir``: where NCBI's gene_history comes from."""
    for option in reversed((
        click.option("--history", "history", metavar="PATH|URL", envvar=HISTORY_ENV,
                     default=DEFAULT_HISTORY_URL, show_default=True,
                     help="NCBI's gene_history: an https URL (downloaded once into "
                     "--cache-dir, resumed after a kill, checked again after a day) or a local "
                     "file, gzip or not, read as it is (e.g. a cluster's shared copy of NCBI's "
                     "FTP site); env BULKGENE_HISTORY. Given to fetch (as is --cache-dir), it "
                     "means --explain."),
        click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False),
                     envvar="BULKGENE_CACHE_DIR", default=None,
                     help="Where a downloaded history is kept; env BULKGENE_CACHE_DIR. "
                     "[default: ~/.cache/bulkgene]"),
    )):
        function = option(function)
    return function


@dataclass(frozen=True)
class AfterFetch:
    """What fetch does once its list is complete: explain, then follow."""

    explain: bool = False
    follow: bool = False
    history: str = DEFAULT_HISTORY_URL
    cache_dir: Path | None = None
    implied_by: str | None = None  # the history option that asked for explaining by itself

    @property
    def wanted(self) -> bool:
        return self.explain or self.follow


def explain_fetch_options(function: F) -> F:
    """fetch's ``--explain``, ``--follow-replaced``, ``--history`` and ``--cache-dir``, handed
    to it as one ``after_fetch`` argument."""

    @functools.wraps(function)
    def wrapper(*args: Any, explain: bool, follow_replaced: bool, history: str,
                cache_dir: Path | None, **kwargs: Any) -> object:
        # a history named on the command line is one to explain with: --history means
        # --explain (its environment variables don't: a profile's setting is no request)
        context = click.get_current_context()
        given = next((f"--{name.replace('_', '-')}" for name in ("history", "cache_dir")
                      if context.get_parameter_source(name) is ParameterSource.COMMANDLINE),
                     None)
        implied = given if not (explain or follow_replaced) else None
        kwargs["after_fetch"] = AfterFetch(explain or follow_replaced or given is not None,
                                           follow_replaced, history, cache_dir, implied)
        return function(*args, **kwargs)

    decorated: Any = wrapper
    for option in reversed((
        click.option("--explain", is_flag=True,
                     help="Once the list is complete, explain every missing and replaced "
                     "GeneID from NCBI's gene_history (as `bulkgene explain`): columns "
                     "history, current_gene_id, discontinued_on, symbol, tax_id."),
        click.option("--follow-replaced", is_flag=True,
                     help="With --explain: also fetch the live GeneID that replaced a missing "
                     "one (recorded with the original in its query), unless the run has it."),
    )):
        decorated = option(decorated)
    return history_options(decorated)  # type: ignore[no-any-return]  # click's decorators are untyped here


def _source(history: str, cache_dir: Path | None) -> Any:
    from bulkgene.history.source import HistorySource

    return HistorySource(location=history, cache_dir=cache_dir)


class DownloadBar:
    """The history download's progress: a live line on a terminal, a log line now and then."""

    def __init__(self, terminal: Terminal, interval_s: float, name: str) -> None:
        self.terminal = terminal
        self.interval_s = interval_s
        self.name = name
        self._shown_at = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        every = 0.2 if self.terminal.live else self.interval_s
        if now - self._shown_at < every and (total is None or done < total):
            return
        self._shown_at = now
        size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total \
            else f"{done / 1e6:.1f} MB"
        text = f"downloading {self.name}: {size}"
        if self.terminal.live:
            self.terminal.show(text)
        else:
            log.info("%s", text)

    def close(self) -> None:
        self.terminal.close()


def run_explain(out_dir: Path, history: str, cache_dir: Path | None, terminal: Terminal,
                interval_s: float, following: bool = False) -> Any:
    """Explain ``out_dir`` and print what was found; the ExplainReport."""
    from bulkgene.history.explain import explain

    source = _source(history, cache_dir)
    bar = DownloadBar(terminal, interval_s, history.rsplit("/", 1)[-1])
    try:
        report = asyncio.run(explain(out_dir, source, bar, handle_signals=True))
    finally:
        bar.close()
    signals.now(f"after {out_dir} was explained",
                "every report is explained" + (", nothing was fetched" if following else ""))
    how = {"local": "read as it is", "cached": "the cached copy (less than a day old)",
           "not-modified": "the cached copy (the server says it is current)",
           "downloaded": "downloaded", "resumed": "downloaded (resumed)",
           "stale": "the cached copy (the server could not be asked)"}[report.history.how]
    if account_shown():
        click.echo(f"bulkgene: {report.line()}", err=True)
    log.info("gene history %s: %s, %d rows, %s", report.history.name, how, report.rows,
             f"{report.passes} passes" if report.passes > 1 else "one pass")
    if report.malformed:
        shown = "; ".join(f"line {number}: {text!r}" for number, text in report.examples[:3])
        log.warning("%d malformed lines of the history were skipped (%s)", report.malformed,
                    shown)
    for kind, ids in (("loops back on itself", report.cycles),
                      (f"is longer than {MAX_HOPS} steps", report.too_long)):
        if ids:
            log.warning("the history of %d GeneIDs %s (%s): taken as discontinued", len(ids),
                        kind, ", ".join(map(str, ids[:10])))
    where = out_dir if len(layout.task_directories(out_dir)) == 1 else out_dir / "task-*"
    log.info("explanations in %s/missing.tsv and %s/replaced.tsv (columns history, "
             "current_gene_id, discontinued_on, symbol, tax_id)", where, where)
    if report.missing["REPLACED"] and not following:
        log.info("%d missing GeneIDs were replaced by a live GeneID: `bulkgene explain %s "
                 "--follow-replaced` gets them (recording at once those whose live GeneID "
                 "the run holds already, and fetching the others)", report.missing["REPLACED"],
                 out_dir)
    return report


def run_follow(out_dir: Path, network: NetworkSpec, reporter: ProgressReporter,
               show_progress: bool) -> int:
    """Follow the explained REPLACED missing IDs to their live successors; the exit code."""
    from bulkgene.history.follow import follow

    command = ["explain", str(out_dir), "--follow-replaced"]

    def task_end(summary: Summary) -> None:
        reporter.close()
        report_end(summary, command)

    followed, summaries = asyncio.run(follow(
        out_dir, network, handle_signals=True,
        on_progress=reporter.update if show_progress else None, on_task_end=task_end,
        progress_interval_s=reporter.tick_s if show_progress else 0))
    reporter.close()
    log.info("%s", follow_line(followed, summaries))
    return max([EXIT_OK, *(summary.exit_code for summary in summaries)])


def follow_line(followed: Any, summaries: list[Summary]) -> str:
    """What --follow-replaced did, in words."""
    growth = followed.growth
    parts = []
    if followed.held:
        parts.append(f"{followed.held} replaced GeneIDs whose live GeneID the run holds "
                     "already (under another GeneID of the list) are now in replaced.tsv, "
                     "counted found")
    if growth is not None and growth.originals:
        parts.append(f"{growth.originals} replaced GeneIDs were followed to "
                     f"{len(followed.to_fetch)} live GeneIDs fetched now")
    if growth is not None and growth.resumed:
        parts.append(f"{growth.resumed} live GeneIDs an interrupted --follow-replaced left "
                     "were fetched")
    if followed.unanswered:
        parts.append(f"{followed.unanswered} stay missing: their live GeneID was requested "
                     "and NCBI did not answer it either")
    if not parts:
        return "--follow-replaced: no missing GeneID has a live successor to follow"
    if summaries:
        parts.append(f"the run has {sum(s.followed for s in summaries)} GeneIDs found through "
                     "a replaced GeneID's live successor in all")
    return "--follow-replaced: " + "; ".join(parts)


def _array_complete(out_dir: Path) -> bool:
    from bulkgene.results.status import directory_status, incomplete_reasons

    try:
        return not incomplete_reasons(directory_status(out_dir))
    except StateError:
        return False


def finish_fetch(after: AfterFetch, config: DownloadConfig, summary: Summary, terminal: Terminal,
                 reporter: ProgressReporter, show_progress: bool) -> int:
    """fetch's ``--explain`` / ``--follow-replaced`` once its run ended; the exit code."""
    if not after.wanted or summary.exit_code != EXIT_OK:
        if after.wanted:
            log.warning("not explained: the run is not complete. Run the same command again "
                        "to finish it; it explains at the end")
        return summary.exit_code
    out_dir = config.out_dir
    if config.task.count > 1 and not _array_complete(out_dir):
        log.info("the array's other tasks are not all done: the task that completes it "
                 "explains them all (or run: bulkgene explain %s)", out_dir)
        return summary.exit_code
    if after.implied_by:
        log.info("%s given: explaining the run's missing GeneIDs, as --explain does",
                 after.implied_by)
    signals.now("after the fetch completed, before explaining", "the fetch is complete and "
                "committed, and the same command explains it")
    try:
        run_explain(out_dir, after.history, after.cache_dir, terminal, reporter.interval_s,
                    after.follow)
        if after.follow:
            return run_follow(out_dir, config.network, reporter, show_progress)
    except Interrupted as exc:
        click.echo(f"bulkgene: the fetch is complete; {exc}", err=True)
        return exc.exit_code
    except StateError as exc:
        if config.task.count > 1:  # another task that finished at the same moment has it
            log.warning("the array was not explained by this task (%s); when no task runs, "
                        "run: bulkgene explain %s", exc, out_dir)
            return summary.exit_code
        click.echo(f"bulkgene: error: {exc}", err=True)
        return exc.exit_code
    except BulkgeneError as exc:
        click.echo(f"bulkgene: error: {exc}", err=True)
        return exc.exit_code
    return summary.exit_code


EXPLAIN_EXAMPLES = """
\b
Examples:
  bulkgene explain genes/                          # NCBI's history, downloaded once a day
  bulkgene explain genes/ --history /data/ncbi/gene/DATA/gene_history.gz
  bulkgene explain genes/ --follow-replaced        # and fetch the live successors
  bulkgene fetch ids.txt --out genes/ --explain    # the same at the end of a fetch
  awk -F'\\t' '$3 == "NOT_IN_HISTORY"' genes/missing.tsv    # IDs NCBI never had

\b
history: DISCONTINUED (withdrawn, no successor), REPLACED (current_gene_id is the live GeneID
at the end of its chain), NOT_IN_HISTORY (NCBI never had it: a typo, a tax ID in the GeneID
column, an ID of another database, or newer than the file), REFUSED (the server refused it,
REJECTED_BY_SERVER, and the history doesn't list it: never answered, maybe live; run
bulkgene retry DIR).
"""


@click.command(epilog=EXPLAIN_EXAMPLES)
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR")
@history_options
@click.option("--follow-replaced", is_flag=True,
              help="Also fetch the live GeneID that replaced a missing one (recorded with the "
              "original in its query), through the run's pipeline, unless the run has it.")
@server_options
@rate_option
@click.option("--progress/--no-progress", default=None,
              help="A live line on a terminal, a plain line every 30 s elsewhere. "
              "[default: on, unless -q]")
@click.option("-q", "--quiet", count=True, help="Less logging (-qq: errors only).")
@click.option("-v", "--verbose", count=True, help="More logging.")
def explain(out_dir: Path, history: str, cache_dir: Path | None, follow_replaced: bool,
            base_url: str, api_key_file: Path | None, api_key: str | None, rate: float | None,
            progress: bool | None, quiet: int, verbose: int) -> None:
    """Explain every missing and replaced GeneID of a fetch directory from NCBI's gene history.

    Adds five columns to missing.tsv and replaced.tsv (every task's, in an array): history
    (DISCONTINUED, REPLACED, NOT_IN_HISTORY, REFUSED), current_gene_id (the live GeneID at the end of
    the chain), discontinued_on (YYYY-MM-DD), symbol and tax_id of the GeneID. The history is
    read once, however large; run it again with a newer one at any time.
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
    signals.now("before explaining", "nothing was changed")
    try:
        from bulkgene.run import growth

        left = growth.added_up(growth.unfinished(out_dir))
        if follow_replaced:  # before anything changes: the run's server, and a finished run
            growth.check_servers(out_dir, network)
            growth.refuse_unfinished(out_dir, left, "follow",
                                     f"bulkgene explain {out_dir} --follow-replaced")
        run_explain(out_dir, history, cache_dir, terminal, 30.0, follow_replaced)
        if left and not follow_replaced:
            log.warning("the run in %s is not finished (%s): the rows it adds later are "
                        "explained by the next explain", out_dir, "; ".join(
                            f"{part.ids} {part.what()} to fetch: run {part.command(out_dir)}"
                            for part in left))
        code = run_follow(out_dir, network, reporter, show_progress) if follow_replaced else 0
    except Interrupted as exc:
        terminal.close()
        click.echo(f"bulkgene: {exc}", err=True)
        sys.exit(exc.exit_code)
    except BulkgeneError as exc:
        terminal.close()
        if exc.summary is not None:
            click.echo(f"bulkgene: {exc.summary.line()}", err=True)
        click.echo(f"bulkgene: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code)
