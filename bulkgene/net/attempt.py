"""One HTTP attempt, and the one place where aiohttp's exceptions become bulkgene's words.

An attempt sends one request and reads its answer whole, up to a size cap (decompressed
bytes: a gzip bomb is cut off as it inflates). It returns a Reply for any HTTP status;
everything else becomes an AttemptFailed with a reason that names the failure but never a
URL or header, except TLS failures, which no retry can fix (FatalHTTPError).
``stale_connection`` marks the one failure that is nobody's fault: a kept-alive connection
the server had already closed, found out before any byte of the answer arrived.
"""

from __future__ import annotations

import asyncio
import errno
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler

from bulkgene.errors import FatalHTTPError
from bulkgene.net.pacer import Slot

_CHUNK_BYTES = 1 << 16
_STALE_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class AttemptFailed(Exception):
    """No usable HTTP answer: connection, timeout, a cut or oversized body."""

    def __init__(self, reason: str, *, stale_connection: bool = False,
                 unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stale_connection = stale_connection
        self.unreachable = unreachable  # DNS, refused connection, proxy: the host can't be had


@dataclass
class SlotContext:
    """What the trace hooks learn about one request: its pacer slot, a reused connection."""

    slot: Slot
    reused_connection: bool = False


def trace_config() -> aiohttp.TraceConfig:
    """Hooks that tell a request's Slot when its headers went out and mark pooled connections."""

    async def on_headers_sent(_session: aiohttp.ClientSession, context: SimpleNamespace,
                              _params: aiohttp.TraceRequestHeadersSentParams) -> None:
        ctx = context.trace_request_ctx
        if isinstance(ctx, SlotContext):
            ctx.slot.sent()

    async def on_reuse(_session: aiohttp.ClientSession, context: SimpleNamespace,
                       _params: aiohttp.TraceConnectionReuseconnParams) -> None:
        ctx = context.trace_request_ctx
        if isinstance(ctx, SlotContext):
            ctx.reused_connection = True

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_headers_sent)
    trace.on_connection_reuseconn.append(on_reuse)
    return trace


def describe_exception(exc: BaseException) -> str:
    """A one-line description that names the failure but never a URL or header."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut short"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"could not connect to the proxy ({exc.os_error.strerror or 'refused'})"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name could not be resolved"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy refused the connection (HTTP {exc.status})"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error ({exc.strerror or type(exc).__name__})"
    return type(exc).__name__


def _is_stale(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    return (isinstance(exc, aiohttp.ClientOSError)
            and not isinstance(exc, aiohttp.ClientConnectorError)
            and exc.errno in _STALE_ERRNOS)


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


async def attempt(session: aiohttp.ClientSession, method: str, url: str, *,
                  params: list[tuple[str, str]], json_body: dict[str, Any] | None,
                  headers: Mapping[str, str], client_timeout: aiohttp.ClientTimeout, slot: Slot,
                  max_body_bytes: int) -> Reply:
    """Send one request and read its answer; raises AttemptFailed or FatalHTTPError (TLS)."""
    context = SlotContext(slot)
    answered = False
    try:
        async with session.request(method, url, params=params, json=json_body,
                                   headers=dict(headers), allow_redirects=False,
                                   timeout=client_timeout, trace_request_ctx=context) as response:
            answered = True
            slot.sent()  # at the latest; the trace hook reports the exact moment
            protocol = response.connection.protocol if response.connection else None
            body = await _read_capped(response, max_body_bytes)
            if protocol is not None:
                _count_and_close_if_spent(protocol, response.headers)
            return Reply(response.status, response.headers, body)
    except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
        host = urlsplit(url).hostname
        raise FatalHTTPError(
            f"the TLS certificate of {host} could not be verified ({type(exc).__name__}); "
            "bulkgene never skips verification. Behind a proxy that re-signs traffic, "
            "point SSL_CERT_FILE at your site's CA bundle and run again.") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AttemptFailed(
            describe_exception(exc),
            stale_connection=(context.reused_connection and not answered and _is_stale(exc)),
            unreachable=isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientProxyConnectionError
                                   | aiohttp.ClientHttpProxyError) and not isinstance(
                exc, aiohttp.ClientConnectorCertificateError)) from None
    finally:
        slot.sent()  # a request that never left must not hold the next one back


def open_session(connections: int, keepalive_s: float, user_agent: str) -> aiohttp.ClientSession:
    """The one aiohttp session of a run, set up the way the pacer and the server need.

    Idle pooled connections are dropped after ``keepalive_s``, before NCBI closes them
    (it does after 4 s), so a request is rarely written into a dead connection. aiohttp's
    own silent resend of such a request is turned off (``_retry_connection``, aiohttp >=
    3.11, which pyproject requires): it would bypass the pacer; ``attempt`` reports the
    case as ``stale_connection`` and the client resends through the pacer instead.
    """
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=keepalive_s)
    session = aiohttp.ClientSession(connector=connector, trust_env=True,
                                    trace_configs=[trace_config()],
                                    headers={"User-Agent": user_agent})
    session._retry_connection = False
    return session
