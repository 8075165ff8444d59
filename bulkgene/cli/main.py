"""The ``bulkgene`` command: click options -> config, run the library, errors -> exit codes.

Exit codes: 0 complete, 1 fatal (the message says what to do), 2 usage, 3 finished with
failed batches (re-run to retry them), 75 interrupted by SIGTERM/SIGINT (re-run to resume).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from bulkgene.cli import commands, signals
from bulkgene.cli.console import (
    configure_logging,
    print_out,
    read_api_key,
    refuse_key_file_input,
    report_end,
)
from bulkgene.cli.doctor import doctor
from bulkgene.cli.explain import AfterFetch, explain, explain_fetch_options, finish_fetch
from bulkgene.cli.export import export
from bulkgene.cli.grow import add_option, retry
from bulkgene.cli.options import FINITE, BudgetDir, FiniteRange, OutDir, server_options
from bulkgene.cli.progress import ProgressReporter, Terminal, TerminalLog
from bulkgene.cli.taxon import TAXON_EXAMPLES, dry_run_taxa, taxon_options, taxon_selection
from bulkgene.config import (
    COMPRESSIONS,
    ENDPOINTS,
    FORMATS,
    MAX_TASK_COUNT,
    RECORDS,
    RETURNED_CONTENTS,
    SORT_DIRECTIONS,
    TABULAR_HEADERS,
    ApiQuery,
    Compression,
    DownloadConfig,
    Endpoint,
    Format,
    NetworkSpec,
    OutputSpec,
    RecordShape,
    RetryPolicy,
    ReturnedContent,
    SortDirection,
    TabularHeader,
    Timeouts,
    default_of,
)
from bulkgene.errors import BulkgeneError, ConfigError
from bulkgene.input.advice import shown
from bulkgene.input.lines import Reject
from bulkgene.model import Summary
from bulkgene.run import array
from bulkgene.run.dry_run import DryRun

log = logging.getLogger("bulkgene")


class _Commands(click.Group):
    """bulkgene's commands; writing their help or version to a full disk (``--help >
    /dev/full``) is a clear error, not click's traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except OSError as exc:
            if not _from_echo(exc):
                raise
            try:  # the unwritten rest would fail again when Python flushes at exit
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, sys.stdout.fileno())
                os.close(null)
            except (OSError, ValueError, AttributeError):
                pass  # not a real file (a test runner's buffer)
            click.echo(f"bulkgene: error: cannot write to standard output: "
                       f"{exc.strerror or exc}; if it is redirected to a file, free some space "
                       "there (or write it elsewhere) and run it again", err=True)
            sys.exit(1)


def _from_echo(exc: BaseException) -> bool:
    """Whether ``exc`` came from click writing text (help, version, a message)."""
    trace = exc.__traceback__
    while trace is not None:
        code = trace.tb_frame.f_code
        if code.co_name == "echo" and "click" in code.co_filename:
            return True
        trace = trace.tb_next
    return False


@click.group(cls=_Commands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="bulkgene")
def main() -> None:
    """Fast, polite, resumable bulk downloads of NCBI gene reports.

    \b
    Example:
      bulkgene fetch sample_inputs/human_genes.txt --out genes/
      bulkgene emulate --port 8765     # a local NCBI emulator for offline tries
    """


FETCH_EXAMPLES = """
\b
Examples:
  bulkgene fetch sample_inputs/human_genes.txt --out genes/
  NCBI_API_KEY=... bulkgene fetch ids.txt.gz --out genes/       # 10 req/s with a key
  cut -f2 gene_info.tsv | bulkgene fetch - --out genes/          # IDs from stdin
  bulkgene fetch Homo_sapiens.gene_info.gz --out genes/   # NCBI table: its GeneID column
  bulkgene fetch table.csv --column 3 --out genes/        # or pick the column yourself
  bulkgene fetch ids.txt --out genes/ --endpoint dataset-report --record gene --compress gzip
  bulkgene fetch ids.txt --out table/ --format tsv --table-field gene-id --table-field symbol
  bulkgene fetch ids.txt --out genes/   # run it again after a kill: it resumes
  bulkgene fetch ids.txt --out genes/ --explain --follow-replaced   # why missing; successors
  bulkgene fetch more_ids.txt --out genes/ --add   # grow a finished run by the new IDs only
  sbatch --array=0-3%2 fetch.sbatch      # with --split slurm: a quarter each, genes/task-000N/

\b
Without --rate, the key's 10 requests/s (5 without a key) are shared live with every other
bulkgene using it (--budget-dir). After a 404, a GeneID NCBI must know is asked for: if that
works, the GeneIDs NCBI refuses are found by group testing, ~11 requests each (missing.tsv:
REJECTED_BY_SERVER); if not, a retired endpoint is replaced by a current one, or a wrong
--base-url stops the run. Check a new machine with `bulkgene doctor`.

\b
Exit codes: 0 complete (missing GeneIDs are not errors), 1 fatal error, 2 usage,
3 some batches failed (re-run the same command to retry them), 75 interrupted (re-run to resume).
"""


@main.command(epilog=FETCH_EXAMPLES + TAXON_EXAMPLES)
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@click.option("-o", "--out", "out_dir", required=True, type=OutDir(), metavar="DIR",
              help="Output directory (created). Re-running into it resumes.")
@click.option("--column", metavar="N|NAME", default=None,
              help="Read GeneIDs from this column: a number counted from 1, or a name in the "
              "file's header line (e.g. GeneID for NCBI's gene_info, whose column 1 is "
              "tax_id). [default: the column a header line names GeneID, else the first field]")
@taxon_options
@server_options
@click.option("--endpoint", type=click.Choice(ENDPOINTS),
              default=default_of(ApiQuery, "endpoint"), show_default=True,
              help="gene-id: GET /gene/id/{ids} (deprecated by NCBI); gene-id-report: GET "
              "/gene/id/{ids}/dataset_report, its current twin (no --locus-tag, "
              "--accession-filter, --tax-search-subtree); dataset-report: POST "
              "/gene/dataset_report (JSON body, 1000 IDs a request; what NCBI's own CLI uses). "
              "Same records: a run resumes on any of them, and bulkgene switches by itself "
              "when NCBI retires the chosen one.")
@click.option("--format", "output_format", type=click.Choice(FORMATS),
              default=default_of(ApiQuery, "format"), show_default=True,
              help="Ask for paged JSON (checked against total_count), JSON lines "
              "(application/x-ndjson; both written as NDJSON) or TSV (text/tab-separated-values, "
              "written as .tsv shards).")
@click.option("--record", type=click.Choice(RECORDS), default=default_of(OutputSpec, "record"),
              show_default=True,
              help="Write whole report matches (gene, query, warnings) or only the gene, the "
              "shape of `datasets summary gene --as-json-lines`.")
@click.option("--compress", type=click.Choice(COMPRESSIONS),
              default=default_of(OutputSpec, "compress"), show_default=True,
              help="gzip shards (.ndjson.gz, one gzip member per batch: still resumable).")
@click.option("--returned-content", type=click.Choice(RETURNED_CONTENTS),
              default=default_of(ApiQuery, "returned_content"), show_default=True,
              help="Whole reports, or GeneIDs only, or GeneIDs with counts.")
@click.option("--locus-tag", "locus_tags", multiple=True, metavar="TAG",
              help="The API's locus_tags (repeatable), passed through.")
@click.option("--sort-field", default=None, help="The API's sort.field, e.g. gene_id.")
@click.option("--sort-direction", type=click.Choice(SORT_DIRECTIONS), default=None,
              help="The API's sort.direction.")
@click.option("--tax-search-subtree", is_flag=True, help="The API's tax_search_subtree=true.")
@click.option("--table-field", "table_fields", multiple=True, metavar="FIELD",
              help="TSV column (repeatable), e.g. gene-id, symbol, tax-name; needs --format tsv. "
              "Include gene-id for exact found/missing accounting.")
@click.option("--accession-filter", multiple=True, metavar="ACCESSION",
              help="The API's accession_filter (repeatable); needs --format tsv.")
@click.option("--include-tabular-header", type=click.Choice(TABULAR_HEADERS), default=None,
              help="The API's header mode; needs --format tsv. Shards get the header once at "
              "the top either way (none with ..._NEVER).")
@click.option("--batch-size", type=int, default=default_of(OutputSpec, "batch_size"),
              show_default=True, help="GeneIDs per batch (the unit of commit), 1..1000.")
@click.option("--page-size", type=int, default=default_of(ApiQuery, "page_size"),
              show_default=True, help="Reports per page, 1..1000; smaller pages mean more "
              "requests.")
@click.option("--rate", type=FINITE, default=None,
              help="A fixed requests/s ceiling for this process alone, taking no share of the "
              "key's budget. [default: the key's 10/s (5 without a key), shared live with "
              "every other bulkgene using it]")
@click.option("--budget-dir", type=BudgetDir(),
              envvar="BULKGENE_BUDGET_DIR", default=None,
              help="Where every bulkgene using the same API key (or IP) shares the key's "
              "requests/s live, through small lease files: give all jobs of a cluster one "
              "directory on a shared filesystem. Ignored with --rate. [default: DIR/.budget for "
              "an array task, else ~/.cache/bulkgene/budget]")
@click.option("--concurrency", type=int, default=None,
              help="Requests in flight, 1..256. [default: rate x 1.6]")
@click.option("--shards", type=int, default=default_of(OutputSpec, "shards"), show_default=True,
              help="Output shard files, 1..4096; batch b goes to shard b mod N.")
@click.option("--max-attempts", type=click.IntRange(1, 100),
              default=default_of(RetryPolicy, "max_attempts"), show_default=True,
              help="Attempts per page before its batch is recorded as failed.")
@click.option("--retry-wait", type=FiniteRange(0, 600),
              default=default_of(RetryPolicy, "backoff_base_s"), show_default=True,
              help="Base of the exponential backoff between attempts, in seconds (capped at 30 s).")
@click.option("--connect-timeout", type=FiniteRange(0.1, 3600),
              default=default_of(Timeouts, "connect_s"), show_default=True,
              help="Seconds to wait for a connection before the attempt is retried.")
@click.option("--read-timeout", type=FiniteRange(0.1, 3600),
              default=default_of(Timeouts, "read_stall_s"), show_default=True,
              help="Seconds a response may stall (no byte at all) before the attempt is retried.")
@click.option("--attempt-timeout", type=FiniteRange(0.1, 86400),
              default=default_of(Timeouts, "attempt_s"), show_default=True,
              help="Seconds one attempt may take in all, however slowly bytes trickle in.")
@click.option("--memory-budget-mb", type=click.IntRange(1, 65536),
              default=default_of(OutputSpec, "memory_budget_bytes") >> 20, show_default=True,
              help="Fetched results held in memory before they are written, in MiB: raise it "
              "if reports are much bigger than NCBI's (one batch bigger than it still goes "
              "through, alone).")
@click.option("--max-response-mb", type=click.IntRange(1, 65536),
              default=default_of(NetworkSpec, "max_response_bytes") >> 20, show_default=True,
              help="Largest answer accepted (after decompression); a bigger one is treated as "
              "an invalid page and retried.")
@click.option("--outage-after", type=FiniteRange(1, 86400),
              default=default_of(RetryPolicy, "outage_s"), show_default=True,
              help="Stop (resumably) when no request has succeeded for this many seconds.")
@click.option("--task-index", type=click.IntRange(0), default=None,
              help="This task's number, 0..N-1, when N processes share one input.")
@click.option("--task-count", type=click.IntRange(1, MAX_TASK_COUNT), default=None,
              help="How many tasks split the input (batch b goes to task b mod N).")
@click.option("--split", "split_mode", type=click.Choice(["slurm"]), default=None,
              help="Share the input among the tasks of a SLURM array: index and count from "
              "$SLURM_ARRAY_TASK_ID/_COUNT/_MIN/_STEP. Without it (or --task-*), an array task "
              "fetches its whole input.")
@click.option("--restart", is_flag=True,
              help="Move an existing run in --out aside (renamed, never deleted) and start over.")
@click.option("--allow-other-files", is_flag=True,
              help="Start a run in an --out that already holds files of yours (they are left "
              "alone, also by --restart). Without it such a directory is refused.")
@click.option("--progress/--no-progress", default=None,
              help="A live bar on a terminal, a plain line every --progress-interval "
              "elsewhere. [default: on, unless -q]")
@click.option("--progress-interval", type=FiniteRange(1), default=30.0, show_default=True,
              help="Seconds between plain progress lines when stderr is not a terminal.")
@click.option("--dry-run", is_flag=True,
              help="Read and check the input and what --out holds; print counts, batches, "
              "the requests as packed, the time the rate implies and the disk the output "
              "will take; say what a real run would refuse (exit 1). Send nothing, write "
              "nothing. With --taxon: ask NCBI (two requests a taxon) how many genes it would "
              "fetch, by type, and the time and disk it takes.")
@add_option
@explain_fetch_options
@click.option("-q", "--quiet", count=True, help="Less logging (-qq: errors only).")
@click.option("-v", "--verbose", count=True, help="More logging.")
def fetch(inputs: tuple[str, ...], out_dir: Path, column: str | None,
          taxa: tuple[str, ...], taxa_file: Path | None, gene_types: tuple[str, ...],
          include_subtree: bool, refresh_list: bool, base_url: str,
          api_key_file: Path | None,
          api_key: str | None, endpoint: Endpoint, output_format: Format, record: RecordShape,
          compress: Compression,
          returned_content: ReturnedContent, locus_tags: tuple[str, ...], sort_field: str | None,
          sort_direction: SortDirection | None, tax_search_subtree: bool,
          table_fields: tuple[str, ...],
          accession_filter: tuple[str, ...], include_tabular_header: TabularHeader | None,
          batch_size: int, page_size: int, rate: float | None, budget_dir: Path | None,
          concurrency: int | None,
          shards: int, max_attempts: int, retry_wait: float, connect_timeout: float,
          read_timeout: float, attempt_timeout: float, memory_budget_mb: int, max_response_mb: int,
          outage_after: float, task_index: int | None,
          task_count: int | None, split_mode: str | None, restart: bool,
          allow_other_files: bool, progress: bool | None,
          progress_interval: float, dry_run: bool, quiet: int, verbose: int, add: bool,
          after_fetch: AfterFetch) -> None:
    """Download the gene reports of every GeneID in INPUT... (files, .gz, or - for stdin),
    and of every gene of the organisms --taxon names.

    One GeneID per line: the first field of a tab-, comma- or space-separated line, or the
    column --column picks, or the GeneID column a header line names (NCBI's gene_info).
    A line with several numbers is rejected, not guessed at; blank lines and # comments are
    skipped; bad lines go to rejects.tsv with their line number; an input with no GeneID
    at all is an error. Pipes and <(zcat ids.gz) are copied into --out once.

    Reports are appended as NDJSON to shard-NNNN.ndjson in --out, with missing.tsv,
    replaced.tsv, rejects.tsv and summary.json beside them. Kill it at any time and run
    the same command again: it resumes, and every gene ends up exactly once.
    """
    show_progress = progress if progress is not None else quiet == 0
    terminal = Terminal(sys.stderr, live=show_progress and sys.stderr.isatty())
    reporter = ProgressReporter(terminal, progress_interval)
    configure_logging(verbose, quiet, TerminalLog(terminal))
    try:
        refuse_key_file_input(inputs, api_key_file, taxa_file)
        config = DownloadConfig(
            inputs=inputs, out_dir=out_dir, column=column, restart=restart, add=add,
            taxa=taxon_selection(taxa, taxa_file, gene_types, include_subtree, refresh_list),
            allow_other_files=allow_other_files,
            query=ApiQuery(
                endpoint=endpoint, format=output_format, returned_content=returned_content,
                page_size=page_size, locus_tags=locus_tags, table_fields=table_fields,
                accession_filter=accession_filter, include_tabular_header=include_tabular_header,
                sort_field=sort_field, sort_direction=sort_direction,
                tax_search_subtree=tax_search_subtree),
            output=OutputSpec(batch_size=batch_size, shards=shards, record=record,
                              compress=compress, memory_budget_bytes=memory_budget_mb << 20),
            network=NetworkSpec(
                base_url=base_url, api_key=read_api_key(api_key, api_key_file),
                requests_per_second=rate, concurrency=concurrency, budget_dir=budget_dir,
                retry=RetryPolicy(max_attempts=max_attempts, backoff_base_s=retry_wait,
                                  outage_s=outage_after),
                timeouts=Timeouts(connect_s=connect_timeout, read_stall_s=read_timeout,
                                  attempt_s=attempt_timeout),
                max_response_bytes=max_response_mb << 20),
            task=array.resolve(task_index, task_count, split_mode),
            progress_interval_s=reporter.tick_s if show_progress else 0,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if dry_run:
        if config.inputs:
            _dry_run(config)
        if config.taxa is not None:
            try:
                dry_run_taxa(config, _human_time)
            except BulkgeneError as exc:
                click.echo(f"bulkgene: error: {exc}", err=True)
                sys.exit(exc.exit_code)
        return
    from bulkgene.run.download import download  # aiohttp is loaded only when a download runs
    from bulkgene.run.prepare import spool_files

    spools = spool_files(config)  # asked before the run: a FIFO may be gone after it
    summary: Summary | None = None
    try:
        summary = asyncio.run(download(config, handle_signals=True, on_progress=reporter.update))
    except BulkgeneError as exc:
        reporter.close()
        summary = exc.summary
        if summary is not None:
            click.echo(f"bulkgene: {summary.line()}", err=True)
        click.echo(f"bulkgene: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception:  # noqa: BLE001 - a bug: show it, but never the key
        report = traceback.format_exc()
        if config.network.api_key is not None:
            report = report.replace(config.network.api_key.reveal(), "***")
        reporter.close()
        click.echo(f"{report}\nbulkgene: internal error (a bug; please report it with the "
                   "traceback above). Committed work is safe: re-run to resume.", err=True)
        sys.exit(1)
    reporter.close()
    signals.now("after the fetch ended", "everything it fetched is committed")
    # the resume command names the copies of read-once inputs, not the pipes
    report_end(summary, _naming_spools(sys.argv[1:], spools) if spools else None)
    sys.exit(finish_fetch(after_fetch, config, summary, terminal, reporter, show_progress))


def _naming_spools(args: list[str], spools: dict[int, Path]) -> list[str]:
    """``args`` with the spooled INPUT arguments (by position) replaced by their copies."""
    takes_value = {name for param in fetch.params if isinstance(param, click.Option)
                   and not param.is_flag and not param.count for name in param.opts}
    shown: list[str] = []
    position = 0
    value_next = only_inputs = False
    for arg in args[1:] if args[:1] == ["fetch"] else args:
        if value_next:
            value_next = False
        elif not only_inputs and arg == "--":
            only_inputs = True
        elif not only_inputs and arg in takes_value:
            value_next = True
        elif only_inputs or arg == "-" or not arg.startswith("-"):
            shown.append(str(spools[position]) if position in spools else arg)
            position += 1
            continue
        shown.append(arg)
    return (["fetch"] if args[:1] == ["fetch"] else []) + shown


def _dry_run(config: DownloadConfig) -> None:
    from bulkgene.run.dry_run import dry_run

    rejects: list[Reject] = []
    try:
        result = dry_run(config, rejects)
    except BulkgeneError as exc:
        click.echo(f"bulkgene: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    counts = result.counts
    print_out(f"input: {counts.requested} unique GeneIDs, {counts.duplicates} duplicates, "
              f"{counts.rejected} rejected lines")
    for reject in rejects[:10]:
        print_out(f"  rejected: {shown(reject)}")
    if len(rejects) > 10:
        print_out(f"  ... and {len(rejects) - 10} more (a real run lists them all in rejects.tsv)")
    task = config.task
    print_out(f"batches: {result.batches} of up to {config.output.batch_size} IDs; task "
               f"{task.index} of {task.count} takes {result.task_batches} "
               f"({result.task_ids} IDs) into {config.work_dir}")
    print_out(f"resume: {_resume_line(config, result)}")
    if result.refusal is not None:
        click.echo(f"bulkgene: error: a real run would stop here: {result.refusal}", err=True)
        sys.exit(result.refusal.exit_code)
    endpoint = config.query.endpoint
    packing = (f"GET {endpoint} packs a batch's IDs into URLs of up to 7800 bytes, about 780 "
               "nine-digit IDs" if endpoint != "dataset-report"
               else "POST dataset-report sends a batch in one request")
    hint = ("; --endpoint dataset-report would send each batch in one"
            if endpoint != "dataset-report" and result.requests_per_batch > 1.5 else "")
    batches = result.batches_to_fetch
    print_out(f"requests: {result.requests} for {batches} batch{'' if batches == 1 else 'es'}"
               f" ({result.requests_per_batch:.1f} a batch: {packing}{hint})")
    print_out(f"time: about {_human_time(result.seconds)} at {result.requests_per_s:.3g} "
               "requests/s (network latency aside)")
    print_out(f"disk: {_disk_line(config, result)}")
    print_out("Nothing was sent.")


def _resume_line(config: DownloadConfig, result: DryRun) -> str:
    where = config.work_dir
    if config.restart:
        return (f"--restart: a run in {where} would be moved aside (never deleted) and this "
                "one start over")
    if result.refusal is not None:
        return f"{where} holds a run a real run would refuse to go on with (below)"
    if result.resumed is None:
        return f"nothing to resume in {where}: a real run starts afresh"
    state = result.resumed
    failed = f", {len(state.failed)} failed (fetched again)" if state.failed else ""
    compared = "" if result.inputs_compared else (
        "; an input read once (stdin, a pipe) is compared only when a real run copies it")
    if result.added is not None:
        return (f"{where} holds a run of {state.committed_batches} committed batches; --add "
                f"would fetch the {result.added} GeneIDs of the input it does not have, in "
                f"{result.batches_to_fetch} batches for this task")
    if state.segments:  # grown by --add or --refresh-list: its batches are more than the list's
        return (f"{where} holds this run, grown since its list ({len(state.segments)} "
                f"additions): {state.committed_batches} batches committed{failed}; "
                f"{result.batches_to_fetch} of the list's to fetch{compared}")
    return (f"{where} holds this run: {state.committed_batches} of {result.task_batches} "
            f"batches committed{failed}; {result.batches_to_fetch} to fetch{compared}")


def _disk_line(config: DownloadConfig, result: DryRun) -> str:
    query = config.query
    what = (f"TSV rows of {len(query.table_fields)} fields" if query.format == "tsv"
            else f"{query.returned_content} reports")
    each = result.disk_bytes / result.ids_to_fetch if result.ids_to_fetch else 0
    text = (f"about {_human_bytes(result.disk_bytes)} for up to {result.ids_to_fetch} {what} "
            f"(~{_human_bytes(round(each))} each"
            f"{', gzipped' if config.output.compress == 'gzip' else ''})")
    if result.disk_free_bytes is None:
        return text + f"; free space in {result.disk_where} unknown"
    text += f"; {_human_bytes(result.disk_free_bytes)} free in {result.disk_where}"
    if result.disk_bytes > result.disk_free_bytes:
        text += ": NOT ENOUGH, free some space or choose another --out"
    return text


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _human_time(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


for command in (commands.status, commands.verify, export, commands.demo, commands.emulate,
                doctor, explain, retry):
    main.add_command(command)
