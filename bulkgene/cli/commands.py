"""The other commands: status, verify, demo and emulate (fetch is in cli.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from bulkgene.cli.console import configure_logging, print_out, report_end
from bulkgene.cli.options import FINITE, BudgetDir, FiniteRange, OutDir
from bulkgene.cli.progress import ProgressReporter, Terminal, TerminalLog
from bulkgene.errors import StateError

STATUS_EXAMPLES = """
\b
Examples:
  bulkgene status genes/
  bulkgene status genes/ --json | jq .total
  bulkgene status genes/ --budget-dir /groups/lab/bulkgene-budget
"""


@click.command(epilog=STATUS_EXAMPLES)
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
@click.option("--budget-dir", type=BudgetDir(),
              envvar="BULKGENE_BUDGET_DIR", default=None,
              help="The --budget-dir the fetch was given, to list who shares the key's budget "
                   "with it (DIR/.budget and ~/.cache/bulkgene/budget are always looked at).")
def status(out_dir: Path, as_json: bool, budget_dir: Path | None) -> None:
    """Progress and accounting of a fetch directory (every task of it), read from disk.

    Works while a run is going on: it reads the checkpoints, summaries and locks, and never
    writes. Shows the IDs requested and pending, batches committed/failed, genes found and
    missing, speed and ETA, whether each task is running now, why a run is not complete,
    and which processes share the API key's rate budget. It exits 0 whenever it could
    read the directory (1 if it holds no run): for a pass/fail, use `bulkgene verify`.
    """
    from bulkgene.results import status as status_module
    from bulkgene.results import status_text

    _refuse_absent(out_dir)
    try:
        statuses = status_module.directory_status(out_dir)
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    from bulkgene.run.sharing import leases_sharing_with, status_roots

    leases = leases_sharing_with(out_dir, budget_dir)
    whole_array = not status_module.is_task_directory(out_dir)
    one_task = status_module.one_task_note(out_dir, statuses)
    if as_json:
        print_out(status_text.as_json(statuses, leases, whole_array, one_task).decode(), nl=False)
        return
    print_out(status_text.as_table(statuses))
    if history := status_text.history_line(statuses):
        print_out(history)
    run_dir = out_dir.parent if status_module.is_task_directory(out_dir) else out_dir
    if refused := status_text.refused_line(statuses, run_dir):
        print_out(refused)
    if leases:
        print_out(status_text.leases_table(leases))
    elif hint := status_text.no_lease_hint(statuses, status_roots(out_dir, budget_dir)):
        print_out(hint)
    reasons = status_module.incomplete_reasons(statuses, whole_array)
    for reason in reasons:
        print_out(f"incomplete: {reason}")
    if not reasons:
        print_out("complete: this task's share of the list was found or is in missing.tsv "
                  "with a reason" if one_task else
                  "complete: every requested GeneID was found or is in missing.tsv with a reason")
    if one_task:
        print_out(f"one task: {one_task} (bulkgene status {out_dir.parent})")


VERIFY_EXAMPLES = """
\b
Examples:
  bulkgene verify genes/ && echo "every gene exactly once"
"""


@click.command(epilog=VERIFY_EXAMPLES)
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR")
def verify(out_dir: Path) -> None:
    """Re-read every shard of every task and check the output can be trusted.

    Each line must be complete, valid JSON with a GeneID; no GeneID may appear twice in the
    whole directory; every file must be as long as its checkpoint says; the accounting must
    reconcile. Exit 0 only when all of that holds; otherwise each problem is listed.
    For an array that passes, DIR/missing.tsv, replaced.tsv and summary.json (every task's
    merged) are written when absent or out of date.
    """
    from bulkgene.results import merge
    from bulkgene.results.verify import verify as run_verify

    _refuse_absent(out_dir)
    verdict = run_verify(out_dir)
    summary = (f"{verdict.tasks} task(s), {verdict.shards} shard(s), {verdict.records} records")
    if verdict.ok:
        from bulkgene.results.status import directory_status, one_task_note

        one_task = one_task_note(out_dir, directory_status(out_dir))
        asked = ("this task's share of the list found or missing with a reason" if one_task
                 else "every requested GeneID found or missing with a reason")
        print_out(f"ok: {summary}; {asked}, no GeneID twice, shard lengths match the "
                  "checkpoints, accounting reconciles")
        if one_task:
            print_out(f"one task: {one_task} (bulkgene verify {out_dir.parent} checks all "
                      "of it)")
        if merge.is_array(out_dir) and not merge.merged_is_current(out_dir):
            merged = merge.rebuild_merged(out_dir)
            if merged is not None:
                print_out(f"{merge.summary_line(merged)}; merged into {out_dir}/missing.tsv, "
                          "replaced.tsv and summary.json")
        return
    for problem in verdict.problems:
        click.echo(f"problem: {problem}", err=True)
    if verdict.tasks == 0:  # nothing to resume: the path is wrong, not the run
        click.echo(f"FAILED: {out_dir} holds no bulkgene run; check the path (the --out given "
                   "to bulkgene fetch)", err=True)
        sys.exit(1)
    click.echo(f"FAILED: {len(verdict.problems)} problem(s) in {summary}. An unfinished run "
               "is finished (and torn tails cut back) by running again the command its problem "
               "names (the fetch command, unless it names another); "
               "anything else means the files were changed outside bulkgene.", err=True)
    sys.exit(1)


def _refuse_absent(out_dir: Path) -> None:
    if not out_dir.is_dir():
        from bulkgene.results.status import refuse_no_run

        raise click.ClickException(str(refuse_no_run(out_dir)))


DEMO_EXAMPLES = """
\b
Examples:
  bulkgene demo
  bulkgene demo --out /tmp/genes-demo
"""


@click.command(epilog=DEMO_EXAMPLES)
@click.option("-o", "--out", "out_dir", type=OutDir(), default=None, metavar="DIR",
              help="Where to write. [default: a new temporary directory]")
def demo(out_dir: Path | None) -> None:
    """Try bulkgene offline: emulator on 127.0.0.1, fetch sample_inputs/, show the result.

    Starts the NCBI emulator on a free loopback port, downloads the sample GeneID lists
    through it with the real pipeline (rate limit, paging, checkpoint), prints the
    summary and the commands to look at the output. No network access is needed.
    """
    import shutil
    import tempfile

    from bulkgene import layout
    from bulkgene.cli.demo import SYNTHETIC_NOTE, how_to_look, preview, run_demo
    from bulkgene.errors import BulkgeneError

    if out_dir is not None and (others := layout.other_entries(out_dir)):
        raise click.UsageError(
            f"{out_dir} holds files that are not a bulkgene run ({', '.join(others[:5])}): the "
            "demo writes a whole run there (moving an earlier demo's aside). Give --out a new "
            "or empty directory")
    scratch: Path | None = None
    if out_dir is None:
        try:
            scratch = Path(tempfile.mkdtemp(prefix="bulkgene-demo-"))
        except OSError as exc:
            raise click.ClickException(
                f"cannot create a temporary directory for the demo ({exc.strerror}): give "
                "--out DIR on a disk with some free space (or set TMPDIR)") from None
    target = out_dir if out_dir is not None else Path(str(scratch)) / "genes"
    terminal = Terminal(sys.stderr, live=sys.stderr.isatty())
    configure_logging(0, 0, TerminalLog(terminal))
    try:
        try:
            summary, explained = run_demo(target, ProgressReporter(terminal, 5.0))
        except BulkgeneError as exc:
            click.echo(f"bulkgene: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:  # the demo's files or the history's cache on a full disk
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"bulkgene: error: the demo could not write{where}: "
                       f"{exc.strerror or exc}. Give --out DIR on a disk with some free space, "
                       "and TMPDIR too (the demo's run takes about 2 MB, the gene history it "
                       "explains with about 1 MB)", err=True)
            sys.exit(1)
        print_out(SYNTHETIC_NOTE)
        if explained is not None:
            print_out(f"bulkgene demo: {explained}")
        if out_dir is not None:
            report_end(summary)
            print_out(how_to_look(out_dir))
        else:
            print_out(f"bulkgene demo: {summary.line()}")
            print_out(preview(target))
            print_out("The demo's temporary directory was removed again; `bulkgene demo --out "
                      "DIR` keeps the output and shows commands to read it.")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(summary.exit_code)


EMULATE_EXAMPLES = """
\b
Examples:
  bulkgene emulate --port 8765
  bulkgene emulate --port 8765 --latency 0.3 --latency-per-gene 0.0008 --fault http_503=0.05
  BULKGENE_BASE_URL=http://127.0.0.1:8765/datasets/v2 bulkgene fetch ids.txt --out genes/
  BULKGENE_BASE_URL=http://127.0.0.1:8765/datasets/v2 bulkgene explain genes/ \\
      --history http://127.0.0.1:8765/gene/DATA/gene_history.gz
  bulkgene emulate --port 8766 --black-hole   # a proxy that swallows requests
"""


class _EmulateCommand(click.Command):
    """``emulate``, whose help lists the fault and endpoint names (imported only for help)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from bulkgene.testing import ENDPOINTS, FAULTS

        with formatter.section("Faults (--fault NAME=P)"):
            formatter.write_text(", ".join(FAULTS))
        with formatter.section("Endpoints (--retire NAME)"):
            formatter.write_text(", ".join(ENDPOINTS))
        super().format_epilog(ctx, formatter)


@click.command(cls=_EmulateCommand, epilog=EMULATE_EXAMPLES)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0 picks a free one). Never binds another address.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the synthetic genes and of the fault draws.")
@click.option("--anonymous-rate", type=FINITE, default=5.0, show_default=True,
              help="Requests/s allowed without an api-key header.")
@click.option("--keyed-rate", type=FINITE, default=10.0, show_default=True,
              help="Requests/s allowed per api-key.")
@click.option("--no-rate-limit", is_flag=True, help="Never answer 429 for rate.")
@click.option("--latency", type=FINITE, default=0.0, show_default=True,
              help="Seconds before each answer.")
@click.option("--latency-per-gene", type=FINITE, default=0.0, show_default=True,
              help="Extra seconds per report on the page.")
@click.option("--jitter", type=FINITE, default=0.0, show_default=True,
              help="Latency varies by +- this fraction.")
@click.option("--arrival-jitter-ms", type=FiniteRange(min=0), default=0.0,
              show_default=True,
              help="Hold each request 0..this many ms (seeded) before it counts as arrived.")
@click.option("--fault", "faults", multiple=True, metavar="NAME=P",
              help="Inject a fault with probability P per request (repeatable; names below).")
@click.option("--valid-key", "valid_keys", multiple=True,
              help="Accept only these api-keys (others get 401). Default: any key.")
@click.option("--keepalive-timeout", type=FiniteRange(min=0), default=4.0,
              show_default=True, help="Close a kept-alive connection idle this many seconds "
              "(0: 75 s and no Keep-Alive header).")
@click.option("--keepalive-max", type=click.IntRange(min=0), default=40, show_default=True,
              help="Close every connection after this many answers (0: never).")
@click.option("--invalid-id-per-mille", type=click.FloatRange(0, 1000), default=0.0,
              show_default=True, help="This share of GeneIDs (0.1: one in 10 000) fails a whole "
              "request with 404 'Your request is invalid.' (NCBI 18.23); never TP53 (7157), so "
              "1000 makes a server that refuses all but the GeneID clients probe with.")
@click.option("--retire", "retired", multiple=True, metavar="NAME",
              help="Answer this endpoint (an operationId, below) as retired (repeatable).")
@click.option("--retired-status", type=click.Choice(["404", "410"]), default="404",
              show_default=True, help="What a retired endpoint answers.")
@click.option("--unknown-id-messages", is_flag=True,
              help="Old guess: page messages for unknown and discontinued GeneIDs.")
@click.option("--total-count-every-page", is_flag=True,
              help="Old guess: total_count on every page, not only the first.")
@click.option("--bad-token-status", type=click.Choice(["400", "500"]), default="500",
              show_default=True, help="What an invalid page token gets (400: old guess).")
@click.option("--remaining-only-on-429", is_flag=True,
              help="Old guess: X-RateLimit-* headers on 429s only.")
@click.option("--remaining-counted-at", type=click.Choice(["arrival", "answer"]),
              default="arrival", show_default=True,
              help="When X-RateLimit-Remaining is counted: at the request's arrival, or as "
              "its answer leaves (then a slow answer counts the caller's later requests too).")
@click.option("--black-hole", is_flag=True,
              help="Instead of the API: accept connections and never answer, as a proxy or "
              "firewall that swallows requests does (try `bulkgene fetch` and `doctor` on it).")
def emulate(port: int, seed: int, anonymous_rate: float, keyed_rate: float, no_rate_limit: bool,
            latency: float, latency_per_gene: float, jitter: float, arrival_jitter_ms: float,
            faults: tuple[str, ...], valid_keys: tuple[str, ...], keepalive_timeout: float,
            keepalive_max: int, invalid_id_per_mille: float, retired: tuple[str, ...],
            retired_status: str, unknown_id_messages: bool, total_count_every_page: bool,
            bad_token_status: str, remaining_only_on_429: bool,
            remaining_counted_at: str, black_hole: bool) -> None:
    """Serve a faithful local emulator of NCBI Datasets v2 gene reports on 127.0.0.1.

    Behaves as NCBI was recorded: same page schema and quirks (reports out of input order,
    GeneIDs as strings, omitted empty fields, total_count on the first page only, page
    tokens, {} for nothing found, unknown IDs silently missing, replaced IDs, 500 for a bad
    token), X-RateLimit-Limit/-Remaining on every answer, Keep-Alive: timeout=4, max=40
    enforced, 429 with Retry-After over the rate. It also serves the taxon routes
    (/gene/taxon/{taxon}/dataset_report, /counts, taxon in a POST body) for a few organisms,
    by tax ID or name: human (9606), house mouse, zebrafish, fruit fly, E. coli K-12 and a
    100 000-gene bread wheat (4565). Stop it with Ctrl-C.

    And it serves NCBI's gene history consistent with its genes, as NCBI's FTP host does,
    at http://127.0.0.1:PORT/gene/DATA/gene_history.gz (for explain's --history or
    BULKGENE_HISTORY; Range and conditional requests honoured).
    """
    from bulkgene.testing import ENDPOINTS, FAULTS, EmulatorConfig, serve_forever

    fault_map: dict[str, float] = {}
    for item in faults:
        name, _, value = item.partition("=")
        try:
            fault_map[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not NAME=P (e.g. http_503=0.05)",
                                     param_hint="--fault") from None
        if name not in FAULTS:
            raise click.BadParameter(f"unknown fault {name!r}; known: {', '.join(FAULTS)}",
                                     param_hint="--fault")
    for name in retired:
        if name not in ENDPOINTS:
            raise click.BadParameter(f"unknown endpoint {name!r}; known: {', '.join(ENDPOINTS)}",
                                     param_hint="--retire")
    config = EmulatorConfig(
        seed=seed, anonymous_requests_per_second=anonymous_rate,
        keyed_requests_per_second=keyed_rate, rate_limit=not no_rate_limit, latency_s=latency,
        latency_per_gene_s=latency_per_gene, latency_jitter=jitter, faults=fault_map,
        valid_keys=frozenset(valid_keys) or None, arrival_jitter_ms=arrival_jitter_ms,
        keepalive_timeout_s=keepalive_timeout or None, keepalive_max_requests=keepalive_max or None,
        invalid_id_per_mille=invalid_id_per_mille, retired_endpoints=frozenset(retired),
        retired_status=int(retired_status), unknown_id_messages=unknown_id_messages,
        total_count_on_every_page=total_count_every_page, bad_token_status=int(bad_token_status),
        rate_limit_headers_only_on_429=remaining_only_on_429,
        remaining_counted_at=remaining_counted_at,
    )
    try:
        if black_hole:
            from bulkgene.testing.blackhole import serve_black_hole_forever

            asyncio.run(serve_black_hole_forever(port))
        else:
            asyncio.run(serve_forever(config, port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; "
                                   "choose another --port (0 picks a free one)") from None
