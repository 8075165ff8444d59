"""One request, sent until it yields a usable answer: pacer, transport, status policy, backoff."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
import msgspec
import orjson

from bulkgene.config import DownloadConfig
from bulkgene.errors import AuthError, FatalHTTPError, OutageError
from bulkgene.ncbi.pages import InvalidPage
from bulkgene.ncbi.requests import PageRequest
from bulkgene.net.attempt import AttemptFailed, Reply, attempt
from bulkgene.net.keymask import mask_echoes
from bulkgene.net.pacer import AdaptiveRateLimiter, Slot
from bulkgene.net.policy import Action, action_for, backoff_s, parse_retry_after

log = logging.getLogger("bulkgene")
TRACE = 5  # -vv: every request and its answer

NOT_FOUND_ATTEMPTS = 3  # a 404 is retried like a transient error this often
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
    """This request (and so its batch) failed after every attempt."""


class Refused(Exception):
    """The server refused this set of IDs as a whole (400, 414, 431, a persistent 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Transport(Protocol):
    """Performs one HTTP attempt: a Reply for any status, else AttemptFailed (or a fatal error)."""

    def __call__(self, session: aiohttp.ClientSession, method: str, url: str, *,
                 params: list[tuple[str, str]], json_body: dict[str, Any] | None,
                 headers: Mapping[str, str], client_timeout: aiohttp.ClientTimeout,
                 slot: Slot, max_body_bytes: int) -> Awaitable[Reply]: ...


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
class Exchanger:
    """Sends requests through one session and one pacer, and keeps the run's network health."""

    session: aiohttp.ClientSession
    limiter: AdaptiveRateLimiter
    config: DownloadConfig
    stats: NetStats = field(default_factory=NetStats)
    rng: random.Random = field(default_factory=random.Random)
    transport: Transport = attempt
    _last_success_at: float | None = None
    _ever_succeeded: bool = False
    _first_failure_at: float | None = None

    async def exchange(self, request: PageRequest, max_attempts: int,
                       read: Callable[[Reply], T]) -> T:
        """Send until ``read`` accepts a 200; raises Refused, GaveUp or a fatal error."""
        network = self.config.network
        method, path = request.method, request.path
        url = network.base_url.rstrip("/") + path
        headers = {"Accept": request.accept}
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
                reply = await self.transport(
                    self.session, method, url, params=request.params,
                    json_body=request.json_body, headers=headers, client_timeout=timeout,
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
                        reason = self._masked(f"invalid page: {exc}")
                    except _UNTRUSTED_BODY_ERRORS as exc:  # whatever a body holds, no crash
                        reason = self._masked(
                            f"invalid page: {type(exc).__name__}: {str(exc)[:100]}")
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
                    message = self._masked(server_message(reply.body))
                    not_found += 1
                    retired = action is Action.GONE or "retired" in message.lower()
                    if retired or not_found >= NOT_FOUND_ATTEMPTS:
                        self._succeeded()  # the server answered: it is reachable
                        raise Refused(reply.status, message)
                    reason = f"HTTP {reply.status}: {message}"
                else:
                    self._raise_final(action, reply)
            self._check_outage(reason)
            attempt_number += 1
            if attempt_number >= max_attempts:
                if unreachable is not None and not self._ever_succeeded:
                    self._raise_unreachable(unreachable)  # a setup problem, not a bad batch
                raise GaveUp(f"gave up after {attempt_number} attempts; last: {reason}")
            self.stats.retries += 1
            delay = backoff_s(network.retry, attempt_number, retry_after, self.rng)
            if unreachable is not None and not self._ever_succeeded and (
                    self._first_failure_at is not None):
                # try again right at the deadline, so an unreachable host stops the run
                # then and not a backoff later
                deadline = self._first_failure_at + network.retry.unreachable_s + 0.01
                delay = min(delay, max(0.0, deadline - asyncio.get_running_loop().time()))
            if reason.startswith("HTTP 404"):  # the third 404 probes and splits, not --max-attempts
                log.debug("retrying in %.1f s (HTTP 404 %d of %d before the batch is probed and "
                          "split): %s", delay, not_found + 1, NOT_FOUND_ATTEMPTS, reason)
            else:
                log.debug("retrying in %.1f s (attempt %d of %d): %s", delay,
                          attempt_number + 1, max_attempts, reason)
            await asyncio.sleep(delay)

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

    def _raise_final(self, action: Action, reply: Reply) -> None:
        message = self._masked(server_message(reply.body))
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
            raise Refused(reply.status, message)
        if action is Action.REDIRECT:
            raise FatalHTTPError(
                f"the server answered with a redirect (HTTP {reply.status}), which bulkgene "
                "does not follow so the API key can't leak to another host: check --base-url")
        raise GaveUp(f"HTTP {reply.status}: {message}")

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
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        if os.environ.get(name):
            return os.environ[name]
    return None
