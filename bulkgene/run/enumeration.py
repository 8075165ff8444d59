"""Listing the GeneIDs of a run's taxa: one page chain per taxon, concurrently, through the run's pacer.

Each taxon pages IDS_ONLY reports of 1000 (ncbi/taxon.py), every request through the same
Exchanger as the ID fetch (pacer, budget lease, retry policy), and commits page by page
(input/taxon_list.py), so a killed run goes on from the last token it committed. The
decisions, each for a reason recorded in docs/ncbi-gene-taxon.md:

- page 1 refused as a whole (400, a persistent 404): the taxon is reported missing with the
  server's words; page 1 answered with nothing (``{}``, or only warnings): missing with
  NCBI's code (``ABOVE_SPECIES_TAXON``, ...) or ``NOTHING_FOUND``. Neither stops the others.
- a next page failing ``token_attempts`` times, the same token twice, more pages than
  ``total_count`` can need, ``IDLE_PAGES`` pages in a row that add no new GeneID: the chain
  starts over from page 1 (NCBI answers a token it no longer takes with 500, every time).
- a page 1 that offers a next page but no ``total_count`` (NCBI counts a taxon's genes on
  its first page), or one above ``MAX_TOTAL_COUNT``: nothing bounds that chain, so it is not
  followed and the taxon fails at once (a server that never ends must not hang the run).
- after the last page, the unique GeneIDs are compared with page 1's ``total_count``: short,
  the chain is listed once more (the list may have changed while it was paged); still short,
  it is kept, flagged in taxa.tsv and warned about. GeneIDs a page repeats are dropped and
  counted, as NCBI's CLI drops them.
- a chain that gets no page after every attempt (or keeps starting over) fails: the other
  chains finish, then ListingIncomplete says to re-run.
- a taxon of more than ``SPLIT_ABOVE_PAGES`` pages, while few taxa are left to list, is
  listed in parts, one chain per gene type (the API's ``types``), side by side: a token
  chain is serial, one page a round trip, and leaves most of the budget idle; NCBI's genes
  of one type are not of another, so the parts together are the taxon. The parts cost one
  request each more (most types are empty), so with many taxa in flight, which use the
  budget anyway, a taxon stays one chain. The parts are taken only if their
  ``total_count`` add up to the whole's; if not (a type the API does not name), the taxon's
  own chain goes on from page 2, where page 1 left it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from bulkgene.config import GENE_TYPES, DownloadConfig, TaxonSelection
from bulkgene.errors import BulkgeneError, InputError, Interrupted, ListingIncomplete
from bulkgene.input.taxon_fixed import describe, finalize
from bulkgene.input.taxon_list import Chain, TaxonList, begin, load_list
from bulkgene.ncbi.taxon import (
    MAX_GENE_ID,
    TAXON_PAGE_SIZE,
    Notice,
    parse_taxon_page,
    taxon_page_request,
)
from bulkgene.net.exchange import Exchanger, GaveUp, Refused
from bulkgene.run.empty_taxa import NO_GENE_OF_TYPES, explain_empty
from bulkgene.run.outlast import outlast

log = logging.getLogger("bulkgene")

T = TypeVar("T")
P = ParamSpec("P")


class Offload(Protocol):
    """How file work leaves the event loop (a page commit fsyncs twice): a worker thread by
    default (``asyncio.to_thread``); tests on a virtual clock run it inline."""

    def __call__(self, function: Callable[P, T], /, *args: P.args,
                 **kwargs: P.kwargs) -> Awaitable[T]: ...


SHORT_RELISTS = 1  # a chain short of its total_count is listed again this often
SPLIT_ABOVE_PAGES = 3  # a taxon longer than this is listed in parts, one per gene type
# pages in a row that add no new GeneID while the server still offers a next one: NCBI's
# pages repeat a few GeneIDs when the list shifts under them, never a whole page
IDLE_PAGES = 3
# a total_count above this is no count: no list holds more GeneIDs than there can be
MAX_TOTAL_COUNT = MAX_GENE_ID
_SUBTREE_CODES = ("ABOVE_SPECIES_TAXON", "NO_GENE_ANNOTATION_FOUND")


class _StartOver(Exception):
    """The chain broke: list the taxon again from page 1."""


@dataclass
class _Watch:
    """What one pass down a chain has seen, to tell a chain going round from a long one."""

    tokens: set[str] = field(default_factory=set)
    idle_pages: int = 0  # pages in a row, up to this one, that added no new GeneID


@dataclass
class _Listing:
    """What the chains share: the exchanger, the selection, the stop signal, progress."""

    exchanger: Exchanger
    selection: TaxonSelection
    max_attempts: int
    token_attempts: int
    stop: asyncio.Event
    progress_interval_s: float
    offload: Offload
    directory: Path
    concurrency: int
    slots: asyncio.Semaphore
    chains: list[Chain] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    fatal: BulkgeneError | None = None
    last_report_s: float = 0.0

    def report(self) -> None:
        """A plain progress line now and then (listing 60 000 pages takes hours)."""
        now = asyncio.get_running_loop().time()
        if self.progress_interval_s <= 0 or now - self.last_report_s < self.progress_interval_s:
            return
        self.last_report_s = now
        done = sum(1 for chain in self.chains if chain.state.done)
        promised = sum(chain.state.total_count or 0 for chain in self.chains)
        log.info("listing taxa: %d of %d done, %d GeneIDs listed%s", done, len(self.chains),
                 sum(chain.taxon_listed for chain in self.chains),
                 f" of about {promised}" if promised else "")

    @property
    def split_types(self) -> tuple[str, ...]:
        """The gene types a big taxon is listed in parts by (none: it can't be split)."""
        types = self.selection.gene_types or GENE_TYPES
        return types if len(types) > 1 else ()


def _report_interval_s(config: DownloadConfig) -> float:
    """A listing's progress line at the run's interval, but never more often than every
    10 s (a terminal's bar refreshes twice a second; a listing says less)."""
    interval = config.progress_interval_s
    return 0.0 if interval <= 0 else max(interval, 10.0)


async def list_taxa(exchanger: Exchanger, config: DownloadConfig, directory: Path,
                    stop: asyncio.Event | None = None,
                    offload: Offload = asyncio.to_thread) -> TaxonList:
    """The complete GeneID list of ``config.taxa`` in ``directory``: read back if a run
    made it, else listed (going on from what an earlier run committed) and fixed.

    Raises Interrupted when ``stop`` is set (every committed page is kept),
    ListingIncomplete when a chain failed, InputError when no taxon gave a GeneID and
    there is no other input.
    """
    selection = config.taxa
    if selection is None:
        raise ValueError("list_taxa needs config.taxa")
    server = config.network.server
    done = await offload(load_list, directory, selection, server)
    if done is not None:
        return done
    await offload(begin, directory, selection, server)
    retry = config.network.retry
    listing = _Listing(exchanger, selection, retry.max_attempts, retry.token_attempts,
                       stop or asyncio.Event(), _report_interval_s(config), offload, directory,
                       config.effective_concurrency,
                       asyncio.Semaphore(max(1, config.effective_concurrency)),
                       last_report_s=asyncio.get_running_loop().time())
    for index, taxon in enumerate(selection.taxa):
        chain = await offload(Chain.open, directory, index, taxon)
        if chain.state.split:
            await _open_parts(chain, listing)
        listing.chains.append(chain)
    pending = [chain for chain in listing.chains if not chain.state.done]
    if pending:
        log.info("listing the GeneIDs of %d tax%s (%s)%s", len(pending),
                 "on" if len(pending) == 1 else "a", _names(pending),
                 " from the pages an earlier run committed" if any(
                     chain.state.pages for chain in pending) else "")

    async def run(chain: Chain) -> None:
        try:
            failure = await _run_taxon(chain, listing)
        except BulkgeneError as exc:  # a bad key, an outage: every chain stops
            listing.fatal = listing.fatal or exc
            listing.stop.set()
            return
        if failure is not None:
            listing.failures.append(failure)

    await _run_all([asyncio.create_task(run(chain)) for chain in pending], listing.stop,
                   config.shutdown_grace_s)
    if listing.fatal is not None:
        raise listing.fatal
    if listing.stop.is_set() and not all(chain.state.done for chain in listing.chains):
        raise Interrupted("interrupted while listing the taxa's GeneIDs; every page listed so "
                          "far is saved: run the same command again to go on")
    if listing.failures:
        raise ListingIncomplete(
            "listing the GeneIDs failed for " + "; ".join(listing.failures[:3])
            + (f" (and {len(listing.failures) - 3} more)" if len(listing.failures) > 3 else "")
            + ". Every page listed so far is saved: run the same command again to go on from "
            "there (nothing has been fetched yet)")
    await explain_empty(exchanger, selection, listing.chains, retry.max_attempts, offload)
    done = await offload(finalize, directory, selection, listing.chains, server)
    _warn_about(done, selection)
    reasons = [reason for result in done.taxa if (reason := result.missing_reason) is not None]
    if not done.gene_ids and not config.inputs and all(
            code == NO_GENE_OF_TYPES for code, _ in reasons):
        raise InputError(
            f"no taxon has a gene of the types asked (see {directory / 'missing_taxa.tsv'}): "
            + "; ".join(f"{result.taxon!r}: {reason[1]}" for result in done.taxa[:5]
                        if (reason := result.missing_reason) is not None)
            + ". Nothing is to be fetched: give --gene-type one of the types a taxon has, or "
            "leave --gene-type out for all its genes")
    if not done.gene_ids and not config.inputs:
        raise InputError(
            f"no taxon gave any GeneID (see {directory / 'missing_taxa.tsv'}): "
            + "; ".join(f"{result.taxon!r}: {reason[0]}" for result in done.taxa[:5]
                        if (reason := result.missing_reason) is not None)
            + ". Check the names or tax IDs (e.g. 9606, human, 'Homo sapiens'); above species "
            "add --include-subtree; if they are right, NCBI's taxonomy may be down: try again "
            "later")
    log.info("%s", describe(done))
    return done


async def _run_all(tasks: list[asyncio.Task[None]], stop: asyncio.Event, grace_s: float
                   ) -> None:
    """Wait for the chains; once ``stop`` is set, give the pages in flight ``grace_s`` to
    land and commit, then cancel the rest (what they committed stays)."""
    if not tasks:
        return
    everything = asyncio.gather(*tasks)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        either: set[asyncio.Future[Any]] = {everything, stopped}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not everything.done():
            await asyncio.wait({everything}, timeout=grace_s)
        if not everything.done():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            everything.exception()  # retrieved: the cancellation is ours
            return
        everything.result()  # a bug in a chain surfaces here
    except asyncio.CancelledError:
        # cancelled from outside (a library download's task.cancel, wait_for): the chains
        # end with it, before the session they send through is closed
        for task in tasks:
            task.cancel()
        await outlast(tasks)
        if not everything.cancelled():
            everything.exception()  # retrieved: the cancellation is ours
        raise
    finally:
        stopped.cancel()


def _names(chains: list[Chain]) -> str:
    shown = ", ".join(repr(chain.taxon) for chain in chains[:4])
    return shown + (f", and {len(chains) - 4} more" if len(chains) > 4 else "")


def _warn_about(done: TaxonList, selection: TaxonSelection) -> None:
    for result in done.missing:
        reason = result.missing_reason
        assert reason is not None
        hint = (" (add --include-subtree for the genes of the taxa below it)"
                if reason[0] in _SUBTREE_CODES and not selection.include_subtree else "")
        log.warning("taxon %r gave no GeneID: %s, %s%s (missing_taxa.tsv)", result.taxon,
                    reason[0], reason[1], hint)
    for result in done.taxa:
        if result.short:
            log.warning("taxon %r: NCBI's total_count promised %s GeneIDs, its pages gave %d "
                        "(twice): the %d are fetched; see taxa.tsv", result.taxon,
                        result.total_count, result.gene_ids, result.gene_ids)


async def _open_parts(whole: Chain, listing: _Listing) -> None:
    whole.parts = [await listing.offload(Chain.open, listing.directory, whole.index,
                                         whole.taxon, part)
                   for part in listing.split_types]


async def _run_taxon(whole: Chain, listing: _Listing) -> str | None:
    """List one taxon: page 1 of its chain, then the rest of it, or its parts side by side."""
    if not whole.state.done and whole.state.split is None:
        async with listing.slots:
            failure = await _run_chain(whole, listing, first_page_only=True)
        if failure is not None or whole.state.done or listing.stop.is_set():
            return failure
        total = whole.state.total_count
        unfinished = sum(1 for chain in listing.chains if not chain.state.done)
        split = (bool(listing.split_types) and whole.state.pages == 1 and total is not None
                 and total > SPLIT_ABOVE_PAGES * TAXON_PAGE_SIZE
                 and 2 * unfinished <= listing.concurrency)
        await listing.offload(whole.decide, split)
        if split:
            await _open_parts(whole, listing)
            log.info("taxon %r: listed in %d parts side by side, one per gene type",
                     whole.taxon, len(whole.parts))
    if whole.state.split and not whole.state.done:
        async def part_run(part: Chain, first_page_only: bool) -> str | None:
            async with listing.slots:
                return await _run_chain(part, listing, first_page_only)

        # page 1 of every part first: their counts say whether the parts make the whole
        for first_page_only in (True, False):
            failures = [failure for failure in await asyncio.gather(
                *(part_run(part, first_page_only) for part in whole.parts))
                if failure is not None]
            if failures or listing.stop.is_set():
                return failures[0] if failures else None
            counted = sum(part.state.total_count or 0 for part in whole.parts)
            if counted != whole.state.total_count:
                log.info("taxon %r: its gene types count %d genes, not the %s of the whole: "
                         "listing it as one chain", whole.taxon, counted,
                         whole.state.total_count)
                whole.parts = []
                await listing.offload(whole.decide, False)
                break
        else:
            await listing.offload(whole.finish)
            return None
    async with listing.slots:
        return await _run_chain(whole, listing)


async def _run_chain(chain: Chain, listing: _Listing, first_page_only: bool = False
                     ) -> str | None:
    """Page ``chain`` to its end (or until stopped; or only page 1); a failure's
    description, else None."""
    watch = _Watch()
    while not chain.state.done:
        if listing.stop.is_set() or (first_page_only and chain.state.pages):
            return None
        try:
            if chain.state.pages and chain.state.token is None:
                await _end(chain, listing)  # killed between the last page and its end
                continue
            failure = await _next_page(chain, listing, watch)
            if failure is not None:
                return failure
        except _StartOver as exc:
            if chain.state.restarts >= listing.max_attempts:
                return (f"{chain.taxon!r}: its page chain kept breaking ({exc}) after "
                        f"{chain.state.restarts} new starts")
            log.debug("listing taxon %r again from page 1: %s", chain.taxon, exc)
            listing.exchanger.stats.retries += 1
            watch = _Watch()
            await listing.offload(chain.start_over)
        listing.report()
    return None


async def _next_page(chain: Chain, listing: _Listing, watch: _Watch) -> str | None:
    selection = listing.selection
    token = chain.state.token
    request = taxon_page_request(chain.taxon, gene_types=(chain.part,) if chain.part
                                 else selection.gene_types,
                                 include_subtree=selection.include_subtree, page_token=token)
    try:
        page = await listing.exchanger.exchange(
            request, listing.token_attempts if token else listing.max_attempts,
            lambda reply: parse_taxon_page(reply.body))
    except Refused as exc:
        if token is not None:
            raise _StartOver(f"a next page was refused (HTTP {exc.status})") from None
        await listing.offload(chain.refuse, f"HTTP {exc.status}: {exc.message}")
        return None
    except GaveUp as exc:
        if token is not None:
            raise _StartOver(f"a next page failed ({exc})") from None
        return f"{chain.taxon!r}: {exc}"
    next_token = page.next_page_token
    if next_token is not None and (next_token == token or next_token in watch.tokens):
        raise _StartOver("the server sent the same next_page_token twice")
    first = chain.state.pages == 0
    total = page.total_count if first else chain.state.total_count
    if next_token is not None:
        if total is None or total > MAX_TOTAL_COUNT:
            return _unbounded(chain, total, len(page.gene_ids) + page.unusable)
        # pages may repeat some GeneIDs, never most of them: past twice what the count
        # needs, the chain is going round
        bound = 2 * math.ceil(total / TAXON_PAGE_SIZE) + 5
        if chain.state.pages + 1 >= bound:
            raise _StartOver(f"the page chain goes on past {bound} pages for {total} genes")
    new = await listing.offload(
        chain.commit_page, page.gene_ids, next_token, total_count=page.total_count,
        notices=[(notice.code, notice.text) for notice in page.notices],
        unusable=page.unusable)
    if first and chain.part is None and not chain.state.restarts:
        _announce(chain, page.notices)
    if next_token is None:
        await _end(chain, listing)
        return None
    watch.tokens.add(next_token)
    watch.idle_pages = 0 if new else watch.idle_pages + 1
    if watch.idle_pages >= IDLE_PAGES:
        raise _StartOver(f"{IDLE_PAGES} pages in a row added no new GeneID while the server "
                         "kept offering a next page")
    return None


def _unbounded(chain: Chain, total: int | None, reports: int) -> str:
    """Why a chain offering a next page without a believable count is not followed."""
    what = (f"its first page gave {reports} reports and a next page but no total_count (NCBI "
            "counts a taxon's genes on its first page)" if total is None else
            f"its first page promised {total} genes, more than there can be GeneIDs "
            f"({MAX_TOTAL_COUNT})")
    return (f"{chain.taxon!r}{f' (gene type {chain.part})' if chain.part else ''}: {what}, "
            "so nothing says where its pages end and they were not followed; if the server is "
            "NCBI's, this is a fault on its side")


def _announce(chain: Chain, notices: list[Notice]) -> None:
    total = chain.state.total_count
    if total:
        log.info("taxon %r: NCBI lists %d genes (%d pages)", chain.taxon, total,
                 math.ceil(total / TAXON_PAGE_SIZE))
    if total and any(notice.code == "ABOVE_SPECIES_TAXON" for notice in notices):
        log.warning("taxon %r is above species: its list holds the genes of every taxon below "
                    "it, %d of them (%d requests to list, about as many to fetch)",
                    chain.taxon, total, 2 * math.ceil(total / TAXON_PAGE_SIZE))


async def _end(chain: Chain, listing: _Listing) -> None:
    """After the last page: check the count page 1 promised, then mark the chain done."""
    total = chain.state.total_count
    if total is not None and chain.listed < total:
        if chain.state.restarts < SHORT_RELISTS:
            raise _StartOver(f"its pages gave {chain.listed} GeneIDs of the {total} "
                             "total_count promised")
        await listing.offload(chain.finish, short=True)
        return
    if total is not None and chain.listed > total:
        log.info("taxon %r: its pages gave %d GeneIDs, more than the %d total_count said "
                 "(the list grew while it was paged)", chain.taxon, chain.listed, total)
    if chain.state.unusable:
        log.warning("taxon %r: %d reports named no usable GeneID and were skipped "
                    "(UNUSABLE_GENE_IDS in taxa.tsv)",
                    chain.taxon, chain.state.unusable)
    await listing.offload(chain.finish)
