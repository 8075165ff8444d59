"""Fetch one batch, in layers, as httpx layers its client; each layer one concern, one module:

    GeneClient.fetch_batch   pack the batch into requests the URL allows, fetch the parts at
                             once, turn the answer into a BatchOutcome (this module)
    Refusals.fetch           when the server refuses a part as a whole (400, its 404, 414),
                             find the GeneIDs it refuses by adaptive group testing
                             (net/refusals.py), after a probe with a known GeneID shows the
                             refusal isn't systematic; the probe also finds a retired
                             endpoint's successor (net/probe.py)
    PageFetcher              follow next_page_token from page 1; a failing token restarts the
                             chain; or the one TSV answer (net/chain.py)
    Exchanger.exchange       one request until it yields a usable answer: send once (pacer,
                             transport), judge by the status policy (net/policy.py), retry
                             with backoff while the run's Health (net/health.py: unreachable
                             host, outage) says go on (net/exchange.py)
    SessionTransport         attempt(): one HTTP attempt and exception translation
                             (net/attempt.py); tests inject a scripted Transport
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aiohttp

from bulkgene.config import DownloadConfig
from bulkgene.model import REJECTED_BY_SERVER, Batch, BatchFailure, BatchOutcome, BatchResult
from bulkgene.ncbi.pages import NOT_RETURNED, BatchAnswer
from bulkgene.ncbi.requests import id_path_budget, pack
from bulkgene.ncbi.tsv import TsvAnswer
from bulkgene.net.attempt import SessionTransport, Transport
from bulkgene.net.chain import PageFetcher, tsv_column
from bulkgene.net.exchange import Exchanger, GaveUp, NetStats, server_message
from bulkgene.net.gather import gather
from bulkgene.net.pacer import AdaptiveRateLimiter
from bulkgene.net.probe import PROBE_GENE_ID, EndpointGuard
from bulkgene.net.refusals import AnswerT, Refusals

__all__ = ["PROBE_GENE_ID", "REJECTED_BY_SERVER", "GeneClient", "NetStats", "Transport",
           "server_message"]


class GeneClient:
    """Fetches batches of GeneIDs through one session and one pacer."""

    def __init__(self, session: aiohttp.ClientSession, limiter: AdaptiveRateLimiter,
                 config: DownloadConfig, *, stats: NetStats | None = None,
                 rng: random.Random | None = None, transport: Transport | None = None) -> None:
        self.session = session
        self.limiter = limiter
        self.config = config
        self.stats = stats if stats is not None else NetStats()
        self._exchanger = Exchanger(transport or SessionTransport(session), limiter, config,
                                    self.stats, rng or random.Random())
        self._guard = EndpointGuard(self._exchanger, config.query.endpoint)
        self._pages = PageFetcher(self._exchanger, self._guard)
        self.refusals = Refusals(self._guard)

    @property
    def endpoint(self) -> str:
        """The endpoint asked now: the configured one, or the successor of a retired one."""
        return self._guard.current

    async def fetch_batch(self, batch: Batch) -> BatchResult:
        """Every page of ``batch``, validated; a BatchFailure if it can't be had."""
        try:
            parts = pack(self.endpoint, batch.gene_ids, id_path_budget(
                self.config.query, self.endpoint, self.config.network.base_url))
            if self.config.query.format == "tsv":
                tsv = TsvAnswer.merged(batch.gene_ids, await self._gather(
                    parts, lambda ids: self.refusals.fetch(ids, self._pages.tsv,
                                                           self._refused_tsv, TsvAnswer.merged)))
                if tsv.accountable and tsv.may_hold_replacements():
                    # rows can't say which query they answer: ask JSON for the rest
                    tsv.attribute(await self._pages.ids_only(tuple(
                        gene_id for gene_id in batch.gene_ids
                        if gene_id not in tsv.answered and gene_id not in tsv.reasons)))
                if not tsv.answered:
                    await self._guard.vouch_for_nothing_found()
                return self._tsv_outcome(batch, tsv)
            answer = self._merge_json(batch.gene_ids, await self._gather(
                parts, lambda ids: self.refusals.fetch(ids, self._pages.json_chain,
                                                       self._refused_json, self._merge_json)))
            if not answer.answered:
                await self._guard.vouch_for_nothing_found()
        except GaveUp as exc:
            return BatchFailure(batch, str(exc))
        return BatchOutcome(batch, answer.records, len(answer.answered), answer.missing())

    async def _gather(self, parts: list[tuple[int, ...]],
                      fetch: Callable[[tuple[int, ...]], Coroutine[Any, Any, AnswerT]]
                      ) -> list[AnswerT]:
        return await gather([fetch(part) for part in parts])

    def _merge_json(self, gene_ids: tuple[int, ...], parts: Sequence[BatchAnswer]
                    ) -> BatchAnswer:
        return BatchAnswer.merged(gene_ids, self._pages.gene_only, parts)

    def _tsv_outcome(self, batch: Batch, answer: TsvAnswer) -> BatchOutcome:
        if not answer.accountable:
            return BatchOutcome(batch, answer.records, 0, [], answer.header,
                                unverified=len(batch.gene_ids))
        missing = [(gene_id, answer.reasons.get(gene_id, NOT_RETURNED))
                   for gene_id in batch.gene_ids if gene_id not in answer.answered]
        return BatchOutcome(batch, answer.records, len(answer.answered), missing, answer.header)

    def _refused_json(self, ids: tuple[int, ...]) -> BatchAnswer:
        answer = BatchAnswer(ids, self._pages.gene_only)
        answer.reasons[ids[0]] = REJECTED_BY_SERVER
        return answer

    def _refused_tsv(self, ids: tuple[int, ...]) -> TsvAnswer:
        # one refused ID: no rows, so it is counted missing with the reason (or unverified)
        return TsvAnswer(None, accountable=tsv_column(self.config) is not None,
                         reasons={ids[0]: REJECTED_BY_SERVER})
