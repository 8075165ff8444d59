"""One download around the pipeline: prepare, session, pacer, lease, signals, then summary.json.

    download()
      signals          SIGTERM/INT/HUP held from the first moment, then given to the run
      taxa             with --taxon: their GeneID list, read back or listed (run/taxa.py),
                       becomes an input
      prepare          the directory, the input's plan, the checkpoint, the lock (a thread)
      finishing        whatever happens next: the store closed, summary.json written, the
                       lock released, a fatal error raised with the account attached
      session, pacer, budget lease  →  Pipeline.run()  →  RunOutcome
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bulkgene.config import DownloadConfig
from bulkgene.durable import write_atomically
from bulkgene.errors import GRACEFUL_SIGNALS, BulkgeneError, FatalHTTPError, StateError
from bulkgene.layout import SUMMARY_NAME
from bulkgene.model import Snapshot, Summary
from bulkgene.net.attempt import open_session
from bulkgene.net.client import GeneClient, NetStats
from bulkgene.output.missing import missing_counts, mostly_refused_message
from bulkgene.results import merge
from bulkgene.run.array import unsplit_array_note
from bulkgene.run.interrupt import Interrupter
from bulkgene.run.outlast import outlast
from bulkgene.run.pipeline import Pipeline, RunOutcome
from bulkgene.run.prepare import PreparedRun, prepare
from bulkgene.run.sharing import budget_directory, paced_limiter, shared_budget
from bulkgene.run.taxa import ListingSignals, with_taxon_list
from bulkgene.version import __version__

log = logging.getLogger("bulkgene")


def _summarize(config: DownloadConfig, prepared: PreparedRun, outcome: RunOutcome | None,
               stats: NetStats, elapsed_s: float, error: BaseException | None) -> Summary:
    checkpoint = prepared.checkpoint
    totals = checkpoint.totals
    failed_ids = sum(checkpoint.failed.values())
    _, requested = prepared.plan.task_share(config.task, config.output.batch_size)  # this task's
    return Summary(
        out_dir=str(config.work_dir),
        requested=requested,
        found=totals.found,
        missing=totals.missing,
        failed=failed_ids,
        pending=requested - totals.found - totals.missing - failed_ids - totals.unverified,
        unverified=totals.unverified,
        duplicates=prepared.plan.duplicates_total,
        rejected=prepared.plan.rejected_total,
        records=totals.records,
        replaced=totals.replaced,
        batches=checkpoint.total_batches or 0,
        batches_committed=checkpoint.committed_batches,
        batches_failed=len(checkpoint.failed),
        failed_batch_indexes=sorted(checkpoint.failed)[:1000],
        requests=stats.requests,
        retries=stats.retries,
        throttled=stats.throttled,
        bytes_received=stats.bytes,
        elapsed_s=elapsed_s,
        task_index=config.task.index,
        task_count=config.task.count,
        interrupted=outcome.interrupted if outcome else False,
        error=str(error) if error else None,
        missing_discontinued=totals.missing_discontinued,
        missing_replaced=totals.missing_replaced,
        missing_not_in_history=totals.missing_not_in_history,
        missing_refused=totals.missing_refused,
        followed=totals.followed,
        refused=totals.refused,
    )


def _mostly_refused(config: DownloadConfig, prepared: PreparedRun) -> FatalHTTPError | None:
    """A directory whose GeneIDs the server mostly refused holds no result: an error."""
    counts = missing_counts(config.work_dir)
    totals = prepared.checkpoint.totals
    if counts is None or not counts.refused:
        return None
    answered = totals.found + totals.missing - counts.refused
    return (FatalHTTPError(mostly_refused_message(counts.refused, answered))
            if counts.refused > answered else None)


def _warn_about_plain_http(config: DownloadConfig) -> None:
    url = urlsplit(config.network.base_url)
    loopback = url.hostname in ("localhost", "::1") or (url.hostname or "").startswith("127.")
    if config.network.api_key is not None and url.scheme == "http" and not loopback:
        log.warning("the API key will be sent unencrypted over plain http to %s; use https",
                    url.hostname)


def _log_start(config: DownloadConfig, prepared: PreparedRun) -> None:
    rate = config.effective_requests_per_second
    task = config.task
    counts = prepared.plan.counts
    task_batches, task_ids = prepared.plan.task_share(task, config.output.batch_size)
    where = (f" task {task.index} of {task.count}: {task_ids} of the list's"
             if task.count > 1 else "")
    pace = (f"{rate:g} requests/s (--rate)" if config.network.requests_per_second is not None
            else f"the key's {rate:g} requests/s shared live with every bulkgene on it "
                 f"(budget {budget_directory(config)})")
    log.info("%s%s %d unique GeneIDs (%d duplicates, %d rejected lines); %d batches of up to "
             "%d; %s, %d in flight; writing to %s",
             "resuming" if prepared.resumed else "starting", where,
             prepared.plan.requested_total, prepared.plan.duplicates_total,
             prepared.plan.rejected_total, task_batches,
             config.output.batch_size, pace, config.effective_concurrency, config.work_dir)
    _warn_about_plain_http(config)
    if counts.rejected > counts.requested:
        log.warning("%d input lines were rejected, more than the %d GeneIDs found (see "
                    "rejects.tsv): gene symbols and Ensembl IDs aren't GeneIDs (convert them "
                    "first, e.g. with NCBI's gene_info file), and a table needs its GeneID "
                    "column (--column)", counts.rejected, counts.requested)
    if task.count == 1 and (note := unsplit_array_note()):
        log.info("%s", note)


def _log_progress(snapshot: Snapshot) -> None:
    log.info("%s", snapshot.line())


class _Signals:
    """Graceful signals from the first moment: held until the run exists, then handed to it."""

    def __init__(self) -> None:
        self._early: list[int] = []  # before the run exists: replayed into it, never lost
        self._handler: Callable[[int], None] = self._early.append
        self.cancel = threading.Event()  # stops the copying of an endless or idle input pipe

    def receive(self, signum: int) -> None:
        self.cancel.set()
        self._handler(signum)

    def hand_to(self, handler: Callable[[int], None]) -> None:
        self._handler = handler
        for signum in self._early:
            handler(signum)

    def hold(self) -> None:
        """Hold signals again until the next ``hand_to`` (between one step and the next)."""
        self._early = []
        self._handler = self._early.append


@contextlib.contextmanager
def _graceful_signals(enabled: bool, interrupter: Interrupter | None) -> Iterator[_Signals]:
    signals = _Signals()
    with held_signals(signals.receive if enabled else None):
        if interrupter is not None:
            interrupter.attach(asyncio.get_running_loop(), signals.receive)
        try:
            yield signals
        finally:
            if interrupter is not None:
                interrupter.detach()


@contextlib.contextmanager
def held_signals(receive: Callable[[int], None] | None) -> Iterator[None]:
    """SIGTERM/SIGINT/SIGHUP to ``receive`` (on the running loop) while inside; then the
    handlers that were there before, not the default that would kill the process with no
    word (asyncio's remove_signal_handler puts SIG_DFL back): a command that goes on after
    this phase (fetch --explain) keeps its exit 75."""
    if receive is None:
        yield
        return
    loop = asyncio.get_running_loop()
    before = {signum: signal.getsignal(signum) for signum in GRACEFUL_SIGNALS}
    for signum in GRACEFUL_SIGNALS:
        loop.add_signal_handler(signum, receive, signum)
    try:
        yield
    finally:
        for signum in GRACEFUL_SIGNALS:
            loop.remove_signal_handler(signum)
            if before[signum] is not None:
                signal.signal(signum, before[signum])


async def _prepare(config: DownloadConfig, cancel: threading.Event) -> PreparedRun:
    preparing = asyncio.ensure_future(asyncio.to_thread(prepare, config, cancel))
    try:
        return await asyncio.shield(preparing)
    except asyncio.CancelledError:
        # the thread goes on after a cancel: what it ends holding (the lock, open files) is
        # let go here, or a later download in this process finds the directory taken
        cancel.set()
        await outlast([preparing])
        if not preparing.cancelled() and preparing.exception() is None:
            prepared = preparing.result()
            prepared.store.close()
            prepared.lock.release()
        raise
    except OSError as exc:  # a full or read-only disk, EIO: not a bug
        raise StateError(
            f"writing to {config.work_dir} failed while preparing the run: "
            f"{exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}. Free some space, fix the "
            "permissions or the disk, then run the same command again; nothing committed "
            "before is lost.") from None


@dataclass
class _Finish:
    """What the run has to say when it ends: its outcome and what went over the wire."""

    outcome: RunOutcome | None = None
    stats: NetStats = field(default_factory=NetStats)
    summary: Summary | None = None


@contextlib.asynccontextmanager
async def _finishing(config: DownloadConfig, prepared: PreparedRun,
                     started: float) -> AsyncIterator[_Finish]:
    """Close the store, write summary.json and release the lock, however the run ended;
    then raise the run's fatal error (if any) with the account attached."""
    finish = _Finish()
    cancelled = False
    try:
        yield finish
    except asyncio.CancelledError:
        # cancelled from outside (wait_for, task.cancel, Ctrl-C under a plain asyncio.run):
        # what is committed stays, the lock goes, and the summary says it was interrupted
        cancelled = True
        log.warning("cancelled: what finished is committed in %s; run it again to resume",
                    config.work_dir)
        raise
    finally:
        try:  # still holding the lock: the last writes of this run
            prepared.store.close(prepared.checkpoint)
            error: BulkgeneError | None = finish.outcome.fatal if finish.outcome else None
            finish.summary = _summarize(config, prepared, finish.outcome, finish.stats,
                                        time.monotonic() - started, error)
            if cancelled:
                finish.summary.interrupted = True
            try:
                await asyncio.to_thread(write_atomically, config.work_dir / SUMMARY_NAME,
                                        finish.summary.to_json())
            except (OSError, StateError) as exc:
                # without summary.json the directory can't be verified: no "done" then
                reason = exc if isinstance(exc, StateError) else exc.strerror or exc
                error = error or StateError(
                    f"could not write {config.work_dir / SUMMARY_NAME} ({reason}); the "
                    "checkpoint is unaffected: fix that, then run the same command again")
        finally:
            prepared.lock.release()
    if error is not None:
        error.summary = finish.summary
        raise error


async def download(config: DownloadConfig, *, handle_signals: bool = False,
                   on_progress: Callable[[Snapshot], None] | None = None,
                   interrupter: Interrupter | None = None) -> Summary:
    """Fetch every GeneID of ``config.inputs`` (and with ``config.taxa``, of the taxa's
    list, listed first) into ``config.out_dir``; resumable.

    ``config.output.memory_budget_bytes`` bounds the fetched data held at once (pages of
    batches in flight and results waiting for the writer); one batch larger than it still
    goes alone. ``on_progress`` hears a Snapshot every ``config.progress_interval_s`` seconds
    and once at the end (by default a log line; none when the interval is 0).
    ``handle_signals`` takes SIGTERM/SIGINT/SIGHUP over as the CLI does (a second one exits
    the process); an ``interrupter`` stops the run when asked, from any thread.

    Returns the Summary (also written to ``summary.json``). Raises a BulkgeneError for
    fatal problems, after committing what finished and writing ``summary.json``.
    """
    started = time.monotonic()
    with _graceful_signals(handle_signals, interrupter) as signals:
        stats = NetStats()
        if config.taxa is not None:
            listing = ListingSignals(config.shutdown_grace_s)
            signals.hand_to(listing.on_signal)
            config = await with_taxon_list(config, stats, listing.stop)
            signals.hold()
        prepared = await _prepare(config, signals.cancel)
        if config.task.count > 1:  # this task changes what the array's merged files say
            await asyncio.to_thread(merge.remove_merged, config.out_dir)
        async with _finishing(config, prepared, started) as finish:
            _log_start(config, prepared)
            async with open_session(config.effective_concurrency + 2,
                                    config.network.timeouts.keepalive_s,
                                    f"bulkgene/{__version__} (+aiohttp)") as session:
                limiter = paced_limiter(config, config.effective_requests_per_second)
                client = GeneClient(session, limiter, config, stats=stats)
                finish.stats = client.stats
                report = None
                if config.progress_interval_s > 0:
                    report = on_progress if on_progress is not None else _log_progress
                run = Pipeline(config, prepared, client, report)
                run.exit_at_second_signal = interrupter is None
                signals.hand_to(run.on_signal)
                async with shared_budget(config, limiter) as leases:
                    run.leases = leases
                    finish.outcome = await run.run()
            if finish.outcome.fatal is None and not finish.outcome.interrupted:
                # every batch answered, and most of it refused: no result
                finish.outcome = dataclasses.replace(finish.outcome, fatal=await asyncio.to_thread(
                    _mostly_refused, config, prepared))
    assert finish.summary is not None  # _finishing wrote it or raised
    if config.task.count > 1 and finish.summary.complete:
        await asyncio.to_thread(_merge_if_last, config)
    return finish.summary


def _merge_if_last(config: DownloadConfig) -> None:
    """The task whose end completes the array writes DIR's merged reports and summary
    (which the CLI shows after the task's own account)."""
    try:
        if merge.merged_summary(config.out_dir)["complete"]:
            merge.rebuild_merged(config.out_dir)
    except (OSError, BulkgeneError) as exc:  # the task itself is done: say so, go on
        log.warning("the array is complete, but its merged reports could not be written "
                    "(%s): `bulkgene verify %s` writes them", exc, config.out_dir)
