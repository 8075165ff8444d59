"""Fetch one batch: the page-token loop, and around every page the retry loop.

Every attempt waits for the rate limiter. A page is kept only once it validates; a batch
is complete only when its pages add up to ``total_count``. What happens on each failure
is decided here and nowhere else:

    connection error, timeout, truncated body, invalid/HTML/wrong-shape page,
    429, 5xx except 501 .......... retried with backoff, up to RetryPolicy.max_attempts
    400 (invalid page token) ..... the batch restarts from page 1
    400, 414, 431 ................ the batch is split in halves to isolate the offending IDs
    a GET path over 7800 bytes .... split in halves before it is sent
    401, 403 ..................... AuthError: the whole run stops
    every request failing for RetryPolicy.outage_s ... OutageError: the whole run stops
    anything else ................ the batch fails; the run goes on and exits 3
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson

from bulkgene.batches import Batch
from bulkgene.config import DownloadConfig
from bulkgene.errors import AuthError, FatalHTTPError, OutageError
from bulkgene.ncbi import (
    NOT_RETURNED,
    BatchAnswer,
    BrokenChain,
    InvalidPage,
    Record,
    page_request,
    parse_ndjson,
    parse_page,
)
from bulkgene.ratelimit import AdaptiveRateLimiter, Slot
from bulkgene.retry import (
    AUTH_STATUSES,
    SPLIT_STATUSES,
    backoff_s,
    is_retried_status,
    parse_retry_after,
)
from bulkgene.tsv import GENE_ID_FIELD, TsvAnswer, parse_tsv

REJECTED_BY_SERVER = "REJECTED_BY_SERVER"
AnswerT = TypeVar("AnswerT", BatchAnswer, TsvAnswer)
# GET puts the IDs in the path: 1000 IDs of 8-9 digits make 9-10 KB, and gateways commonly
# refuse request lines over 8 KB (nginx's default). A longer batch is fetched in halves
# (one commit still); a 414/431 that happens anyway splits the same way.
MAX_PATH_BYTES = 7800
_REQUEST_ID_HEADERS = ("NCBI-PHID", "X-Request-Id", "X-Ncbi-Phid")


@dataclass
class NetStats:
    """Counters of what went over the wire."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class BatchOutcome:
    """A batch fetched completely: what to write and how to account for it."""

    batch: Batch
    records: list[Record]
    found: int
    missing: list[tuple[int, str]]
    header: bytes | None = None  # TSV: the header line, for the top of a new shard
    unverified: int = 0  # TSV without a GeneID column: IDs neither found nor missing


@dataclass(frozen=True)
class BatchFailure:
    """A batch that could not be fetched after every retry; a re-run tries it again."""

    batch: Batch
    reason: str


BatchResult = BatchOutcome | BatchFailure


class _GaveUp(Exception):
    """This page (and so this batch) failed after every attempt."""


class _RestartBatch(Exception):
    """The page chain is broken (bad token, loop): fetch the batch again from page 1."""


class _Split(Exception):
    """The server refused this set of IDs as a whole (400/414/431)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def describe_exception(exc: BaseException) -> str:
    """A one-line description that names the failure but never a URL or header."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut short"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error ({exc.strerror or type(exc).__name__})"
    return type(exc).__name__


def _float_header(headers: Mapping[str, str], name: str) -> float | None:
    try:
        return float(headers[name]) if name in headers else None
    except ValueError:
        return None


def sent_hook() -> aiohttp.TraceConfig:
    """A trace config that tells each request's rate-limit Slot when its headers went out."""

    async def on_headers_sent(session: aiohttp.ClientSession, context: SimpleNamespace,
                              params: aiohttp.TraceRequestHeadersSentParams) -> None:
        slot = context.trace_request_ctx
        if isinstance(slot, Slot):
            slot.sent()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_headers_sent)
    return trace


def _server_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return body[:200].decode("utf-8", "replace").strip()


@dataclass
class GeneClient:
    """Fetches batches of GeneIDs through one session and one rate limiter."""

    session: aiohttp.ClientSession
    limiter: AdaptiveRateLimiter
    config: DownloadConfig
    stats: NetStats = field(default_factory=NetStats)
    rng: random.Random = field(default_factory=random.Random)
    _last_success_at: float | None = None

    async def fetch_batch(self, batch: Batch) -> BatchResult:
        """Every page of ``batch``, validated; a BatchFailure if it can't be had."""
        try:
            if self.config.format == "tsv":
                return await self._fetch_tsv(batch)
            answer = await self._fetch_ids(batch.gene_ids)
        except _GaveUp as exc:
            return BatchFailure(batch, str(exc))
        return BatchOutcome(batch, answer.records, len(answer.answered), answer.missing())

    async def _fetch_tsv(self, batch: Batch) -> BatchOutcome:
        """The batch as TSV: one answer with every row, or halves of it (as _fetch_ids)."""
        answer = await self._fetch_tsv_ids(batch.gene_ids)
        if not answer.accountable:
            return BatchOutcome(batch, answer.records, 0, [], answer.header,
                                unverified=len(batch.gene_ids))
        missing = [(gene_id, NOT_RETURNED) for gene_id in batch.gene_ids
                   if gene_id not in answer.answered]
        return BatchOutcome(batch, answer.records, len(answer.answered), missing, answer.header)

    async def _fetch_tsv_ids(self, gene_ids: tuple[int, ...]) -> TsvAnswer:
        has_header = self.config.include_tabular_header != "INCLUDE_TABULAR_HEADER_NEVER"
        fields = self.config.table_fields
        column = fields.index(GENE_ID_FIELD) if GENE_ID_FIELD in fields else None

        async def fetch(ids: tuple[int, ...]) -> TsvAnswer:
            holder: list[TsvAnswer] = []

            def parse(body: bytes, _answer: BatchAnswer) -> str | None:
                holder[:] = [parse_tsv(body, ids, has_header, column)]
                return None

            try:
                await self._fetch_page(ids, None, BatchAnswer(ids), parse)
            except _RestartBatch as exc:  # TSV has no page chain to restart
                raise _GaveUp(str(exc)) from None
            return holder[0]

        def refused(_ids: tuple[int, ...]) -> TsvAnswer:
            # one refused ID: no rows, so it is counted missing (or unverified)
            return TsvAnswer(None, accountable=column is not None)

        return await self._split_when_refused(gene_ids, fetch, refused, TsvAnswer.merged)

    async def _fetch_ids(self, gene_ids: tuple[int, ...]) -> BatchAnswer:
        gene_only = self.config.record == "gene"

        def refused(ids: tuple[int, ...]) -> BatchAnswer:
            answer = BatchAnswer(ids, gene_only)
            answer.reasons[ids[0]] = REJECTED_BY_SERVER
            return answer

        def merged(ids: tuple[int, ...], parts: tuple[BatchAnswer, BatchAnswer]) -> BatchAnswer:
            return BatchAnswer.merged(ids, gene_only, parts)

        return await self._split_when_refused(gene_ids, self._fetch_chain, refused, merged)

    async def _split_when_refused(
            self, gene_ids: tuple[int, ...],
            fetch: Callable[[tuple[int, ...]], Awaitable[AnswerT]],
            refused: Callable[[tuple[int, ...]], AnswerT],
            merge: Callable[[tuple[int, ...], tuple[AnswerT, AnswerT]], AnswerT]) -> AnswerT:
        """``fetch(gene_ids)``, in halves when the server refuses them together (400, 414,
        431) or the GET URL would be too long; a single refused ID becomes ``refused``."""
        try:
            if len(gene_ids) > 1 and len(page_request(self.config, gene_ids, None).path) > \
                    MAX_PATH_BYTES:
                raise _Split(414, "planned: the URL would be too long")  # not sent at all
            return await fetch(gene_ids)
        except _Split as split:
            if len(gene_ids) == 1:
                if split.status != 400:
                    raise _GaveUp(f"HTTP {split.status} for a single GeneID: {split}") from None
                return refused(gene_ids)
            half = len(gene_ids) // 2
            first = await self._split_when_refused(gene_ids[:half], fetch, refused, merge)
            second = await self._split_when_refused(gene_ids[half:], fetch, refused, merge)
            return merge(gene_ids, (first, second))

    async def _fetch_chain(self, gene_ids: tuple[int, ...]) -> BatchAnswer:
        """Follow ``next_page_token`` from page 1 until the batch is complete."""
        for _restart in range(self.config.retry.max_attempts):  # restarts share the budget
            answer = BatchAnswer(gene_ids, self.config.record == "gene")
            token: str | None = None
            try:
                while True:
                    token = await self._fetch_page(gene_ids, token, answer)
                    if token is None:
                        answer.check_complete()
                        return answer
                    expected_pages = -(-(answer.total_count or 0) // self.config.page_size)
                    if answer.pages > expected_pages + 1:
                        raise _RestartBatch("the page chain goes on past total_count")
            except (_RestartBatch, InvalidPage):
                continue
        raise _GaveUp("the server's page chain kept breaking (tokens rejected or repeated)")

    def _read_json_page(self, body: bytes, answer: BatchAnswer) -> str | None:
        page = parse_ndjson(body) if self.config.format == "ndjson" else parse_page(body)
        answer.add(page)
        return page.next_page_token

    async def _fetch_page(self, gene_ids: tuple[int, ...], token: str | None,
                          answer: BatchAnswer,
                          read: Callable[[bytes, BatchAnswer], str | None] | None = None
                          ) -> str | None:
        """One page, retried until ``read`` accepts it; returns the next token."""
        read = read or self._read_json_page
        request = page_request(self.config, gene_ids, token)
        url = self.config.base_url.rstrip("/") + request.path
        headers = {"Accept": request.accept}
        if self.config.api_key:
            headers["api-key"] = self.config.api_key.reveal()
        policy = self.config.retry
        timeouts = self.config.timeouts
        timeout = aiohttp.ClientTimeout(total=timeouts.attempt_s, sock_connect=timeouts.connect_s,
                                        sock_read=timeouts.read_stall_s)
        reason = ""
        for attempt in range(1, policy.max_attempts + 1):
            slot = await self.limiter.acquire()
            self.stats.requests += 1
            retry_after: float | None = None
            try:
                async with self.session.request(request.method, url, params=request.params,
                                                json=request.json_body, headers=headers,
                                                allow_redirects=False, timeout=timeout,
                                                trace_request_ctx=slot) as response:
                    slot.sent()  # at the latest; the trace hook reports the exact moment
                    body = await response.read()
                    status = response.status
                    response_headers = response.headers
            except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
                host = urlsplit(self.config.base_url).hostname
                raise FatalHTTPError(
                    f"the TLS certificate of {host} could not be verified ({type(exc).__name__}); "
                    "bulkgene never skips verification. Behind a proxy that re-signs traffic, "
                    "point SSL_CERT_FILE at your site's CA bundle and run again.") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = describe_exception(exc)
            else:
                self.stats.bytes += len(body)
                self._read_server_limits(response_headers, slot.sent_at)
                if status == 200:
                    try:
                        next_token = read(body, answer)
                    except BrokenChain as exc:
                        raise _RestartBatch(str(exc)) from None
                    except InvalidPage as exc:
                        reason = f"invalid page: {exc}"
                    else:
                        self._last_success_at = asyncio.get_running_loop().time()
                        return next_token
                elif status == 429:
                    self.stats.throttled += 1
                    retry_after = parse_retry_after(response_headers.get("Retry-After"),
                                                    policy.retry_after_cap_s)
                    self.limiter.on_throttled(retry_after, _float_header(
                        response_headers, "X-RateLimit-Limit"))
                    reason = "HTTP 429 Too Many Requests"
                elif is_retried_status(status):
                    retry_after = parse_retry_after(response_headers.get("Retry-After"),
                                                    policy.retry_after_cap_s)
                    reason = f"HTTP {status}"
                else:
                    self._raise_for_final(status, body, response_headers, token)
            finally:
                slot.sent()  # a request that never left must not hold the next one back
            self._check_outage(reason)
            if attempt == policy.max_attempts:
                break
            self.stats.retries += 1
            await asyncio.sleep(backoff_s(policy, attempt, retry_after, self.rng))
        raise _GaveUp(f"gave up after {policy.max_attempts} attempts; last: {reason}")

    def _raise_for_final(self, status: int, body: bytes, headers: Mapping[str, str],
                         token: str | None) -> None:
        message = _server_message(body)
        request_id = next((headers[h] for h in _REQUEST_ID_HEADERS if h in headers), None)
        suffix = f" (server request id {request_id})" if request_id else ""
        if status in AUTH_STATUSES:
            if status == 401:
                raise AuthError(
                    f"the server rejected the API key (HTTP 401: {message}){suffix}. Check "
                    "NCBI_API_KEY or --api-key-file; keys are made at "
                    "https://www.ncbi.nlm.nih.gov/account/settings/")
            raise AuthError(
                f"the server refused access (HTTP 403{': blocked' if b'<' in body[:1] else ''})"
                f"{suffix}. NCBI blocks IP addresses that send too many requests: stop other "
                "downloads from this machine, wait, lower --rate, and contact NCBI "
                "(info@ncbi.nlm.nih.gov) if it persists. Re-run the same command to resume.")
        if status in SPLIT_STATUSES:
            if token is not None and "token" in message.lower():
                raise _RestartBatch(message)
            raise _Split(status, message)
        if 300 <= status < 400:
            raise FatalHTTPError(
                f"the server answered with a redirect (HTTP {status}), which bulkgene does not "
                "follow so the API key can't leak to another host: check --base-url")
        if status == 404:
            raise FatalHTTPError(
                f"the server says this endpoint does not exist (HTTP 404: {message}): check "
                f"--base-url (expected something like https://api.ncbi.nlm.nih.gov/datasets/v2)")
        raise _GaveUp(f"HTTP {status}: {message}")

    def _read_server_limits(self, headers: Mapping[str, str], sent_at: float | None) -> None:
        limit = _float_header(headers, "X-RateLimit-Limit")
        remaining = _float_header(headers, "X-RateLimit-Remaining")
        if limit is not None or remaining is not None:
            self.limiter.on_server_limit(limit, None if remaining is None else int(remaining),
                                         sent_at)

    def _check_outage(self, reason: str) -> None:
        now = asyncio.get_running_loop().time()
        if self._last_success_at is None:
            self._last_success_at = now
        elif now - self._last_success_at > self.config.retry.outage_s:
            raise OutageError(
                f"no request has succeeded for {self.config.retry.outage_s:.0f} s (last error: "
                f"{reason}); the API looks down. Everything fetched so far is saved: re-run the "
                "same command later to resume.")
