"""One download around the pipeline: prepare, session, pacer, lease, signals, then summary.json."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from urllib.parse import urlsplit

from bulkgene import __version__
from bulkgene.config import DownloadConfig
from bulkgene.errors import GRACEFUL_SIGNALS, BulkgeneError, StateError
from bulkgene.net.attempt import open_session
from bulkgene.net.client import GeneClient, NetStats
from bulkgene.output.durable import write_atomically
from bulkgene.output.layout import SUMMARY_NAME
from bulkgene.run import checkpoint as ckpt
from bulkgene.run.pipeline import Pipeline
from bulkgene.run.prepare import PreparedRun, prepare
from bulkgene.run.progress import ProgressReporter
from bulkgene.run.sharing import budget_directory, paced_limiter, shared_budget
from bulkgene.run.split import unsplit_array_note
from bulkgene.run.summary import Summary

log = logging.getLogger("bulkgene")


def _summarize(config: DownloadConfig, prepared: PreparedRun, run: Pipeline | None,
               stats: NetStats, elapsed_s: float, error: BaseException | None) -> Summary:
    checkpoint = prepared.checkpoint
    totals = checkpoint.totals
    failed_ids = sum(checkpoint.failed.values())
    counts = prepared.plan.counts
    found = totals.get("found", 0)
    missing = totals.get("missing", 0)
    _, requested = config.task.share(counts.requested, config.output.batch_size)  # this task's share
    return Summary(
        out_dir=str(config.work_dir),
        requested=requested,
        found=found,
        missing=missing,
        failed=failed_ids,
        pending=requested - found - missing - failed_ids - totals.get("unverified", 0),
        unverified=totals.get("unverified", 0),
        duplicates=counts.duplicates,
        rejected=counts.rejected,
        records=totals.get("records", 0),
        replaced=totals.get("replaced", 0),
        batches=checkpoint.total_batches or 0,
        batches_committed=checkpoint.committed_batches,
        batches_failed=len(checkpoint.failed),
        failed_batch_indexes=sorted(checkpoint.failed)[:1000],
        requests=stats.requests,
        retries=stats.retries,
        throttled=stats.throttled,
        bytes_received=stats.bytes,
        elapsed_s=elapsed_s,
        interrupted=run.interrupted if run else False,
        error=str(error) if error else None,
    )


def _warn_about_plain_http(config: DownloadConfig) -> None:
    url = urlsplit(config.network.base_url)
    loopback = url.hostname in ("localhost", "::1") or (url.hostname or "").startswith("127.")
    if config.network.api_key is not None and url.scheme == "http" and not loopback:
        log.warning("the API key will be sent unencrypted over plain http to %s; use https",
                    url.hostname)


async def download(config: DownloadConfig, *, handle_signals: bool = False,
                   progress: ProgressReporter | None = None) -> Summary:
    """Fetch every GeneID of ``config.inputs`` into ``config.out_dir``; resumable.

    ``config.output.memory_budget_bytes`` bounds the fetched data held at once (pages of
    batches in flight and results waiting for the writer); one batch larger than it still
    goes alone.

    Returns the Summary (also written to ``summary.json``). Raises a BulkgeneError for
    fatal problems, after committing what finished and writing ``summary.json``.
    """
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    early_signals: list[int] = []  # before the run exists: replayed into it, never lost
    cancel = threading.Event()  # stops the copying of an endless or idle input pipe

    def on_early_signal(signum: int) -> None:
        early_signals.append(signum)
        cancel.set()

    if handle_signals:
        for signum in GRACEFUL_SIGNALS:
            loop.add_signal_handler(signum, on_early_signal, signum)
    try:
        prepared = await asyncio.to_thread(prepare, config, cancel)
    except BaseException as exc:
        if handle_signals:
            for signum in GRACEFUL_SIGNALS:
                loop.remove_signal_handler(signum)
        if isinstance(exc, OSError):  # a full or read-only disk, EIO: not a bug
            raise StateError(
                f"writing to {config.work_dir} failed while preparing the run: "
                f"{exc.strerror or exc}"
                f"{f' ({exc.filename})' if exc.filename else ''}. Free some space, fix the "
                "permissions or the disk, then run the same command again; nothing committed "
                "before is lost.") from None
        raise
    rate = config.effective_requests_per_second
    task = config.task
    counts = prepared.plan.counts
    task_batches, task_ids = task.share(counts.requested, config.output.batch_size)
    where = (f"task {task.index} of {task.count}: {task_ids} of the list's"
             if task.count > 1 else "")
    pace = (f"{rate:g} requests/s (--rate)" if config.network.requests_per_second is not None
            else f"the key's {rate:g} requests/s shared live with every bulkgene on it "
                 f"(budget {budget_directory(config)})")
    log.info("%s%s %d unique GeneIDs (%d duplicates, %d rejected lines); %d batches of up to "
             "%d; %s, %d in flight; writing to %s",
             "resuming " if prepared.resumed else "starting ", where, counts.requested,
             counts.duplicates, counts.rejected, task_batches,
             config.output.batch_size, pace, config.effective_concurrency, config.work_dir)
    _warn_about_plain_http(config)
    if counts.rejected > counts.requested:
        log.warning("%d input lines were rejected, more than the %d GeneIDs found (see "
                    "rejects.tsv): gene symbols and Ensembl IDs aren't GeneIDs (convert them "
                    "first, e.g. with NCBI's gene_info file), and a table needs its GeneID "
                    "column (--column)", counts.rejected, counts.requested)
    if task.count == 1 and (note := unsplit_array_note()):
        log.info("%s", note)
    run: Pipeline | None = None
    error: BulkgeneError | None = None
    stats = NetStats()
    try:
        async with open_session(config.effective_concurrency + 2,
                                config.network.timeouts.keepalive_s,
                                f"bulkgene/{__version__} (+aiohttp)") as session:
            limiter = paced_limiter(config, rate)
            client = GeneClient(session, limiter, config)
            stats = client.stats
            if progress is None and config.progress_interval_s > 0:
                progress = ProgressReporter(None, config.progress_interval_s)
            run = Pipeline(config, prepared, client, progress)
            if handle_signals:
                for signum in GRACEFUL_SIGNALS:
                    loop.add_signal_handler(signum, run.on_signal, signum)
                for early in early_signals:
                    run.on_signal(early)
            try:
                async with shared_budget(config, limiter) as leases:
                    run.leases = leases
                    await run.run()
            finally:
                if handle_signals:
                    for signum in GRACEFUL_SIGNALS:
                        loop.remove_signal_handler(signum)
                if progress is not None:
                    progress.close()
            error = run.fatal
    finally:
        prepared.store.close()
        try:  # still holding the lock: the last writes of this run
            checkpoint = prepared.checkpoint
            if (run is not None and run.total_batches is not None and not run.write_failed
                    and checkpoint.total_batches is None):
                checkpoint.total_batches = run.total_batches
                await asyncio.to_thread(ckpt.save, config.work_dir, checkpoint)
            summary = _summarize(config, prepared, run, stats, time.monotonic() - started,
                                 error)
            try:
                await asyncio.to_thread(write_atomically, config.work_dir / SUMMARY_NAME,
                                        summary.to_json())
            except (OSError, StateError) as exc:
                # without summary.json the directory can't be verified: no "done" then
                reason = exc if isinstance(exc, StateError) else exc.strerror or exc
                error = error or StateError(
                    f"could not write {config.work_dir / SUMMARY_NAME} ({reason}); the "
                    "checkpoint is unaffected: fix that, then run the same command again")
        finally:
            prepared.lock.release()
    if error is not None:
        error.summary = summary
        raise error
    return summary
