"""One request, sent until it yields a usable answer, cut as httpx cuts ``send``:

    send        one attempt: the pacer, the transport, the counters, the API key masked in
                the answer, the server's rate-limit headers to the pacer, the -vv trace
    judge       the answer classified into the policy's Action (net/policy.py): a page to
                read, a reason to try again, a refusal (Refused) or the end of the run
    exchange    the retry loop: backoff, the stale-connection resend, and after every
                failure the run's Health (net/health.py) says whether to go on
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import msgspec
import orjson

from bulkgene.config import DownloadConfig
from bulkgene.errors import AuthError, FatalHTTPError
from bulkgene.ncbi.pages import InvalidPage
from bulkgene.ncbi.requests import PageRequest
from bulkgene.net.attempt import HttpRequest, Reply, Transport
from bulkgene.net.failures import AttemptFailed, StaleConnection, TlsUnverified
from bulkgene.net.health import Health
from bulkgene.net.keymask import mask_echoes
from bulkgene.net.pacer import AdaptiveRateLimiter
from bulkgene.net.policy import Action, backoff_s, classify, parse_retry_after

log = logging.getLogger("bulkgene")
TRACE = 5  # -vv: every request and its answer

NOT_FOUND_ATTEMPTS = 3  # a front end's 404 (and any 404 to a probe) is retried this often
_STALE_RESENDS = 3  # a dead pooled connection is no failure, but a loop of them is
_REQUEST_ID_HEADERS = ("Ncbi-Phid", "X-Request-Id")
# what parsing a hostile body can raise besides InvalidPage (bad UTF-8, nesting, numbers)
_UNTRUSTED_BODY_ERRORS = (ValueError, UnicodeError, RecursionError, OverflowError,
                          msgspec.DecodeError)
T = TypeVar("T")


@dataclass
class NetStats:
    """Counters of what went over the wire."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    bytes: int = 0


class GaveUp(Exception):
    """This request (and so its batch) failed after every attempt; ``invalid_page``: its last
    attempt was answered, with a page the reader refused (not a failure to answer)."""

    def __init__(self, message: str, *, invalid_page: bool = False) -> None:
        super().__init__(message)
        self.invalid_page = invalid_page


class Refused(Exception):
    """The server refused this set of IDs as a whole: ``action`` is the policy's word for
    the answer (REFUSED, NOT_FOUND, GONE, TOO_LONG), ``status`` its HTTP status."""

    def __init__(self, action: Action, status: int, message: str) -> None:
        super().__init__(message)
        self.action = action
        self.status = status
        self.message = message


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


@dataclass(frozen=True)
class Sent:
    """An answer, and when its request went on the wire (the pacer's clock)."""

    reply: Reply
    sent_at: float


@dataclass(frozen=True)
class _Use(Generic[T]):
    result: T


@dataclass(frozen=True)
class _Again:
    reason: str
    retry_after_s: float | None = None
    invalid_page: bool = False


@dataclass
class Exchanger:
    """Sends requests through one transport and one pacer; the run's Health on the side."""

    transport: Transport
    limiter: AdaptiveRateLimiter
    config: DownloadConfig
    stats: NetStats = field(default_factory=NetStats)
    rng: random.Random = field(default_factory=random.Random)
    health: Health = field(init=False)

    def __post_init__(self) -> None:
        self.health = Health(self.config.network)

    async def exchange(self, request: PageRequest, max_attempts: int,
                       read: Callable[[Reply], T], *, patient_404: bool = False) -> T:
        """Send until ``read`` accepts a 200 (``read`` raises InvalidPage for a page to fetch
        again); raises Refused, GaveUp or a fatal error. The API's own 404 refuses the
        request at once (a front end's is retried first), unless ``patient_404`` (a probe:
        its 404 ends the run or retires the endpoint, so it must not be a passing one)."""
        retry = self.config.network.retry
        attempt_number = stale_resends = not_found = 0
        while True:
            failure: AttemptFailed | None = None
            try:
                sent = await self.send(request)
            except StaleConnection as exc:
                if stale_resends < _STALE_RESENDS:
                    stale_resends += 1  # the server had closed it: no fault, no backoff
                    self.stats.retries += 1
                    log.debug("resending at once: a kept-alive connection was closed")
                    continue
                failure = exc
            except AttemptFailed as exc:
                failure = exc
            if failure is not None:
                verdict: _Use[T] | _Again = _Again(failure.reason)
            else:
                action, message = self._classify(sent.reply)
                if action in (Action.NOT_FOUND, Action.STRAY_404):
                    not_found += 1
                    if action is Action.STRAY_404 or patient_404:
                        # a refusal only once it persists
                        action = (Action.NOT_FOUND if not_found >= NOT_FOUND_ATTEMPTS
                                  else Action.STRAY_404)
                verdict = self._judge(sent, action, message, read)
            if isinstance(verdict, _Use):
                return verdict.result
            self.health.failed(failure, verdict.reason)
            attempt_number += 1
            if attempt_number >= max_attempts:
                self.health.gave_up(failure)
                raise GaveUp(f"gave up after {attempt_number} attempts; last: {verdict.reason}",
                             invalid_page=verdict.invalid_page)
            self.stats.retries += 1
            delay = self.health.wait_s(
                backoff_s(retry, attempt_number, verdict.retry_after_s, self.rng), failure)
            if verdict.reason.startswith("HTTP 404"):  # a front end's: the third one is a refusal
                log.debug("retrying in %.1f s (HTTP 404 %d of %d before it counts as a refusal):"
                          " %s", delay, not_found + 1, NOT_FOUND_ATTEMPTS, verdict.reason)
            else:
                log.debug("retrying in %.1f s (attempt %d of %d): %s", delay,
                          attempt_number + 1, max_attempts, verdict.reason)
            await asyncio.sleep(delay)

    async def send(self, request: PageRequest) -> Sent:
        """One attempt through the pacer; raises an AttemptFailed, or FatalHTTPError for a
        certificate no retry can fix."""
        network = self.config.network
        headers = {"Accept": request.accept}
        if network.api_key:
            headers["api-key"] = network.api_key.reveal()
        await self.limiter.acquire()
        self.stats.requests += 1
        started_at = asyncio.get_running_loop().time()
        sent_at: float | None = None

        def record_send() -> None:
            nonlocal sent_at
            if sent_at is None:
                sent_at = self.limiter.on_sent()

        out = False

        def went_out() -> None:  # the transport: the headers are on the wire
            nonlocal out
            record_send()
            out = True
            self.health.went_out()

        try:
            reply = await self.transport(HttpRequest(
                request, network.base_url.rstrip("/") + request.path, headers,
                network.timeouts, network.max_response_bytes, went_out))
        except TlsUnverified as exc:
            raise self._tls_error(exc) from None
        except AttemptFailed as exc:
            exc.started_at = started_at
            raise
        finally:
            record_send()  # a request that never left must not hold the next one back
            if out:
                self.health.came_back()
        assert sent_at is not None
        self.health.answered()
        self.stats.bytes += len(reply.body)
        reply = self._without_key(reply)
        path = request.path
        log.log(TRACE, "%s %s -> HTTP %d, %d bytes, limit %s, remaining %s", request.method,
                path if len(path) < 60 else path[:57] + "...", reply.status, len(reply.body),
                reply.headers.get("X-RateLimit-Limit", "-"),
                reply.headers.get("X-RateLimit-Remaining", "-"))
        self._read_server_limits(reply.headers, sent_at)
        return Sent(reply, sent_at)

    def _classify(self, reply: Reply) -> tuple[Action, str]:
        """The policy's Action for an answer, and the server's message (key masked)."""
        message = self._masked(server_message(reply.body)) if reply.status != 200 else ""
        return classify(reply.status, message, reply.headers, reply.body), message

    def _judge(self, sent: Sent, action: Action, message: str, read: Callable[[Reply], T]
               ) -> _Use[T] | _Again:
        """What an answer of ``action`` means: a result, or a reason to try again; raises
        Refused or a fatal error."""
        reply = sent.reply
        if action is Action.USE:
            try:
                result = read(reply)
            except InvalidPage as exc:
                return _Again(self._masked(f"invalid page: {exc}"), invalid_page=True)
            except _UNTRUSTED_BODY_ERRORS as exc:  # whatever a body holds, no crash
                return _Again(self._masked(
                    f"invalid page: {type(exc).__name__}: {str(exc)[:100]}"), invalid_page=True)
            self.health.succeeded()
            return _Use(result)
        retry_cap_s = self.config.network.retry.retry_after_cap_s
        if action is Action.THROTTLED:
            self.stats.throttled += 1
            retry_after = parse_retry_after(reply.headers.get("Retry-After"), retry_cap_s)
            self.limiter.on_throttled(retry_after, _float_header(
                reply.headers, "X-RateLimit-Limit"), sent.sent_at)
            log.debug("HTTP 429: the server asks us to slow down (limit %s)",
                      reply.headers.get("X-RateLimit-Limit", "not given"))
            return _Again("HTTP 429 Too Many Requests", retry_after)
        if action is Action.RETRY:
            return _Again(f"HTTP {reply.status}",
                          parse_retry_after(reply.headers.get("Retry-After"), retry_cap_s))
        if action in (Action.GONE, Action.NOT_FOUND):
            self.health.succeeded()  # the server answered: it is reachable
            raise Refused(action, reply.status, message)
        if action is Action.STRAY_404:
            return _Again(f"HTTP {reply.status}: {message}")
        raise self._final(action, reply, message)

    def _final(self, action: Action, reply: Reply, message: str) -> Exception:
        """The error for an answer no retry can change: the run's end, a refusal, the batch's."""
        request_id = next((reply.headers[h] for h in _REQUEST_ID_HEADERS if h in reply.headers),
                          None)
        suffix = f" (server request id {request_id})" if request_id else ""
        if action is Action.AUTH:
            if reply.status == 401:
                return AuthError(
                    f"the server rejected the API key (HTTP 401: {message}){suffix}. Check "
                    "NCBI_API_KEY or --api-key-file; keys are made at "
                    "https://www.ncbi.nlm.nih.gov/account/settings/")
            return AuthError(
                f"the server refused access (HTTP 403){suffix}. NCBI blocks IP addresses that "
                "send too many requests: stop other downloads from this machine, wait, lower "
                "--rate, and contact NCBI (info@ncbi.nlm.nih.gov) if it persists. Re-run the "
                "same command to resume.")
        if action in (Action.REFUSED, Action.TOO_LONG):
            return Refused(action, reply.status, message)
        if action is Action.REDIRECT:
            return FatalHTTPError(
                f"the server answered with a redirect (HTTP {reply.status}), which bulkgene "
                "does not follow so the API key can't leak to another host: check --base-url")
        return GaveUp(f"HTTP {reply.status}: {message}")

    def _tls_error(self, failure: TlsUnverified) -> FatalHTTPError:
        host = urlsplit(self.config.network.base_url).hostname
        return FatalHTTPError(
            f"the TLS certificate of {host} could not be verified ({failure.kind}: "
            f"{failure.detail}); bulkgene never skips verification. Behind a proxy that "
            "re-signs traffic, point SSL_CERT_FILE at your site's CA bundle and run again.")

    def _masked(self, text: str) -> str:
        """``text`` decoded from an answer, with our API key masked: a server may echo it
        JSON-escaped (``\\u0053...``), which only decoding turns back into the key."""
        key = self.config.network.api_key
        return text.replace(key.reveal(), "***") if key is not None else text

    def _without_key(self, reply: Reply) -> Reply:
        """The answer with any echo of our API key masked: a server that repeats it back
        (in an error message, or inside a report) must not get it into a log or a file."""
        key = self.config.network.api_key
        if key is None:
            return reply
        body = mask_echoes(reply.body, key.reveal())  # also JSON-escaped echoes
        if body is reply.body and not any(key.reveal() in value
                                          for value in reply.headers.values()):
            return reply
        headers = {name: value.replace(key.reveal(), "***")
                   for name, value in reply.headers.items()}
        return Reply(reply.status, headers, body)

    def _read_server_limits(self, headers: Mapping[str, str], sent_at: float) -> None:
        limit = _float_header(headers, "X-RateLimit-Limit")
        remaining = _float_header(headers, "X-RateLimit-Remaining")
        if remaining is not None and not (math.isfinite(remaining) and remaining >= 0):
            remaining = None  # "nan", "inf", "-3": no count at all
        if limit is not None or remaining is not None:
            self.limiter.on_server_limit(limit, None if remaining is None else int(remaining),
                                         sent_at)
