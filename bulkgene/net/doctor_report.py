"""The findings of `bulkgene doctor`: report rows, the diagnosis, and what each probe met."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson

from bulkgene.net.attempt import Reply

Status = Literal["ok", "warn", "fail", "info", "skip"]


@dataclass(frozen=True)
class Check:
    """One row of the report: what was checked, how it went, and what to do if it failed."""

    name: str
    status: Status
    detail: str
    advice: str = ""


@dataclass(frozen=True)
class Diagnosis:
    """Every row, the endpoints that work, and the one a fetch would use (None: none works)."""

    checks: tuple[Check, ...]
    working: tuple[str, ...]
    fetch_endpoint: str | None
    verdict: str
    requests: int

    @property
    def ok(self) -> bool:
        return self.fetch_endpoint is not None

    def as_json(self) -> bytes:
        return orjson.dumps({
            "ok": self.ok, "fetch_endpoint": self.fetch_endpoint, "working": self.working,
            "verdict": self.verdict, "requests": self.requests,
            "checks": [{"check": c.name, "status": c.status, "detail": c.detail,
                        "advice": c.advice} for c in self.checks],
        }, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


@dataclass(frozen=True)
class ProxyRoute:
    """The proxy aiohttp's ``trust_env`` picks for a URL, and why (credentials stripped)."""

    proxy: str | None
    detail: str
    status: Status = "ok"
    advice: str = ""


@dataclass(frozen=True)
class TlsFailure:
    """Why a certificate was not accepted, from OpenSSL's verify code."""

    kind: str  # "unknown CA", "expired", "not yet valid", "hostname mismatch", "handshake"
    message: str


@dataclass
class Probe:
    """One endpoint's request and what came of it."""

    endpoint: str
    reply: Reply | None = None
    failure: str = ""
    failure_kind: str = ""  # dns, proxy, connect, timeout, tls, other
    tls: TlsFailure | None = None
    sent_wall_s: float = 0.0
    received_wall_s: float = 0.0
    verdict: str = "skipped"  # works, retired, not found, auth, throttled, error, invalid, ...
    detail: str = ""

