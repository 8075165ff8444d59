"""A download's first step when it names taxa: their fixed GeneID list becomes one of its inputs.

(Also what ``--dry-run`` asks NCBI about the taxa: ``count_taxa``.)

The list lives in the plan directory (``DIR``; an array's tasks share it, as they share the
plan): read back if an earlier run fixed it, else listed now (run/enumeration.py) under that
directory's lock, with a session, pacer and budget lease of its own that end before the
fetch takes its own. In an array, whichever task comes first lists; the others wait while
the listing makes progress (a page committed at least every ``_STALL_S``), then read it.
``--restart`` of a run that is not split moves the old run, list included, aside first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bulkgene import layout
from bulkgene.config import DownloadConfig
from bulkgene.errors import EXIT_INTERRUPTED, FatalHTTPError, Interrupted, StateError
from bulkgene.input.taxon_list import TAXA_DIR, TaxonList, load_list
from bulkgene.ncbi.taxon import (
    Notice,
    parse_taxon_counts,
    parse_taxon_page,
    taxon_counts_request,
    taxon_page_request,
)
from bulkgene.net.attempt import SessionTransport, open_session
from bulkgene.net.exchange import Exchanger, GaveUp, NetStats, Refused
from bulkgene.net.gather import gather
from bulkgene.output.lock import RunLock, lock_running
from bulkgene.run import refresh
from bulkgene.run.enumeration import list_taxa
from bulkgene.run.prepare import plan_directory
from bulkgene.run.restart import move_aside
from bulkgene.run.sharing import paced_limiter, shared_budget
from bulkgene.version import __version__

log = logging.getLogger("bulkgene")
_STALL_S = 600.0  # another task's listing that commits nothing for this long is given up on
_POLL_S = 0.5


def _last_progress_s(directory: Path) -> float:
    """When the listing in ``directory`` last committed anything (wall clock)."""
    taxa_dir = directory / TAXA_DIR
    try:
        return max((path.stat().st_mtime for path in taxa_dir.iterdir()),
                   default=taxa_dir.stat().st_mtime)
    except OSError:
        return time.time()


class ListingSignals:
    """SIGTERM/INT/HUP while the taxa are listed: the first ends the listing after the pages
    in flight (``stop``), a second exits at once (committed pages are safe either way)."""

    def __init__(self, grace_s: float) -> None:
        self.stop = asyncio.Event()
        self._grace_s = grace_s
        self._count = 0

    def on_signal(self, signum: int) -> None:
        self._count += 1
        name = signal.Signals(signum).name
        if self._count > 1:
            sys.stderr.write(f"bulkgene: second {name}: exiting now. Every page listed is "
                             "safe; re-run the same command to go on.\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        log.warning("%s received: finishing the pages in flight (up to %.0f s), then stopping. "
                    "Send it again to exit at once.", name, self._grace_s)
        self.stop.set()


async def _take_waiting(lock: RunLock, stop: asyncio.Event) -> None:
    """Take ``lock``, waiting while its live holder's listing makes progress."""
    announced = False
    while True:
        try:
            lock.acquire()
            return
        except StateError:
            stalled = time.time() - _last_progress_s(lock.path.parent) > _STALL_S
            if lock_running(lock.path.parent) is False or stalled:
                raise
        if not announced:
            log.info("another task of the array is listing the taxa's GeneIDs into %s: "
                     "waiting for its list", lock.path.parent)
            announced = True
        try:
            await asyncio.wait_for(stop.wait(), _POLL_S)
        except TimeoutError:
            continue
        raise Interrupted("interrupted while waiting for another task's list of the taxa's "
                          "GeneIDs; nothing was fetched: run the same command again")


@contextlib.asynccontextmanager
async def _network(config: DownloadConfig, stats: NetStats) -> AsyncIterator[Exchanger]:
    """A session, the run's pacer and its budget lease, as the fetch has them, for as long
    as the taxa are asked about (they end before the fetch takes its own)."""
    async with open_session(config.effective_concurrency + 2,
                            config.network.timeouts.keepalive_s,
                            f"bulkgene/{__version__} (+aiohttp)") as session:
        limiter = paced_limiter(config, config.effective_requests_per_second)
        async with shared_budget(config, limiter):
            yield Exchanger(SessionTransport(session), limiter, config, stats)


async def _list(config: DownloadConfig, directory: Path, stats: NetStats,
                stop: asyncio.Event) -> TaxonList:
    async with _network(config, stats) as exchanger:
        return await list_taxa(exchanger, config, directory, stop)


async def _refresh(config: DownloadConfig, directory: Path, stats: NetStats,
                   stop: asyncio.Event) -> None:
    """``--refresh-list`` on a run whose list is complete: list the taxa again and grow the
    run by what is new, once the run is finished (else go on with it: run/refresh.py)."""
    plan = await asyncio.to_thread(refresh.run_plan, config, directory)
    if plan is None:
        log.info("--refresh-list: nothing of the list is fetched yet; fetching it first")
        return
    if pending := await asyncio.to_thread(refresh.unfinished, config, plan):
        log.info("--refresh-list: the run has GeneIDs still to fetch (%s): going on with "
                 "them; the taxa are listed again once it is finished", ", ".join(pending[:3]))
        return
    where = refresh.next_refresh(directory)
    number = int(where.name.rsplit("-", 1)[1])
    log.info("--refresh-list: listing the taxa again (refresh %d)", number)
    where.mkdir(parents=True, exist_ok=True)
    refreshed = await _list(config, where, stats, stop)
    if not refreshed.gene_ids:
        log.warning("--refresh-list: no taxon gave any GeneID this time (see %s): the run is "
                    "left as it was; try again later", where / "missing_taxa.tsv")
        return
    await asyncio.to_thread(refresh.apply, config, directory, refreshed, number)


async def with_taxon_list(config: DownloadConfig, stats: NetStats,
                          stop: asyncio.Event) -> DownloadConfig:
    """``config`` with its taxa's GeneID list among its inputs (none if no taxon gave a
    GeneID and there are other inputs); ``stop`` set ends the listing resumably."""
    if config.taxa is None:
        return config
    directory = plan_directory(config)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock = RunLock(directory)
    restarted = False
    if config.task.count > 1:
        await _take_waiting(lock, stop)
    else:
        lock.acquire()
    try:
        if config.restart and config.task.count == 1:
            if (moved := move_aside(directory, config.out_dir)) is not None:
                (moved / layout.LOCK_NAME).unlink(missing_ok=True)
                directory.mkdir(parents=True, exist_ok=True)
                lock.acquire()  # ours moved away with the old run
                log.info("--restart: the old run, its list of GeneIDs included, is now in %s",
                         moved)
            restarted = True
        done = await asyncio.to_thread(load_list, directory, config.taxa,
                                       config.network.server)
        if done is None:
            done = await _list(config, directory, stats, stop)
        elif config.taxa.refresh:
            await _refresh(dataclasses.replace(config, inputs=(
                *config.inputs, str(done.genes_path(directory)))), directory, stats, stop)
    except BaseException:
        lock.release()
        if created and not any(directory.iterdir()):
            directory.rmdir()
        raise
    lock.release()
    inputs = config.inputs
    if done.gene_ids:
        inputs = (*inputs, str(done.genes_path(directory)))
    # prepare must not move the fresh list aside again
    return dataclasses.replace(config, inputs=inputs,
                               restart=config.restart and not restarted)


async def count_taxa_now(config: DownloadConfig) -> tuple[list[TaxonCount], int]:
    """What NCBI says about each taxon of ``config`` (``fetch --dry-run``), and the number
    of requests that took; writes nothing."""
    stats = NetStats()
    async with _network(config, stats) as exchanger:
        try:
            return await count_taxa(exchanger, config), stats.requests
        except GaveUp as exc:
            raise FatalHTTPError(f"could not ask NCBI about the taxa ({exc}); check the "
                                 "network with `bulkgene doctor` and try again") from None


@dataclass(frozen=True)
class TaxonCount:
    """What NCBI says about a taxon before anything is listed (``fetch --dry-run``)."""

    taxon: str
    by_type: list[tuple[str, int]]  # /counts, as NCBI spells the types
    listed: int | None  # total_count of an IDS_ONLY page with the run's filters
    notices: list[Notice]
    refused: str | None = None


async def count_taxa(exchanger: Exchanger, config: DownloadConfig) -> list[TaxonCount]:
    """For each taxon: its genes by type (``/gene/taxon/counts``) and how many the run
    would list (one IDS_ONLY page of size 1 with the run's ``types`` and subtree)."""
    selection = config.taxa
    if selection is None:
        raise ValueError("count_taxa needs config.taxa")
    attempts = config.network.retry.max_attempts
    slots = asyncio.Semaphore(max(1, config.effective_concurrency))

    async def count(taxon: str) -> TaxonCount:
        async with slots:
            try:
                by_type = await exchanger.exchange(
                    taxon_counts_request(taxon), attempts,
                    lambda reply: parse_taxon_counts(reply.body))
                page = await exchanger.exchange(
                    taxon_page_request(taxon, gene_types=selection.gene_types,
                                       include_subtree=selection.include_subtree,
                                       page_size=1),
                    attempts, lambda reply: parse_taxon_page(reply.body))
            except Refused as exc:
                return TaxonCount(taxon, [], None, [], f"HTTP {exc.status}: {exc.message}")
        listed = page.total_count if page.gene_ids or page.total_count else 0
        return TaxonCount(taxon, by_type, listed, page.notices)

    # one error, as the run's own listing ends with (a task group would raise them all,
    # wrapped in an ExceptionGroup, one per taxon)
    return await gather([count(taxon) for taxon in selection.taxa])
