"""The endpoint in use, vouched for by a probe: one GeneID the server must know.

A refusal (400, a 404 "Your request is invalid.", 410) or a batch with nothing found could
be the server's answer to these GeneIDs, or a sign that nothing works: a wrong URL, a
retired endpoint, a setting the server refuses for everyone. One request for a GeneID the
server must have (one an earlier batch returned, else TP53) tells them apart, and vouches
for the endpoint for a minute; if the endpoint was retired, the probe finds its successor.
"""

from __future__ import annotations

import asyncio
import logging
import re

from bulkgene.errors import FatalHTTPError
from bulkgene.ncbi.pages import BatchAnswer, InvalidPage, parse_ndjson, parse_page
from bulkgene.ncbi.requests import FALLBACK_ENDPOINTS, page_request
from bulkgene.net.attempt import Reply
from bulkgene.net.exchange import Exchanger, GaveUp, Refused
from bulkgene.net.policy import Action

log = logging.getLogger("bulkgene")

PROBE_GENE_ID = 7157  # TP53, human: exists on every NCBI Gene release
_PROBE_VALID_S = 60.0  # a successful probe vouches for the endpoint this long


class EndpointGuard:
    """The endpoint in use, vouched for by a probe for a GeneID the server must know."""

    def __init__(self, exchanger: Exchanger, endpoint: str) -> None:
        self._exchanger = exchanger
        self._query = exchanger.config.query
        self.current = endpoint
        self.known_good: int | None = None  # a GeneID this server has answered
        self._probe_ok_at: float | None = None
        self._probe_lock = asyncio.Lock()

    @property
    def vouched(self) -> bool:
        """Whether a probe vouched for the endpoint lately."""
        return self._probe_ok_at is not None and (
            asyncio.get_running_loop().time() - self._probe_ok_at < _PROBE_VALID_S)

    def remember_known_good(self, answered: set[int]) -> None:
        if self.known_good is None and answered:
            self.known_good = min(answered)

    async def vouch_for_nothing_found(self) -> None:
        """A batch came back with nothing found: fine for a list of dead IDs, but a server
        that answers ``{}`` to everything says the same. Ask it for a GeneID it must know."""
        await self.confirm_not_systematic("finds nothing for a whole batch")

    async def confirm_not_systematic(self, what: str) -> None:
        """The server ``what`` (refuses some IDs, finds nothing): ask for one GeneID it must
        know; refusing that too, or answering without it, ends the run."""
        loop = asyncio.get_running_loop()
        if self.vouched:
            return
        async with self._probe_lock:
            if self.vouched:
                return
            probe_id = self.known_good or PROBE_GENE_ID
            answered_without_it = False
            for endpoint in self._endpoints_to_try():
                try:
                    if not await self._probe(endpoint, probe_id):
                        answered_without_it = True
                        continue  # a 200 that doesn't hold the gene vouches for nothing
                except Refused as probe_refusal:
                    if probe_refusal.action is Action.REFUSED:
                        raise FatalHTTPError(
                            f"the server refuses every request, even one for GeneID {probe_id}, "
                            f"which it knows (HTTP 400: {probe_refusal.message}). That is a "
                            "setting it doesn't accept (a misspelt --table-field or "
                            "--sort-field?) or a gateway in the way, not missing genes: fix "
                            "the options and run the same command again.") from None
                    continue  # 404/410: this endpoint is gone or the URL is wrong
                if endpoint != self.current:
                    log.warning("the %s endpoint no longer answers (the server %s); switching "
                                "to %s, which gives the same records", self.current, what,
                                endpoint)
                    self.current = endpoint
                self._probe_ok_at = loop.time()
                return
            if answered_without_it:
                raise FatalHTTPError(
                    f"the server {what} and answers a request for GeneID {probe_id}, which "
                    "NCBI has, without it: "
                    "--base-url may not point to NCBI Datasets v2 (expected something like "
                    "https://api.ncbi.nlm.nih.gov/datasets/v2); `bulkgene doctor` checks the "
                    "connection step by step.")
            raise FatalHTTPError(
                f"the server {what}, and says these endpoints do not exist, even for GeneID "
                f"{probe_id}, which NCBI has: check "
                f"--base-url (expected something like https://api.ncbi.nlm.nih.gov/datasets/v2); "
                "`bulkgene doctor` checks the connection step by step.")

    def _endpoints_to_try(self) -> list[str]:
        others = [e for e in FALLBACK_ENDPOINTS
                  if e != self.current and not self._query.unsupported_by(e)]
        return [self.current, *others]

    async def _probe(self, endpoint: str, gene_id: int) -> bool:
        """Whether the endpoint's answer for ``gene_id`` is a valid page holding it
        (Refused if it refuses). An invalid page (HTML, broken JSON, a stranger's gene) is
        asked for again, as any page is; one that stays invalid vouches for nothing."""
        request = page_request(self._query, endpoint, (gene_id,), None)
        try:  # as patient as any request with what passes (a 404 is judged after three)
            return await self._exchanger.exchange(
                request, self._exchanger.config.network.retry.max_attempts,
                lambda reply: _holds(reply, gene_id, self._query.format), patient_404=True)
        except GaveUp as exc:
            if exc.invalid_page:
                return False
            raise


def _holds(reply: Reply, gene_id: int, answer_format: str) -> bool:
    """Whether ``reply``, a valid answer, holds ``gene_id`` (``{}`` does not); InvalidPage if
    it is none (any 200 won't do: an HTML page that merely mentions the number)."""
    if reply.body.lstrip()[:1] == b"<":
        raise InvalidPage("an HTML page came back instead of the probe's answer")
    if answer_format == "tsv":  # the rows are checked against the request by the chain
        return re.search(rb"(?m)(?:^|\t)%d(?:\t|$)" % gene_id, reply.body) is not None
    page = parse_ndjson(reply.body) if answer_format == "ndjson" else parse_page(reply.body)
    answer = BatchAnswer((gene_id,))
    answer.add(page)
    return gene_id in answer.answered
