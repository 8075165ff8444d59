"""The GeneIDs a server refuses, found near the information bound by adaptive group testing.

NCBI's Datasets 18.23 fails a whole request with 404 "Your request is invalid." when one of
its GeneIDs is one it refuses (docs/ncbi-api.md). Once a probe (net/probe.py) has vouched
for the endpoint, a refused set of IDs means: at least one of them is refused, the rest
must still be fetched. Finding which costs requests, but no waiting: a refusal is an
answer, so nothing here backs off, and every request goes through the pacer at once.

* Sparse (about one refused ID expected in the set): binary splitting with inference, as in
  Hwang's generalized binary splitting. Send the left half: if it passes, its reports are
  kept and the right half, known to hold the refused ID, is split without being sent whole;
  if it fails, the search goes on in it and the right half is set aside. The refused ID
  found, the set-aside halves go out as one request (which usually passes). A single ID
  found by inference is sent alone to confirm: a refusal that came and went must not mark
  a good GeneID. About log2(n) + 2 requests per refused ID, for n IDs in the request.
* Dense (several expected: the run's refused fraction so far, times n): Hwang's groups of
  2^floor(log2((n - d + 1) / d)) IDs, about one refused ID each, sent together; each group
  refused is searched as above, all at once.

Bounds, so that a server that refuses (nearly) everything can't cost a request per ID:
a request's search may spend 2·log2(n) + 4 requests per refused ID it finds or expects,
then the batch fails (a server refusing groups it then answers one by one is not refusing
GeneIDs); and a run whose refused GeneIDs outnumber the answered ones stops, once at least
``MIN_REFUSED_TO_JUDGE`` were refused, and at its end whatever their number: it is a list
of something other than GeneIDs the server takes, or a server refusing everything but the
probe, never a result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from bulkgene.errors import FatalHTTPError
from bulkgene.ncbi.pages import BatchAnswer
from bulkgene.ncbi.tsv import TsvAnswer
from bulkgene.net.exchange import GaveUp, Refused
from bulkgene.net.gather import gather
from bulkgene.net.policy import Action
from bulkgene.net.probe import EndpointGuard
from bulkgene.output.missing import mostly_refused_message

log = logging.getLogger("bulkgene")

AnswerT = TypeVar("AnswerT", BatchAnswer, TsvAnswer)
Ids = tuple[int, ...]
MIN_REFUSED_TO_JUDGE = 20  # refused GeneIDs before "most of them" can stop a run early
_NAMED_AT_DEFAULT = 10  # refused GeneIDs named at the default verbosity; -v names them all
_MAX_GROUPS_AT_ONCE = 32  # a dense request's groups in flight together (the pacer's queue)
_PRIOR_IDS = 1000  # the refused fraction starts as 1 in this many


class Refusals:
    """The run's refusals: what it has learnt of their density, and its account of them."""

    def __init__(self, guard: EndpointGuard) -> None:
        self.guard = guard
        self.answered = 0  # GeneIDs in requests the server answered
        self.refused = 0  # GeneIDs it refused alone

    def expected_in(self, n: int) -> float:
        """The refused IDs expected in ``n`` IDs the server has refused as a whole: at least
        one; lambda / (1 - e^-lambda) for lambda = n times the run's refused fraction."""
        rate = n * (self.refused + 1) / (self.answered + self.refused + _PRIOR_IDS)
        return max(1.0, rate / -math.expm1(-rate))

    async def fetch(self, gene_ids: Ids, fetch: Callable[[Ids], Coroutine[Any, Any, AnswerT]],
                    refused: Callable[[Ids], AnswerT],
                    merge: Callable[[Ids, Sequence[AnswerT]], AnswerT]) -> AnswerT:
        """``fetch(gene_ids)``; if the server refuses them together, the answers of all but
        the IDs it refuses alone, which become ``refused(id)``."""
        answers = await _Isolation(self, fetch, refused, len(gene_ids)).unknown(gene_ids, None)
        return answers[0] if len(answers) == 1 else merge(gene_ids, answers)

    def count_refused(self, gene_id: int, refusal: Refused) -> None:
        """One more GeneID refused alone; raises once most of what was asked is refused."""
        self.refused += 1
        level = logging.INFO if self.refused <= _NAMED_AT_DEFAULT else logging.DEBUG
        log.log(level, "the server refuses GeneID %d (HTTP %d: %s)%s", gene_id, refusal.status,
                refusal.message, "; further ones go to missing.tsv as REJECTED_BY_SERVER "
                "unnamed (-v names each)" if self.refused == _NAMED_AT_DEFAULT else "")
        if self.refused >= MIN_REFUSED_TO_JUDGE and self.refused > self.answered:
            raise self._mostly_refused()

    def _mostly_refused(self) -> FatalHTTPError:
        # raised in the middle of a batch: what it learnt is never committed
        return FatalHTTPError(mostly_refused_message(self.refused, self.answered,
                                                     recorded=False))


class _Isolation(Generic[AnswerT]):
    """One request's refused IDs being found: what it has spent, found and still expects."""

    def __init__(self, refusals: Refusals, fetch: Callable[[Ids], Coroutine[Any, Any, AnswerT]],
                 refused: Callable[[Ids], AnswerT], n: int) -> None:
        self._refusals = refusals
        self._guard = refusals.guard
        self._fetch: Callable[[Ids], Coroutine[Any, Any, AnswerT]] = fetch
        self._refused: Callable[[Ids], AnswerT] = refused
        self._per_refused = 2 * math.ceil(math.log2(max(2, n))) + 4
        self._requests = 0
        self._found = 0
        self._expected = 0.0  # refused IDs the searches under way expect to find

    async def unknown(self, gene_ids: Ids, expected: float | None) -> list[AnswerT]:
        """The answers for ``gene_ids``, of which nothing is known yet; ``expected``: the
        refused IDs among them if the server refuses them together (None: the run's guess)."""
        got = await self._try(gene_ids)
        if not isinstance(got, Refused):
            return got
        if expected is None:
            expected = self._refusals.expected_in(len(gene_ids))
        return await self._holds_refused(gene_ids, got, expected)

    async def _holds_refused(self, gene_ids: Ids, refusal: Refused | None, expected: float
                             ) -> list[AnswerT]:
        """``gene_ids`` hold at least one refused ID: ``refusal`` is the server's answer to
        them, None if that is known without asking (inferred)."""
        if refusal is not None:
            log.debug("splitting %d GeneIDs from %d after HTTP %d", len(gene_ids), gene_ids[0],
                      refusal.status)
        answers: list[AnswerT] = []
        while True:
            self._expected += expected
            try:
                if len(gene_ids) == 1:
                    return answers + await self._one(gene_ids, refusal)
                if expected >= 2:
                    return answers + await self._groups(gene_ids, expected)
                found, set_aside = await self._search(gene_ids, refusal)
            finally:
                self._expected -= expected
            answers.extend(found)
            if not set_aside:
                return answers
            # never asked for alone, the set-aside halves go out together; refused, they
            # hold more refused IDs, and this request more than one: guess twice as many as
            # it has shown so far, so that a dense one is split into groups searched at once
            got = await self._try(set_aside)
            if not isinstance(got, Refused):
                return answers + got
            gene_ids, refusal = set_aside, got
            expected = max(2.0 * self._found,
                           self._refusals.expected_in(len(set_aside)))

    async def _one(self, gene_id: Ids, refusal: Refused | None) -> list[AnswerT]:
        if refusal is None:  # inferred: confirm it alone
            got = await self._try(gene_id)
            if not isinstance(got, Refused):
                return got  # the refusal came and went: nothing is refused here
            refusal = got
        if refusal.action not in (Action.REFUSED, Action.NOT_FOUND):
            raise GaveUp(f"HTTP {refusal.status} for a single GeneID: {refusal.message}")
        self._found += 1
        self._refusals.count_refused(gene_id[0], refusal)
        return [self._refused(gene_id)]

    async def _search(self, gene_ids: Ids, refusal: Refused | None
                      ) -> tuple[list[AnswerT], Ids]:
        """Binary splitting for about one refused ID (see the module's docstring): the
        answers, and the IDs set aside, not yet asked for alone."""
        answers: list[AnswerT] = []
        set_aside: list[int] = []
        while len(gene_ids) > 1:
            half = len(gene_ids) // 2
            left, right = gene_ids[:half], gene_ids[half:]
            got = await self._try(left)
            if isinstance(got, Refused):
                set_aside.extend(right)
                gene_ids, refusal = left, got
            else:
                answers.extend(got)
                gene_ids, refusal = right, None
        answers.extend(await self._one(gene_ids, refusal))
        return answers, tuple(set_aside)

    async def _groups(self, gene_ids: Ids, expected: float) -> list[AnswerT]:
        """Hwang's groups of about one refused ID each, sent together."""
        n = len(gene_ids)
        size = 2 ** max(0, math.floor(math.log2(max(1.0, (n - expected + 1) / expected))))
        count = min(_MAX_GROUPS_AT_ONCE, -(-n // size))
        size = -(-n // count)
        groups = [gene_ids[start:start + size] for start in range(0, n, size)]
        log.debug("looking for about %.0f refused GeneIDs among %d from %d: %d groups of %d",
                  expected, n, gene_ids[0], len(groups), size)
        # a group refused holds lambda / (1 - e^-lambda) refused IDs, lambda its share
        share = expected * size / n
        in_refused_group = max(1.0, share / -math.expm1(-share))
        found = await gather([self.unknown(group, in_refused_group) for group in groups])
        return [answer for answers in found for answer in answers]

    async def _try(self, gene_ids: Ids) -> list[AnswerT] | Refused:
        """Ask for ``gene_ids``: their answers, or the server's refusal of them together."""
        while True:
            self._spend(gene_ids)
            endpoint = self._guard.current
            try:
                answer = await self._fetch(gene_ids)
            except Refused as refusal:
                if refusal.action is Action.TOO_LONG:
                    return await self._split_too_long(gene_ids, refusal)
                await self._guard.confirm_not_systematic(
                    f"refuses GeneIDs (HTTP {refusal.status}: {refusal.message})")
                if self._guard.current != endpoint:
                    continue  # the old one was retired: ask its successor
                return refusal
            self._refusals.answered += len(gene_ids)
            return [answer]

    async def _split_too_long(self, gene_ids: Ids, refusal: Refused) -> list[AnswerT]:
        """A request the server finds too long (414, 431): both halves, each on its own."""
        if len(gene_ids) == 1:
            raise GaveUp(f"HTTP {refusal.status} for a single GeneID: {refusal.message}")
        log.debug("splitting %d GeneIDs from %d after HTTP %d", len(gene_ids), gene_ids[0],
                  refusal.status)
        half = len(gene_ids) // 2
        halves = await gather([self.unknown(gene_ids[:half], None),
                               self.unknown(gene_ids[half:], None)])
        return [answer for answers in halves for answer in answers]

    def _spend(self, gene_ids: Ids) -> None:
        """Count a request; past what the refused IDs found and expected justify, the batch
        fails: a server refusing groups it answers one by one is not refusing GeneIDs."""
        self._requests += 1
        allowed = self._per_refused * (self._found + self._expected + 1)
        if self._requests > allowed:
            raise GaveUp(
                f"the server refuses requests for several of these GeneIDs together but "
                f"answers them one by one ({self._requests} requests, {self._found} GeneIDs "
                "refused alone): no refused GeneID explains that; a re-run tries again")
