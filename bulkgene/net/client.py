"""Fetch one batch, in layers, as httpx layers its client; each layer one concern:

    fetch_batch       pack the batch into requests the URL allows, fetch the parts at once
    _isolate          split a part when the server refuses it (400, persistent 404, 414),
                      after a probe with a known GeneID shows the refusal isn't systematic
    _page_chain       follow next_page_token from page 1; a failing token restarts the chain
    _exchange         one request until it yields a usable answer: pacer, attempt, the
                      status policy (net/policy.py), backoff, stale-connection resend
    attempt()         one HTTP attempt and exception translation (net/attempt.py)

The probe also notices a retired endpoint (404/410 for a GeneID that exists, or a body
saying "retired") and switches to a current endpoint that gives the same records.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp
import msgspec
import orjson

from bulkgene.config import DownloadConfig
from bulkgene.errors import AuthError, FatalHTTPError, OutageError
from bulkgene.model import Batch, BatchFailure, BatchOutcome, BatchResult
from bulkgene.ncbi.pages import (
    NOT_RETURNED,
    BatchAnswer,
    BrokenChain,
    InvalidPage,
    parse_ndjson,
    parse_page,
)
from bulkgene.ncbi.requests import FALLBACK_ENDPOINTS, MAX_PATH_BYTES, pack, page_request
from bulkgene.ncbi.tsv import GENE_ID_FIELD, TsvAnswer, parse_tsv
from bulkgene.net.attempt import AttemptFailed, Reply, attempt
from bulkgene.net.pacer import AdaptiveRateLimiter
from bulkgene.net.policy import Action, action_for, backoff_s, parse_retry_after

log = logging.getLogger("bulkgene")
TRACE = 5  # -vv: every request and its answer

REJECTED_BY_SERVER = "REJECTED_BY_SERVER"
PROBE_GENE_ID = 7157  # TP53, human: exists on every NCBI Gene release
_PROBE_VALID_S = 60.0  # a successful probe vouches for the endpoint this long
_STALE_RESENDS = 3  # a dead pooled connection is no failure, but a loop of them is
_NOT_FOUND_ATTEMPTS = 3  # a 404 is retried like a transient error this often
_REQUEST_ID_HEADERS = ("Ncbi-Phid", "X-Request-Id")
# what parsing a hostile body can raise besides InvalidPage (bad UTF-8, nesting, numbers)
_UNTRUSTED_BODY_ERRORS = (ValueError, UnicodeError, RecursionError, OverflowError,
                          msgspec.DecodeError)
T = TypeVar("T")
AnswerT = TypeVar("AnswerT", BatchAnswer, TsvAnswer)


@dataclass
class NetStats:
    """Counters of what went over the wire."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    bytes: int = 0


class _GaveUp(Exception):
    """This request (and so its batch) failed after every attempt."""


class _Refused(Exception):
    """The server refused this set of IDs as a whole (400, 414, 431, a persistent 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _RestartChain(Exception):
    """The page chain broke (a token refused or repeated): fetch the batch again from page 1."""


def server_message(body: bytes) -> str:
    """The ``message`` of NCBI's error envelope, whatever the content type says; else the text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        for key in ("message", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return body[:200].decode("utf-8", "replace").strip()


def _float_header(headers: Mapping[str, str], name: str) -> float | None:
    try:
        return float(headers[name]) if name in headers else None
    except ValueError:
        return None


@dataclass
class GeneClient:
    """Fetches batches of GeneIDs through one session and one pacer."""

    session: aiohttp.ClientSession
    limiter: AdaptiveRateLimiter
    config: DownloadConfig
    stats: NetStats = field(default_factory=NetStats)
    rng: random.Random = field(default_factory=random.Random)
    endpoint: str = ""
    _last_success_at: float | None = None
    _ever_succeeded: bool = False
    _first_failure_at: float | None = None
    _known_good: int | None = None
    _probe_ok_at: float | None = None
    _probe_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.endpoint = self.endpoint or self.config.query.endpoint

    # -- layer 1: the batch ------------------------------------------------------------

    async def fetch_batch(self, batch: Batch) -> BatchResult:
        """Every page of ``batch``, validated; a BatchFailure if it can't be had."""
        try:
            parts = pack(self.endpoint, batch.gene_ids, self._path_budget())
            if self.config.query.format == "tsv":
                tsv = TsvAnswer.merged(batch.gene_ids, await self._gather(
                    parts, lambda ids: self._isolate(ids, self._fetch_tsv, self._refused_tsv,
                                                     TsvAnswer.merged)))
                return self._tsv_outcome(batch, tsv)
            answer = self._merge_json(batch.gene_ids, await self._gather(
                parts, lambda ids: self._isolate(ids, self._page_chain, self._refused_json,
                                                 self._merge_json)))
        except _GaveUp as exc:
            return BatchFailure(batch, str(exc))
        return BatchOutcome(batch, answer.records, len(answer.answered), answer.missing())

    async def _gather(self, parts: list[tuple[int, ...]],
                      fetch: Callable[[tuple[int, ...]], Coroutine[Any, Any, AnswerT]]
                      ) -> list[AnswerT]:
        if len(parts) == 1:
            return [await fetch(parts[0])]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(fetch(part)) for part in parts]
        return [task.result() for task in tasks]

    def _path_budget(self) -> int:
        """Bytes the IDs' part of a GET path may take: the base path and query take the rest."""
        query = page_request(self.config.query, self.endpoint, (), None).params
        base_path = urlsplit(self.config.network.base_url).path.rstrip("/")
        return MAX_PATH_BYTES - len(base_path) - len(urlencode(query)) - 1

    @property
    def _gene_only(self) -> bool:
        return self.config.output.record == "gene"

    def _merge_json(self, gene_ids: tuple[int, ...], parts: Sequence[BatchAnswer]
                    ) -> BatchAnswer:
        return BatchAnswer.merged(gene_ids, self._gene_only, parts)

    def _tsv_outcome(self, batch: Batch, answer: TsvAnswer) -> BatchOutcome:
        if not answer.accountable:
            return BatchOutcome(batch, answer.records, 0, [], answer.header,
                                unverified=len(batch.gene_ids))
        missing = [(gene_id, NOT_RETURNED) for gene_id in batch.gene_ids
                   if gene_id not in answer.answered]
        return BatchOutcome(batch, answer.records, len(answer.answered), missing, answer.header)

    def _refused_json(self, ids: tuple[int, ...]) -> BatchAnswer:
        answer = BatchAnswer(ids, self._gene_only)
        answer.reasons[ids[0]] = REJECTED_BY_SERVER
        return answer

    def _refused_tsv(self, _ids: tuple[int, ...]) -> TsvAnswer:
        # one refused ID: no rows, so it is counted missing (or unverified)
        return TsvAnswer(None, accountable=self._tsv_column is not None)

    # -- layer 2: isolating refused IDs ------------------------------------------------

    async def _isolate(self, gene_ids: tuple[int, ...],
                       fetch: Callable[[tuple[int, ...]], Coroutine[Any, Any, AnswerT]],
                       refused: Callable[[tuple[int, ...]], AnswerT],
                       merge: Callable[[tuple[int, ...], Sequence[AnswerT]], AnswerT]
                       ) -> AnswerT:
        """``fetch(gene_ids)``, in halves while the server refuses them together; a single
        refused ID becomes ``refused(id)``: O(k log n) requests for k refused IDs in n."""
        try:
            return await fetch(gene_ids)
        except _Refused as refusal:
            if refusal.status in (400, 404, 410):
                endpoint = self.endpoint
                await self._confirm_not_systematic(refusal)
                if self.endpoint != endpoint:  # the old one was retired: ask the new one
                    return await self._isolate(gene_ids, fetch, refused, merge)
            if len(gene_ids) == 1:
                if refusal.status not in (400, 404):
                    raise _GaveUp(f"HTTP {refusal.status} for a single GeneID: "
                                  f"{refusal.message}") from None
                log.info("the server refuses GeneID %d (HTTP %d: %s)", gene_ids[0],
                         refusal.status, refusal.message)
                return refused(gene_ids)
            log.debug("splitting %d GeneIDs from %d after HTTP %d", len(gene_ids), gene_ids[0],
                      refusal.status)
            half = len(gene_ids) // 2
            first = await self._isolate(gene_ids[:half], fetch, refused, merge)
            second = await self._isolate(gene_ids[half:], fetch, refused, merge)
            return merge(gene_ids, (first, second))

    async def _confirm_not_systematic(self, refusal: _Refused) -> None:
        """Ask for one GeneID the server must know; refusing it too ends the run."""
        loop = asyncio.get_running_loop()
        async with self._probe_lock:
            if self._probe_ok_at is not None and loop.time() - self._probe_ok_at < _PROBE_VALID_S:
                return
            probe_id = self._known_good or PROBE_GENE_ID
            for endpoint in self._endpoints_to_try():
                try:
                    await self._probe(endpoint, probe_id)
                except _Refused as probe_refusal:
                    if probe_refusal.status == 400:
                        raise FatalHTTPError(
                            f"the server refuses every request, even one for GeneID {probe_id}, "
                            f"which it knows (HTTP 400: {probe_refusal.message}). That is a "
                            "setting it doesn't accept (a misspelt --table-field or "
                            "--sort-field?) or a gateway in the way, not missing genes: fix "
                            "the options and run the same command again.") from None
                    continue  # 404/410: this endpoint is gone or the URL is wrong
                if endpoint != self.endpoint:
                    log.warning("the %s endpoint no longer answers (HTTP %d: %s); switching to "
                                "%s, which gives the same records", self.endpoint,
                                refusal.status, refusal.message, endpoint)
                    self.endpoint = endpoint
                self._probe_ok_at = loop.time()
                return
            raise FatalHTTPError(
                f"the server says these endpoints do not exist (HTTP {refusal.status}: "
                f"{refusal.message}), even for GeneID {probe_id}, which NCBI has: check "
                f"--base-url (expected something like https://api.ncbi.nlm.nih.gov/datasets/v2); "
                "`bulkgene doctor` checks the connection step by step.")

    def _endpoints_to_try(self) -> list[str]:
        query = self.config.query
        others = [e for e in FALLBACK_ENDPOINTS
                  if e != self.endpoint and not query.unsupported_by(e)]
        return [self.endpoint, *others]

    async def _probe(self, endpoint: str, gene_id: int) -> None:
        request = page_request(self.config.query, endpoint, (gene_id,), None)
        reply = await self._exchange(request.method, request.path, request.params,
                                     request.json_body, request.accept, _NOT_FOUND_ATTEMPTS,
                                     lambda r: r)
        del reply

    # -- layer 3: the page chain -------------------------------------------------------

    async def _page_chain(self, gene_ids: tuple[int, ...]) -> BatchAnswer:
        """Follow ``next_page_token`` from page 1 until the batch's pages are complete."""
        retry = self.config.network.retry
        max_pages = -(-len(gene_ids) // self.config.query.page_size) + 1
        for _restart in range(retry.max_attempts):
            answer = BatchAnswer(gene_ids, self._gene_only)
            token: str | None = None
            try:
                while True:
                    token = await self._fetch_page(answer, token)
                    if token is None:
                        answer.check_complete()
                        self._remember_known_good(answer)
                        return answer
                    if answer.pages >= max_pages:
                        raise _RestartChain(f"the page chain goes on past the {max_pages} pages "
                                            f"{len(gene_ids)} GeneIDs can need")
            except (_RestartChain, InvalidPage) as exc:
                self.stats.retries += 1  # the chain is fetched again: a retry of its own kind
                log.debug("restarting a batch from page 1: %s", exc)
                continue
        raise _GaveUp("the server's page chain kept breaking (tokens refused, repeated or "
                      "pages that don't add up)")

    def _remember_known_good(self, answer: BatchAnswer) -> None:
        if self._known_good is None and answer.answered:
            self._known_good = min(answer.answered)

    async def _fetch_page(self, answer: BatchAnswer, token: str | None) -> str | None:
        """One page, retried until it validates; the next token, None after the last page."""
        request = page_request(self.config.query, self.endpoint, answer.gene_ids, token)
        parse = parse_ndjson if self.config.query.format == "ndjson" else parse_page

        def read(reply: Reply) -> str | None:
            page = parse(reply.body)
            try:
                answer.add(page)
            except BrokenChain as exc:
                raise _RestartChain(str(exc)) from None
            return page.next_page_token

        retry = self.config.network.retry
        if token is None:
            return await self._exchange(request.method, request.path, request.params,
                                        request.json_body, request.accept, retry.max_attempts,
                                        read)
        try:  # a token the server no longer takes answers 500 every time: restart instead
            return await self._exchange(request.method, request.path, request.params,
                                        request.json_body, request.accept,
                                        retry.token_attempts, read)
        except (_GaveUp, _Refused) as exc:
            raise _RestartChain(f"a next-page request failed ({exc})") from None

    @property
    def _tsv_column(self) -> int | None:
        fields = self.config.query.table_fields
        return fields.index(GENE_ID_FIELD) if GENE_ID_FIELD in fields else None

    async def _fetch_tsv(self, gene_ids: tuple[int, ...]) -> TsvAnswer:
        """A TSV answer: one response with every row (TSV has no page chain to follow)."""
        request = page_request(self.config.query, self.endpoint, gene_ids, None)
        has_header = self.config.query.include_tabular_header != "INCLUDE_TABULAR_HEADER_NEVER"
        column = self._tsv_column
        return await self._exchange(
            request.method, request.path, request.params, request.json_body, request.accept,
            self.config.network.retry.max_attempts,
            lambda reply: parse_tsv(reply.body, gene_ids, has_header, column))

    # -- layer 4: one request, retried -------------------------------------------------

    async def _exchange(self, method: str, path: str, params: list[tuple[str, str]],
                        json_body: dict[str, object] | None, accept: str, max_attempts: int,
                        read: Callable[[Reply], T]) -> T:
        """Send until ``read`` accepts a 200; raises _Refused, _GaveUp or a fatal error."""
        network = self.config.network
        url = network.base_url.rstrip("/") + path
        headers = {"Accept": accept}
        if network.api_key:
            headers["api-key"] = network.api_key.reveal()
        timeouts = network.timeouts
        timeout = aiohttp.ClientTimeout(total=timeouts.attempt_s, sock_connect=timeouts.connect_s,
                                        sock_read=timeouts.read_stall_s)
        reason = ""
        unreachable: AttemptFailed | None = None
        attempt_number = 0
        stale_resends = 0
        not_found = 0
        while True:
            slot = await self.limiter.acquire()
            self.stats.requests += 1
            retry_after: float | None = None
            try:
                reply = await attempt(self.session, method, url, params=params,
                                      json_body=json_body, headers=headers, client_timeout=timeout,
                                      slot=slot, max_body_bytes=network.max_response_bytes)
            except AttemptFailed as failure:
                if failure.stale_connection and stale_resends < _STALE_RESENDS:
                    stale_resends += 1  # the server had closed it: no fault, no backoff
                    self.stats.retries += 1
                    log.debug("resending at once: a kept-alive connection was closed")
                    continue
                reason = failure.reason
                unreachable = failure if failure.unreachable else None
                self._check_unreachable(failure)
            else:
                self.stats.bytes += len(reply.body)
                reply = self._without_key(reply)
                log.log(TRACE, "%s %s -> HTTP %d, %d bytes, limit %s, remaining %s", method,
                        path if len(path) < 60 else path[:57] + "...", reply.status,
                        len(reply.body), reply.headers.get("X-RateLimit-Limit", "-"),
                        reply.headers.get("X-RateLimit-Remaining", "-"))
                self._read_server_limits(reply.headers, slot.sent_at)
                action = action_for(reply.status)
                if action is Action.USE:
                    try:
                        result = read(reply)
                    except InvalidPage as exc:
                        reason = f"invalid page: {exc}"
                    except _UNTRUSTED_BODY_ERRORS as exc:  # whatever a body holds, no crash
                        reason = f"invalid page: {type(exc).__name__}: {str(exc)[:100]}"
                    else:
                        self._succeeded()
                        return result
                elif action is Action.THROTTLED:
                    self.stats.throttled += 1
                    retry_after = parse_retry_after(reply.headers.get("Retry-After"),
                                                    network.retry.retry_after_cap_s)
                    self.limiter.on_throttled(retry_after, _float_header(
                        reply.headers, "X-RateLimit-Limit"), slot.sent_at)
                    reason = "HTTP 429 Too Many Requests"
                    log.debug("HTTP 429: the server asks us to slow down (limit %s)",
                              reply.headers.get("X-RateLimit-Limit", "not given"))
                elif action is Action.RETRY:
                    retry_after = parse_retry_after(reply.headers.get("Retry-After"),
                                                    network.retry.retry_after_cap_s)
                    reason = f"HTTP {reply.status}"
                elif action in (Action.NOT_FOUND, Action.GONE):
                    message = server_message(reply.body)
                    not_found += 1
                    retired = action is Action.GONE or "retired" in message.lower()
                    if retired or not_found >= _NOT_FOUND_ATTEMPTS:
                        self._succeeded()  # the server answered: it is reachable
                        raise _Refused(reply.status, message)
                    reason = f"HTTP {reply.status}: {message}"
                else:
                    self._raise_final(action, reply)
            self._check_outage(reason)
            attempt_number += 1
            if attempt_number >= max_attempts:
                if unreachable is not None and not self._ever_succeeded:
                    self._raise_unreachable(unreachable)  # a setup problem, not a bad batch
                raise _GaveUp(f"gave up after {attempt_number} attempts; last: {reason}")
            self.stats.retries += 1
            delay = backoff_s(network.retry, attempt_number, retry_after, self.rng)
            log.debug("retrying in %.1f s (attempt %d of %d): %s", delay, attempt_number + 1,
                      max_attempts, reason)
            await asyncio.sleep(delay)

    def _without_key(self, reply: Reply) -> Reply:
        """The answer with any echo of our API key masked: a server that repeats it back
        (in an error message, or inside a report) must not get it into a log or a file."""
        key = self.config.network.api_key
        if key is None:
            return reply
        secret = key.reveal().encode()
        if secret not in reply.body and not any(key.reveal() in value
                                                for value in reply.headers.values()):
            return reply
        headers = {name: value.replace(key.reveal(), "***")
                   for name, value in reply.headers.items()}
        return Reply(reply.status, headers, reply.body.replace(secret, b"***"))

    def _raise_final(self, action: Action, reply: Reply) -> None:
        message = server_message(reply.body)
        request_id = next((reply.headers[h] for h in _REQUEST_ID_HEADERS if h in reply.headers),
                          None)
        suffix = f" (server request id {request_id})" if request_id else ""
        if action is Action.AUTH:
            if reply.status == 401:
                raise AuthError(
                    f"the server rejected the API key (HTTP 401: {message}){suffix}. Check "
                    "NCBI_API_KEY or --api-key-file; keys are made at "
                    "https://www.ncbi.nlm.nih.gov/account/settings/")
            raise AuthError(
                f"the server refused access (HTTP 403){suffix}. NCBI blocks IP addresses that "
                "send too many requests: stop other downloads from this machine, wait, lower "
                "--rate, and contact NCBI (info@ncbi.nlm.nih.gov) if it persists. Re-run the "
                "same command to resume.")
        if action in (Action.REFUSED, Action.TOO_LONG):
            raise _Refused(reply.status, message)
        if action is Action.REDIRECT:
            raise FatalHTTPError(
                f"the server answered with a redirect (HTTP {reply.status}), which bulkgene "
                "does not follow so the API key can't leak to another host: check --base-url")
        raise _GaveUp(f"HTTP {reply.status}: {message}")

    def _read_server_limits(self, headers: Mapping[str, str], sent_at: float | None) -> None:
        limit = _float_header(headers, "X-RateLimit-Limit")
        remaining = _float_header(headers, "X-RateLimit-Remaining")
        if remaining is not None and not (math.isfinite(remaining) and remaining >= 0):
            remaining = None  # "nan", "inf", "-3": no count at all
        if limit is not None or remaining is not None:
            self.limiter.on_server_limit(limit, None if remaining is None else int(remaining),
                                         sent_at)

    def _succeeded(self) -> None:
        self._last_success_at = asyncio.get_running_loop().time()
        self._ever_succeeded = True

    def _check_unreachable(self, failure: AttemptFailed) -> None:
        """Before anything has worked, a host that can't be reached is a setup problem."""
        if self._ever_succeeded or not failure.unreachable:
            return
        now = asyncio.get_running_loop().time()
        if self._first_failure_at is None:
            self._first_failure_at = now
        if now - self._first_failure_at < self.config.network.retry.unreachable_s:
            return
        self._raise_unreachable(failure)

    def _raise_unreachable(self, failure: AttemptFailed) -> None:
        host = urlsplit(self.config.network.base_url).hostname
        proxy = next((f" through the proxy {urlsplit(value).hostname}" for value in
                      (_env_proxy(),) if value), "")
        raise FatalHTTPError(
            f"cannot reach {host}{proxy}: {failure.reason}. Check the host name in --base-url, "
            "the network (compute nodes often reach the internet only through a proxy: set "
            "HTTPS_PROXY), then run `bulkgene doctor` to check step by step; `bulkgene demo` "
            "works offline.")

    def _check_outage(self, reason: str) -> None:
        now = asyncio.get_running_loop().time()
        if self._last_success_at is None:
            self._last_success_at = now
        elif now - self._last_success_at > self.config.network.retry.outage_s:
            raise OutageError(
                f"no request has succeeded for {self.config.network.retry.outage_s:.0f} s (last "
                f"error: {reason}); the API looks down. Everything fetched so far is saved: "
                "re-run the same command later to resume.")


def _env_proxy() -> str | None:
    import os

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        if os.environ.get(name):
            return os.environ[name]
    return None

