"""A request's whole answer: the JSON page chain from page 1, or the one TSV response."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from bulkgene.config import ApiQuery, DownloadConfig
from bulkgene.ncbi.pages import BatchAnswer, BrokenChain, InvalidPage, parse_ndjson, parse_page
from bulkgene.ncbi.requests import page_request
from bulkgene.ncbi.tsv import GENE_ID_FIELD, TsvAnswer, parse_tsv
from bulkgene.net.attempt import Reply
from bulkgene.net.exchange import Exchanger, GaveUp, Refused
from bulkgene.net.probe import EndpointGuard

log = logging.getLogger("bulkgene")


@dataclass(frozen=True)
class _Restart:
    """The page chain broke (a token refused or repeated): fetch the batch again from page 1."""

    reason: str


def tsv_column(config: DownloadConfig) -> int | None:
    """Where the GeneID is in a TSV row, if the table has that column."""
    fields = config.query.table_fields
    return fields.index(GENE_ID_FIELD) if GENE_ID_FIELD in fields else None


class PageFetcher:
    """Fetches the whole answer for one request's GeneIDs on the guard's current endpoint."""

    def __init__(self, exchanger: Exchanger, guard: EndpointGuard) -> None:
        self._exchanger = exchanger
        self._guard = guard
        self._config = exchanger.config

    @property
    def gene_only(self) -> bool:
        return self._config.output.record == "gene"

    async def ids_only(self, gene_ids: tuple[int, ...]) -> dict[int, int]:
        """Which GeneID answers each of ``gene_ids`` (a replaced ID: its new gene), asked as
        JSON with IDS_ONLY: what a TSV row can't say."""
        query = replace(self._config.query, format="json", returned_content="IDS_ONLY",
                        table_fields=(), accession_filter=(), include_tabular_header=None)
        answer = await self.json_chain(gene_ids, query)
        return {asked: record.gene_id for record in answer.records
                if record.gene_id is not None for asked in record.queries}

    async def json_chain(self, gene_ids: tuple[int, ...],
                         query: ApiQuery | None = None) -> BatchAnswer:
        """Follow ``next_page_token`` from page 1 until the batch's pages are complete."""
        retry = self._config.network.retry
        max_pages = -(-len(gene_ids) // self._config.query.page_size) + 1
        for _restart in range(retry.max_attempts):
            answer = BatchAnswer(gene_ids, self.gene_only)
            restart = await self._chain(answer, max_pages, query or self._config.query)
            if restart is None:
                self._guard.remember_known_good(answer.answered)
                return answer
            # the chain is fetched again: a retry of its own kind
            self._exchanger.stats.retries += 1
            log.debug("restarting a batch from page 1: %s", restart.reason)
        raise GaveUp("the server's page chain kept breaking (tokens refused, repeated or "
                     "pages that don't add up)")

    async def _chain(self, answer: BatchAnswer, max_pages: int, query: ApiQuery
                     ) -> _Restart | None:
        """Every page into ``answer``; why the chain must start again, if it must."""
        token: str | None = None
        while True:
            step = await self._fetch_page(answer, token, query)
            if isinstance(step, _Restart):
                return step
            token = step
            if token is None:
                try:
                    answer.check_complete()
                except InvalidPage as exc:
                    return _Restart(str(exc))
                return None
            if answer.pages >= max_pages:
                return _Restart(f"the page chain goes on past the {max_pages} pages "
                                f"{len(answer.gene_ids)} GeneIDs can need")

    async def _fetch_page(self, answer: BatchAnswer, token: str | None, query: ApiQuery
                          ) -> str | _Restart | None:
        """One page, retried until it validates: the next token (None after the last page),
        or why the chain must start again."""
        request = page_request(query, self._guard.current, answer.gene_ids, token)
        parse = parse_ndjson if query.format == "ndjson" else parse_page

        def read(reply: Reply) -> str | _Restart | None:
            page = parse(reply.body)  # InvalidPage: the exchange fetches this page again
            try:
                answer.add(page)
            except BrokenChain as exc:
                return _Restart(str(exc))
            return page.next_page_token

        retry = self._config.network.retry
        if token is None:
            return await self._exchanger.exchange(request, retry.max_attempts, read)
        try:  # a token the server no longer takes answers 500 every time: restart instead
            return await self._exchanger.exchange(request, retry.token_attempts, read)
        except (GaveUp, Refused) as exc:
            return _Restart(f"a next-page request failed ({exc})")

    async def tsv(self, gene_ids: tuple[int, ...]) -> TsvAnswer:
        """A TSV answer: one response with every row (TSV has no page chain to follow)."""
        query = self._config.query
        request = page_request(query, self._guard.current, gene_ids, None)
        has_header = query.include_tabular_header != "INCLUDE_TABULAR_HEADER_NEVER"
        column = tsv_column(self._config)
        return await self._exchanger.exchange(
            request, self._config.network.retry.max_attempts,
            lambda reply: parse_tsv(reply.body, gene_ids, has_header, column))
