"""One HTTP attempt, and the one place where aiohttp's exceptions become bulkgene's words.

A Transport takes one ``HttpRequest`` (the page asked for, its URL, headers, timeouts and
size cap) and returns a ``Reply`` for any HTTP status, as httpx's
``handle_async_request(request)`` does; anything else is one of the typed failures of
net/failures.py. ``SessionTransport`` (``attempt`` over the run's aiohttp session) is the
real one; tests inject a scripted one. An attempt reads the answer whole, up to the size
cap (decompressed bytes: a gzip bomb is cut off as it inflates), and tells
``request.on_sent`` when the request's headers went on the wire (the pacer's clock).
"""

from __future__ import annotations

import errno
import re
import ssl
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Protocol

import aiohttp
from aiohttp.client_proto import ResponseHandler

from bulkgene.config import Timeouts
from bulkgene.ncbi.requests import PageRequest
from bulkgene.net.failures import (
    AttemptFailed,
    NameNotResolved,
    NoAnswer,
    StaleConnection,
    TlsUnverified,
    Unreachable,
)

_CHUNK_BYTES = 1 << 16
_STALE_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})
# OpenSSL X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code) and what they mean
_UNKNOWN_CA_CODES = frozenset({2, 18, 19, 20, 21})
_EXPIRED_CODE, _NOT_YET_VALID_CODE = 10, 9
_MISMATCH_CODES = frozenset({62, 64})


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class HttpRequest:
    """One attempt's whole request: the page asked for, where, and within which limits.

    ``on_sent`` is called when the headers are on the wire (perhaps more than once: the
    first call counts); a request that never leaves never calls it.
    """

    page: PageRequest
    url: str
    headers: Mapping[str, str]
    timeouts: Timeouts
    max_body_bytes: int
    on_sent: Callable[[], None] = _nothing


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Performs one HTTP attempt: a Reply for any status, else an AttemptFailed."""

    def __call__(self, request: HttpRequest) -> Awaitable[Reply]: ...


@dataclass
class _TraceContext:
    """What the trace hooks learn about one request: when it went out, a reused connection."""

    on_sent: Callable[[], None]
    reused_connection: bool = False


def trace_config() -> aiohttp.TraceConfig:
    """Hooks that report when a request's headers went out and mark pooled connections."""

    async def on_headers_sent(_session: aiohttp.ClientSession, context: SimpleNamespace,
                              _params: aiohttp.TraceRequestHeadersSentParams) -> None:
        ctx = context.trace_request_ctx
        if isinstance(ctx, _TraceContext):
            ctx.on_sent()

    async def on_reuse(_session: aiohttp.ClientSession, context: SimpleNamespace,
                       _params: aiohttp.TraceConnectionReuseconnParams) -> None:
        ctx = context.trace_request_ctx
        if isinstance(ctx, _TraceContext):
            ctx.reused_connection = True

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_headers_sent)
    trace.on_connection_reuseconn.append(on_reuse)
    return trace


def tls_failure(exc: BaseException) -> tuple[str, str]:
    """Why a certificate was not accepted (a kind, and what OpenSSL said)."""
    cause = exc.certificate_error if isinstance(
        exc, aiohttp.ClientConnectorCertificateError) else None
    if isinstance(cause, ssl.SSLCertVerificationError):
        # set by OpenSSL's handshake; absent on an error raised by other code
        code = getattr(cause, "verify_code", None)
        message = getattr(cause, "verify_message", None) or str(cause)
        if code in _UNKNOWN_CA_CODES:
            return "unknown CA", message
        if code == _EXPIRED_CODE:
            return "expired", message
        if code == _NOT_YET_VALID_CODE:
            return "not yet valid", message
        if code in _MISMATCH_CODES:
            return "hostname mismatch", message
        return "rejected", message
    if cause is not None:  # ssl.CertificateError without a verify code
        return "rejected", str(cause)
    os_error = getattr(exc, "os_error", None)
    reason = getattr(os_error, "reason", None) or type(os_error or exc).__name__
    return "handshake", str(reason)


def translate(exc: BaseException, *, answered: bool, reused_connection: bool) -> AttemptFailed:
    """aiohttp's exception as one of ours, with a reason naming no URL or header.

    ``answered``: the response's headers had arrived; ``reused_connection``: the request
    went out on a pooled connection (only there can a reset be a stale connection).
    """
    if isinstance(exc, aiohttp.ClientSSLError):
        kind, detail = tls_failure(exc)
        return TlsUnverified(f"TLS failed: {kind}", kind=kind, detail=detail)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return NameNotResolved("the host name could not be resolved")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return Unreachable(f"could not connect to the proxy ({exc.os_error.strerror or 'refused'})",
                           via_proxy=True)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return Unreachable(f"the proxy refused the connection (HTTP {exc.status})",
                           via_proxy=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Unreachable(
            f"could not connect ({exc.os_error.strerror or type(exc.os_error).__name__})")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Unreachable("timed out while connecting", timed_out=True)
    if isinstance(exc, TimeoutError):  # a read that stalled, or the whole attempt
        return AttemptFailed("timed out") if answered else NoAnswer("timed out")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return AttemptFailed("the response body was cut short")
    stale = reused_connection and not answered
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        reason = "the server closed the connection"
        return StaleConnection(reason) if stale else AttemptFailed(reason)
    if isinstance(exc, aiohttp.ClientOSError):
        reason = f"connection error ({exc.strerror or type(exc).__name__})"
        if stale and exc.errno in _STALE_ERRNOS:
            return StaleConnection(reason)
        return AttemptFailed(reason)
    return AttemptFailed(type(exc).__name__)


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise AttemptFailed(f"the answer would be {declared} bytes, over the "
                            f"{max_bytes}-byte cap")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise AttemptFailed(f"the answer is larger than the {max_bytes}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


_KEEP_ALIVE_MAX = re.compile(r"\bmax\s*=\s*(\d+)", re.IGNORECASE)
# responses served per pooled connection (keyed by its protocol object, weakly)
_served: weakref.WeakKeyDictionary[ResponseHandler, int] = weakref.WeakKeyDictionary()


def _count_and_close_if_spent(protocol: ResponseHandler, headers: Mapping[str, str]) -> None:
    """Close a connection that has served the ``max`` of the server's ``Keep-Alive``.

    NCBI closes every connection after 40 answers; a request written into it after that
    would fail. Closing it ourselves once it has served that many (or the remaining count
    the header gives, whichever comes first) keeps the pool from reusing it.
    """
    served = _served.get(protocol, 0) + 1
    _served[protocol] = served
    match = _KEEP_ALIVE_MAX.search(headers.get("Keep-Alive", ""))
    if match and served >= int(match.group(1)):
        protocol.close()


async def attempt(session: aiohttp.ClientSession, request: HttpRequest) -> Reply:
    """Send one request and read its answer; raises an AttemptFailed (net/failures.py)."""
    page = request.page
    timeouts = request.timeouts
    client_timeout = aiohttp.ClientTimeout(total=timeouts.attempt_s,
                                           sock_connect=timeouts.connect_s,
                                           sock_read=timeouts.read_stall_s)
    context = _TraceContext(request.on_sent)
    answered = False
    try:
        async with session.request(page.method, request.url, params=page.params,
                                   json=page.json_body, headers=dict(request.headers),
                                   allow_redirects=False, timeout=client_timeout,
                                   trace_request_ctx=context) as response:
            answered = True
            request.on_sent()  # at the latest; the trace hook reports the exact moment
            protocol = response.connection.protocol if response.connection else None
            body = await _read_capped(response, request.max_body_bytes)
            if protocol is not None:
                _count_and_close_if_spent(protocol, response.headers)
            return Reply(response.status, response.headers, body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise translate(exc, answered=answered,
                        reused_connection=context.reused_connection) from None


class SessionTransport:
    """The real Transport: ``attempt`` over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def __call__(self, request: HttpRequest) -> Reply:
        return await attempt(self.session, request)


def open_session(connections: int, keepalive_s: float, user_agent: str) -> aiohttp.ClientSession:
    """The one aiohttp session of a run, set up the way the pacer and the server need.

    Idle pooled connections are dropped after ``keepalive_s``, before NCBI closes them
    (it does after 4 s), so a request is rarely written into a dead connection. aiohttp's
    own silent resend of such a request is turned off (``_retry_connection``, aiohttp >=
    3.11, which pyproject requires): it would bypass the pacer; ``attempt`` reports the
    case as a ``StaleConnection`` and the client resends through the pacer instead.
    """
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=keepalive_s)
    session = aiohttp.ClientSession(connector=connector, trust_env=True,
                                    trace_configs=[trace_config()],
                                    headers={"User-Agent": user_agent})
    session._retry_connection = False
    return session
