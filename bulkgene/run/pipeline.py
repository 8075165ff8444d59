"""The pipeline: producer -> N fetch workers -> one writer, in one TaskGroup, with graceful stops.

    producer    streams the input into batches, skips committed ones     -> batch queue
    workers     fetch_batch() under the shared rate limiter               -> result queue
    writer      commits results (durable data, then the checkpoint), in a thread

Memory is bounded by bytes, not only by count: a worker reserves a batch's expected size
in a MemoryBudget before fetching it (its pages accumulate meanwhile), trues it up to the
result's real size, and the writer releases it once the result is on disk. A 1000-gene
COMPLETE batch is ~5 MB, so a count alone would let 16 in flight and 32 queued hold 250 MB.

A fatal error (bad key, outage) or a signal sets ``stopping``: the producer stops, workers
take no new batches, in-flight batches get a grace period and are then cancelled, and the
writer commits everything that finished. Python 3.11 queues can't be shut down, so each
worker gets one ``None`` sentinel and sends one on to the writer.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from bulkgene.budget import BudgetLease
from bulkgene.config import DownloadConfig
from bulkgene.errors import EXIT_INTERRUPTED, BulkgeneError, StateError
from bulkgene.model import Batch, BatchFailure, BatchOutcome, BatchResult, Snapshot
from bulkgene.net.client import GeneClient, NetStats
from bulkgene.output import checkpoint as ckpt
from bulkgene.output.checkpoint import Checkpoint
from bulkgene.run.memory import MemoryBudget
from bulkgene.run.outlast import outlast
from bulkgene.run.prepare import PreparedRun

log = logging.getLogger("bulkgene")

# a Record's Python objects besides its line: the object, the queries tuple, the ints
_RECORD_OVERHEAD_BYTES = 200
# what a GeneID is expected to cost before any batch has been seen: a COMPLETE report is
# 1-8 KB (IDS_ONLY far less, learnt from the first results)
_FIRST_GUESS_BYTES_PER_ID = 8 << 10
_LEARNING_WEIGHT = 0.25  # of the newest batch in the running bytes-per-ID estimate


def result_bytes(result: BatchResult) -> int:
    """What a result holds in memory until it is written: its lines and their records."""
    if not isinstance(result, BatchOutcome):
        return 0
    return sum(len(record.line) for record in result.records) + (
        _RECORD_OVERHEAD_BYTES * len(result.records))


@dataclass(frozen=True)
class RunOutcome:
    """How a pipeline run ended: stopped by a signal, by a fatal error, or neither."""

    interrupted: bool
    fatal: BulkgeneError | None


class Pipeline:
    """One download's moving parts and the state they share."""

    def __init__(self, config: DownloadConfig, prepared: PreparedRun, client: GeneClient,
                 on_progress: Callable[[Snapshot], None] | None) -> None:
        self.config = config
        self.on_progress = on_progress  # every config.progress_interval_s, and at the end
        self.task_batches, self.task_ids = prepared.plan.task_share(config.task,
                                                                    config.output.batch_size)
        self.prepared = prepared
        self.client = client
        self.workers = config.effective_concurrency
        self.batches: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self.workers)
        # each result travels with the bytes it holds in the budget, for the writer to release
        self.results: asyncio.Queue[tuple[BatchResult, int] | None] = asyncio.Queue(
            maxsize=2 * self.workers)
        self.memory = MemoryBudget(config.output.memory_budget_bytes)
        self._bytes_per_id = float(_FIRST_GUESS_BYTES_PER_ID)
        self._bytes_per_id_seen = False  # the first answer replaces the guess outright
        self.stopping = asyncio.Event()
        self.interrupted = False
        self.fatal: BulkgeneError | None = None
        self.in_flight: set[asyncio.Task[BatchResult]] = set()
        self.total_batches: int | None = None
        self._signals = 0
        # the CLI's second signal ends the process; a library's caller (a notebook's kernel)
        # must live on, so there it drops what is in flight instead
        self.exit_at_second_signal = True
        self._committed_stats = NetStats()
        self.results_done = asyncio.Event()
        self.write_failed = False
        self.leases: list[BudgetLease] = []
        self._started = time.monotonic()
        self._done_at_start = prepared.checkpoint.ids_done

    async def run(self) -> RunOutcome:
        """Fetch and commit every batch this task still needs; how the run ended."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._produce())
            for _ in range(self.workers):
                group.create_task(self._work())
            group.create_task(self._write())
            reporter = group.create_task(self._report())
            rate_reporter = group.create_task(self._report_rate())
            await self.results_done.wait()
            reporter.cancel()
            rate_reporter.cancel()
        if self.on_progress is not None:  # the last word: where the run ended, 100 % if done
            self.on_progress(self.snapshot(time.monotonic() - self._started,
                                           self._done_at_start))
        await self._record_the_end()
        return RunOutcome(self.interrupted, self.fatal)

    async def _record_the_end(self) -> None:
        """The run's last save: the batch total, once the producer saw the end of the input
        (so status and verify can tell a complete directory from a partial one), and the
        requests sent since the last commit (so status counts every run's requests, not
        only those before each run's last commit)."""
        checkpoint = self.prepared.checkpoint
        learnt_total = self.total_batches is not None and checkpoint.total_batches is None
        uncounted = self.client.stats != self._committed_stats
        if self.write_failed or not (learnt_total or uncounted):
            return
        final = copy.deepcopy(checkpoint)
        if learnt_total:
            final.total_batches = self.total_batches
        final.totals.count_network(**self._network_delta())
        try:
            await self._save(final)
        except (OSError, StateError) as exc:
            self._stop_on_write_error(exc)

    async def _produce(self) -> None:
        def wanted(index: int) -> bool:
            # this task numbers its own batches 0, 1, 2... (then those of the segments a
            # grown run added): the checkpoint's watermark advances with no gaps left by
            # the other tasks
            return not self.prepared.checkpoint.is_committed(index)

        for batch in self.prepared.plan.task_batches(self.config.task,
                                                     self.config.output.batch_size, wanted):
            if self.stopping.is_set():
                break
            await self.batches.put(batch)
        else:
            self.total_batches = self.task_batches
        # only a producer that ended by itself says goodbye: one whose put was cancelled (the
        # task group is coming down on another task's error) would block here forever on a
        # full queue whose workers are gone
        for _ in range(self.workers):
            await self.batches.put(None)

    async def _work(self) -> None:
        while (batch := await self.batches.get()) is not None:
            if self.stopping.is_set():
                continue  # left uncommitted: the next run fetches it
            await self._fetch(batch)
        await self.results.put(None)

    async def _fetch(self, batch: Batch) -> None:
        """Fetch ``batch`` within the memory budget and hand it to the writer.

        A function of its own so that nothing here outlives the hand-over: a loop's locals
        (the result, the task holding it) would keep a ~5 MB batch alive in every worker
        until its next batch arrived, long after the writer had written and released it.
        """
        current = asyncio.current_task()
        expected = round(self._bytes_per_id * len(batch.gene_ids))
        await self.memory.reserve(expected)  # waits while the writer catches up
        if self.stopping.is_set():
            self.memory.release(expected)
            return
        task = asyncio.create_task(self.client.fetch_batch(batch))
        self.in_flight.add(task)
        try:
            result = await task
        except asyncio.CancelledError:
            self.memory.release(expected)
            if current is not None and current.cancelling():
                raise
            return  # aborted by a stop: uncommitted, fetched again next run
        except BulkgeneError as exc:
            self.memory.release(expected)
            self.stop(fatal=exc)
            return
        finally:
            self.in_flight.discard(task)
        held = result_bytes(result)
        self.memory.resize(expected, held)
        if isinstance(result, BatchOutcome):
            # a batch of only missing IDs says little about the next: it can't replace the guess
            weight = _LEARNING_WEIGHT if self._bytes_per_id_seen or not held else 1.0
            self._bytes_per_id += weight * (held / len(batch.gene_ids) - self._bytes_per_id)
            self._bytes_per_id_seen = self._bytes_per_id_seen or held > 0
        await self.results.put((result, held))

    async def _write(self) -> None:
        open_workers = self.workers
        while open_workers:
            items = [await self.results.get()]
            while not self.results.empty():
                items.append(self.results.get_nowait())
            held = [item for item in items if item is not None]
            open_workers -= len(items) - len(held)
            results = [result for result, _ in held]
            held_bytes = sum(nbytes for _, nbytes in held)
            del items, held  # from here on only ``results`` keeps the records alive
            try:
                if results and not self.write_failed:  # else draining: no worker waits forever
                    await self._commit(results)
                    self._log_failures(results)
            except (OSError, StateError) as exc:
                self._stop_on_write_error(exc)
            finally:
                # written (or given up): drop the records now, not when the next result
                # arrives, and give their bytes back so that waiting workers may fetch
                results.clear()
                self.memory.release(held_bytes)
        self.results_done.set()

    def _stop_on_write_error(self, exc: OSError | StateError) -> None:
        self.write_failed = True
        if isinstance(exc, OSError):
            exc = StateError(
                f"writing to {self.config.work_dir} failed ({exc.strerror or exc}): free some "
                "space or fix the permissions, then run the same command again; everything "
                "committed before is safe")
        self.stop(fatal=exc)  # a StateError as it is: a file there is not ours (a link)

    @staticmethod
    def _log_failures(results: list[BatchResult]) -> None:
        for result in results:
            if isinstance(result, BatchFailure):
                log.warning("batch %d (%d IDs from GeneID %d) failed: %s; a re-run retries it",
                            result.batch.index, len(result.batch.gene_ids),
                            result.batch.gene_ids[0], result.reason)

    async def _commit(self, results: list[BatchResult]) -> None:
        """Commit ``results`` whole even when the run is cancelled meanwhile.

        The writing and the checkpoint's save run in threads that a cancel doesn't stop: had
        the save landed and the run not learnt it, the cleanup would cut the files back to the
        older checkpoint it knew, behind the one on disk (missing.tsv emptied, a resume
        refused). So a cancel waits for the commit on its way, then goes on.
        """
        commit = asyncio.ensure_future(self._commit_now(results))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await outlast([commit])
            if not commit.cancelled() and commit.exception() is not None:
                log.debug("a commit ended by a cancel failed: %s", commit.exception())
            raise

    async def _commit_now(self, results: list[BatchResult]) -> None:
        """Durable data first (in a thread), then the checkpoint, which only this loop touches."""
        receipt = await asyncio.to_thread(self.prepared.store.write, results)
        # the next state is built on a copy and becomes the run's only once it is saved: a
        # failed save must leave the account exactly as committed on disk
        checkpoint = copy.deepcopy(self.prepared.checkpoint)
        for failed_index, id_count in receipt.failed:
            checkpoint.mark_failed(failed_index, id_count)
        for written in receipt.written:
            checkpoint.totals.count_written(
                found=written.found, missing=written.missing, replaced=written.replaced,
                records=written.records, unverified=written.unverified,
                followed=written.followed, missing_discontinued=written.missing_discontinued,
                missing_replaced=written.missing_replaced,
                missing_not_in_history=written.missing_not_in_history,
                missing_refused=written.missing_refused, refused=written.refused)
            checkpoint.mark_committed(written.batch_index)
        checkpoint.file_lengths.update(receipt.file_lengths)
        checkpoint.totals.count_network(**self._network_delta())
        await self._save(checkpoint)

    async def _save(self, checkpoint: Checkpoint) -> None:
        """Make ``checkpoint`` durable, then the run's own: a failed save leaves the state
        the loop reads exactly as committed on disk."""
        checkpoint.updated_at = checkpoint.run_saved_at = time.time()
        await asyncio.to_thread(ckpt.save, self.config.work_dir, checkpoint)
        self.prepared.checkpoint = checkpoint

    def _network_delta(self) -> dict[str, int]:
        now = asdict(self.client.stats)
        before = asdict(self._committed_stats)
        self._committed_stats = NetStats(**now)
        return {name: now[name] - before[name] for name in now}

    async def _report_rate(self) -> None:
        """Publish the pacer's rate in the budget lease, for `bulkgene status`; stop the run
        if a lease could not be kept (its directory refuses writes for too long)."""
        while self.leases:
            for lease in self.leases:
                lease.report_rate(self.client.limiter.rate)
                if lease.failure is not None:
                    self.stop(fatal=lease.failure)
                    return
            await asyncio.sleep(1.0)

    async def _report(self) -> None:
        if self.on_progress is None:
            return
        while True:
            await asyncio.sleep(self.config.progress_interval_s)
            self.on_progress(self.snapshot(time.monotonic() - self._started,
                                           self._done_at_start))

    def ids_done(self) -> int:
        return self.prepared.checkpoint.ids_done

    def snapshot(self, elapsed_s: float, done_at_start: int) -> Snapshot:
        checkpoint = self.prepared.checkpoint
        stats = self.client.stats
        done = self.ids_done()
        return Snapshot(
            batches_done=checkpoint.committed_batches, batches_failed=len(checkpoint.failed),
            batches_total=self.task_batches, ids_done=done, ids_total=self.task_ids,
            found=checkpoint.totals.found, requests=stats.requests,
            retries=stats.retries, throttled=stats.throttled, elapsed_s=elapsed_s,
            ids_per_s=(done - done_at_start) / elapsed_s if elapsed_s > 0 else 0.0)

    def stop(self, fatal: BulkgeneError | None = None) -> None:
        """Stop taking batches; with ``fatal``, also abort what is in flight now."""
        if fatal is not None and self.fatal is None:
            self.fatal = fatal
            # said once, by whoever catches it (the CLI prints it as the run's error)
            log.debug("stopping: %s", fatal)
        self.stopping.set()
        if fatal is not None:
            self.abort_in_flight()

    def abort_in_flight(self) -> None:
        for task in list(self.in_flight):
            task.cancel()

    def on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1 and not self.exit_at_second_signal:
            log.warning("second %s: dropping the batches in flight now; committed work is "
                        "safe, the next run fetches them", name)
            self.abort_in_flight()
            return
        if self._signals > 1:
            sys.stderr.write(f"bulkgene: second {name}: exiting now. Committed work is safe; "
                             "re-run the same command to resume.\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        grace = self.config.shutdown_grace_s
        log.warning("%s received: finishing in-flight batches (up to %.0f s), then stopping. "
                    "Send it again to %s.", name, grace,
                    "exit at once" if self.exit_at_second_signal else "drop them at once")
        self.interrupted = True
        self.stop()
        asyncio.get_running_loop().call_later(grace, self.abort_in_flight)
