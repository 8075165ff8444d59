"""What can keep one HTTP attempt from bringing back an answer, as typed failures.

``attempt()`` (net/attempt.py) turns every aiohttp exception into one of these, in one
place, as httpx's ``map_httpcore_exceptions`` does; nothing above it sees aiohttp's own.
Each carries a ``reason`` that names the failure but never a URL or a header.

    AttemptFailed              no usable answer: retried (a body cut short, over the size
    │                          cap, a stall in the middle of the body)
    ├── StaleConnection        a kept-alive connection the server had already closed, found
    │                          out before any byte of the answer: nobody's fault, resent at once
    ├── NoAnswer               connected and sent, and not one byte came back in time: a
    │                          proxy or firewall that accepts and passes nothing, or a server
    │                          that hangs
    ├── Unreachable            no connection at all: refused, no route, the proxy refused us,
    │   │                      or the connection timed out
    │   └── NameNotResolved    the host name does not resolve (DNS)
    └── TlsUnverified          the certificate can't be verified (or no TLS conversation was
                               possible): no retry can fix it
"""

from __future__ import annotations


class AttemptFailed(Exception):
    """No usable HTTP answer: connection, timeout, a cut or oversized body.

    ``started_at`` is when the pacer let the attempt go (the exchange sets it; the loop's
    clock): how long a host has kept failing is counted from the first attempt's start.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.started_at: float | None = None


class StaleConnection(AttemptFailed):
    """A pooled connection the server had closed, found out before any byte of the answer."""


class NoAnswer(AttemptFailed):
    """The request went out and no byte of an answer came back before the timeout."""


class Unreachable(AttemptFailed):
    """No connection could be made: refused, no route, the proxy refused, timed out.

    ``via_proxy`` says the failure was the proxy's (it could not be reached, or it refused
    to connect us onwards); ``timed_out`` that the connection was never completed in time.
    """

    def __init__(self, reason: str, *, via_proxy: bool = False, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.via_proxy = via_proxy
        self.timed_out = timed_out


class NameNotResolved(Unreachable):
    """The host name does not resolve."""


class TlsUnverified(AttemptFailed):
    """The server's certificate was not accepted, or TLS failed; ``kind`` says why:
    ``unknown CA``, ``expired``, ``not yet valid``, ``hostname mismatch``, ``rejected``
    or ``handshake``, and ``detail`` is what OpenSSL said."""

    def __init__(self, reason: str, *, kind: str, detail: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.detail = detail
