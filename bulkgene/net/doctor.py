"""Preflight checks for `bulkgene doctor`: URL, proxy, DNS, TLS, each endpoint, key, clock.

``diagnose`` sends one request per endpoint (three in all) for a GeneID NCBI always has,
each at least ``gap_s`` after the previous answer, so a doctor run never exceeds NCBI's
anonymous 5 requests/s. Every finding is a ``Check`` row; a failing row carries what to do.
A fetch would work when at least one endpoint answered with a valid page holding that gene.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit
from urllib.request import proxy_bypass

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from bulkgene import __version__
from bulkgene.config import DEFAULT_BASE_URL, ApiQuery, NetworkSpec, default_of
from bulkgene.ncbi.pages import BatchAnswer, InvalidPage, parse_page
from bulkgene.ncbi.requests import FALLBACK_ENDPOINTS, page_request
from bulkgene.net.attempt import Reply, describe_exception, open_session
from bulkgene.net.client import PROBE_GENE_ID, server_message

Status = Literal["ok", "warn", "fail", "info", "skip"]

GAP_S = 0.25  # between one answer and the next request: 3 requests stay under 4 per second
CLOCK_SKEW_WARN_S = 30.0
DEPRECATED = frozenset({"gene-id"})  # `deprecated: true` in NCBI's OpenAPI spec
KEYED_LIMIT = 10  # X-RateLimit-Limit NCBI announces for a keyed client (5 without)
_MAX_BODY_BYTES = 8 << 20  # one gene's page is ~50 KB
KEY_HELP = ("check NCBI_API_KEY, --api-key-file or --api-key (keys are made at "
            "https://www.ncbi.nlm.nih.gov/account/settings/), or run without a key at 5 requests/s")
BLOCKED_HELP = ("NCBI blocks IP addresses that send too many requests: stop other downloads "
                "from this machine, wait, and write to info@ncbi.nlm.nih.gov if it persists")
BASE_URL_HELP = f"check --base-url (or BULKGENE_BASE_URL); NCBI's is {DEFAULT_BASE_URL}"

# OpenSSL X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code) and what they mean here
_UNKNOWN_CA_CODES = frozenset({2, 18, 19, 20, 21})
_EXPIRED_CODE, _NOT_YET_VALID_CODE = 10, 9
_MISMATCH_CODES = frozenset({62, 64})
_NO_CONNECTION = frozenset({"dns", "proxy", "connect", "connect timeout", "tls"})
_DOCS_NOTE = re.compile(r"\s*\(For more help, see [^)]*\)")


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
class _Probe:
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


class _Unanswered(Exception):
    def __init__(self, reason: str, kind: str, tls: TlsFailure | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.tls = tls


def _env(name: str) -> str | None:
    """An environment variable as urllib reads it: lowercase first, then uppercase."""
    return os.environ.get(name.lower()) or os.environ.get(name.upper()) or None


def proxy_route(base_url: str) -> ProxyRoute:
    """The proxy a request to ``base_url`` goes through, as aiohttp's ``trust_env`` decides."""
    url = URL(base_url)
    variable = "HTTPS_PROXY" if url.scheme == "https" else "HTTP_PROXY"
    configured = _env(variable)
    try:
        proxy, _auth = get_env_proxy_for_url(url)
    except LookupError:
        if configured and url.host and proxy_bypass(url.host):
            return ProxyRoute(None, f"none: NO_PROXY exempts {url.host} from {variable}, so "
                              "the connection is direct")
        if configured and URL(configured).scheme in ("https", "wss"):
            return ProxyRoute(
                None, f"none: {variable} names an https:// proxy, which aiohttp ignores",
                "warn", f"give the proxy as http://host:port in {variable} (the tunnel to "
                "NCBI is still TLS end to end)")
        other = "HTTP_PROXY" if variable == "HTTPS_PROXY" else "HTTPS_PROXY"
        note = (f" ({other} is set but applies to {'http' if other == 'HTTP_PROXY' else 'https'}"
                f":// URLs only)") if _env(other) else ""
        if _env("ALL_PROXY"):
            note += " (ALL_PROXY is set, but aiohttp ignores it)"
        return ProxyRoute(None, f"none: direct connection (no {variable}){note}")
    shown = str(proxy.with_user(None).with_password(None))
    return ProxyRoute(shown, f"{shown} (from {variable})")


def ca_source() -> str:
    """Where the trusted CA certificates come from, as the ssl module will load them."""
    if os.environ.get("SSL_CERT_FILE"):
        return f"SSL_CERT_FILE={os.environ['SSL_CERT_FILE']}"
    if os.environ.get("SSL_CERT_DIR"):
        return f"SSL_CERT_DIR={os.environ['SSL_CERT_DIR']}"
    paths = ssl.get_default_verify_paths()
    return f"the system bundle ({paths.cafile or paths.capath or 'OpenSSL default'})"


def tls_failure(exc: BaseException) -> TlsFailure:
    """What OpenSSL said about a certificate aiohttp would not accept."""
    cause = exc.certificate_error if isinstance(
        exc, aiohttp.ClientConnectorCertificateError) else None
    if isinstance(cause, ssl.SSLCertVerificationError):
        code = cause.verify_code
        message = cause.verify_message or str(cause)
        if code in _UNKNOWN_CA_CODES:
            return TlsFailure("unknown CA", message)
        if code == _EXPIRED_CODE:
            return TlsFailure("expired", message)
        if code == _NOT_YET_VALID_CODE:
            return TlsFailure("not yet valid", message)
        if code in _MISMATCH_CODES:
            return TlsFailure("hostname mismatch", message)
        return TlsFailure("rejected", message)
    if cause is not None:  # ssl.CertificateError without a verify code
        return TlsFailure("rejected", str(cause))
    os_error = getattr(exc, "os_error", None)
    reason = getattr(os_error, "reason", None) or type(os_error or exc).__name__
    return TlsFailure("handshake", str(reason))


def tls_advice(failure: TlsFailure, host: str) -> str:
    """What to do about a certificate that was not accepted; bulkgene never skips the check."""
    if failure.kind == "unknown CA":
        if os.environ.get("SSL_CERT_FILE"):
            return (f"SSL_CERT_FILE={os.environ['SSL_CERT_FILE']} does not hold the CA that signed "
                    f"{host}'s certificate: point it at your site's CA bundle (a proxy that "
                    "inspects TLS re-signs traffic with its own CA; ask your admins for it)")
        return ("this machine does not trust the CA that signed the certificate, usually a proxy "
                "or firewall that re-signs TLS traffic: get your site's CA bundle and set "
                "SSL_CERT_FILE=/path/to/bundle.pem (bulkgene never skips verification)")
    if failure.kind in ("expired", "not yet valid"):
        return ("check this machine's clock (`date -u`); if it is right, the server or a proxy "
                "in between presents a certificate outside its dates: tell its operator")
    if failure.kind == "hostname mismatch":
        return (f"the certificate is not for {host}: another server answered (a typo in the host "
                f"name, or a proxy answering in its place); {BASE_URL_HELP}")
    if failure.kind == "handshake":
        return ("no TLS conversation was possible: is the port a plain-http one (then use "
                "http://), or does a firewall cut TLS? Check --base-url")
    return ("the certificate was refused; point SSL_CERT_FILE at your site's CA bundle if a "
            "proxy re-signs traffic, else tell the server's operator")


def clock_check(date_header: str | None, local_midpoint_s: float) -> Check:
    """The machine's clock against the server's ``Date`` (whole seconds, so +-1 s of slack)."""
    if not date_header:
        return Check("clock", "skip", "not checked: the server sent no Date header")
    try:
        server_s = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError):
        return Check("clock", "skip", f"not checked: unreadable Date header {date_header[:40]!r}")
    skew_s = local_midpoint_s - (server_s + 0.5)  # Date is truncated to the second
    if abs(skew_s) <= CLOCK_SKEW_WARN_S:
        shown = "within 1 s" if abs(skew_s) < 1.5 else f"{skew_s:+.0f} s"
        return Check("clock", "ok", f"in step with the server's Date header ({shown})")
    side = "ahead of" if skew_s > 0 else "behind"
    return Check("clock", "warn", f"this machine's clock is {abs(skew_s):.0f} s {side} the "
                 "server's Date header",
                 "sync the clock (chrony or ntpd; on a cluster, ask your admins): certificate "
                 "dates and Retry-After times are read against it")


def _header_limit(reply: Reply) -> float | None:
    try:
        return float(reply.headers["X-RateLimit-Limit"])
    except (KeyError, ValueError):
        return None


def key_check(has_key: bool, replies: list[Reply]) -> Check:
    """Whether the API key was accepted: 401/403 refuse it, ``X-RateLimit-Limit`` 10 confirms it."""
    statuses = {reply.status for reply in replies}
    limits = [limit for reply in replies if (limit := _header_limit(reply)) is not None]
    limit = max(limits) if limits else None
    shown = f"X-RateLimit-Limit {limit:g}" if limit is not None else ""
    if not has_key and 403 in statuses:
        return Check("API key", "fail", "none given, and the server refuses this machine (HTTP "
                     "403)", BLOCKED_HELP)
    if not has_key:
        extra = f" ({shown})" if shown else ""
        return Check("API key", "info", f"none given: 5 requests/s{extra}; a key "
                     "(NCBI_API_KEY, --api-key-file) allows 10")
    if 401 in statuses:
        return Check("API key", "fail", "rejected by the server (HTTP 401)", KEY_HELP)
    if 403 in statuses:
        return Check("API key", "fail", "refused (HTTP 403): a rejected key or a blocked IP "
                     "address", KEY_HELP + "; if a run without a key gets 403 too: " + BLOCKED_HELP)
    if not any(reply.status < 400 or reply.status == 429 for reply in replies):
        return Check("API key", "skip", "not checked: no endpoint answered")
    if limit is None:
        return Check("API key", "ok", "not rejected (the server sent no X-RateLimit-Limit to "
                     "confirm the 10 requests/s of a key)")
    if limit >= KEYED_LIMIT:
        return Check("API key", "ok", f"accepted: {shown} requests/s")
    return Check("API key", "warn", f"not counted as a key: {shown}, the anonymous limit",
                 "the server treats the requests as anonymous: " + KEY_HELP)


def _first_header(replies: list[Reply], name: str) -> str | None:
    return next((reply.headers[name] for reply in replies if name in reply.headers), None)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class _Doctor:
    network: NetworkSpec
    endpoint: str
    base_url_origin: str
    gap_s: float
    host: str = ""
    port: int = 0
    checks: list[Check] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        url = urlsplit(self.network.base_url)
        self.host = url.hostname or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)

    @property
    def https(self) -> bool:
        return self.network.base_url.startswith("https://")

    async def run(self) -> Diagnosis:
        self.checks.append(Check("base URL", "ok", f"{self.network.base_url} "
                                 f"({self.base_url_origin}); host {self.host}, port {self.port}"))
        route = proxy_route(self.network.base_url)
        self.checks.append(Check("proxy", route.status, route.detail, route.advice))
        resolved = await self._dns(route)
        probes = [_Probe(e) for e in self._endpoint_order()]
        if resolved:
            await self._send_probes(probes)
        else:
            for probe in probes:
                probe.detail = "not tried: the host name does not resolve"
        answered = [p.reply for p in probes if p.reply is not None]
        self.checks.append(self._connection_check(probes, route))
        self.checks.append(self._tls_check(probes))
        self._judge(probes)
        self.checks.extend(self._endpoint_check(p, probes) for p in probes)
        self.checks.append(key_check(self.network.api_key is not None, answered))
        self.checks.extend(self._server_checks(probes))
        working = tuple(p.endpoint for p in probes if p.verdict == "works")
        chosen, verdict = self._fetch_choice(probes)
        return Diagnosis(tuple(self.checks), working, chosen, verdict, self.requests)

    def _endpoint_order(self) -> list[str]:
        return [self.endpoint, *(e for e in FALLBACK_ENDPOINTS if e != self.endpoint)]

    async def _dns(self, route: ProxyRoute) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            pass
        else:
            self.checks.append(Check("DNS", "ok", f"not needed: {self.host} is an IP address"))
            return True
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM), self.network.timeouts.connect_s)
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (
                getattr(exc, "strerror", None) or str(exc))
            if route.proxy is not None:
                self.checks.append(Check("DNS", "info", f"{self.host} does not resolve here "
                                         f"({reason}); the proxy resolves it"))
                return True
            self.checks.append(Check(
                "DNS", "fail", f"{self.host} does not resolve ({reason})",
                "check the host name in --base-url; compute nodes often resolve no outside "
                "names and reach the internet only through a proxy: set HTTPS_PROXY "
                "(ask your admins for its address), or run on a login node"))
            return False
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        shown = ", ".join(addresses[:3]) + (f" and {len(addresses) - 3} more"
                                            if len(addresses) > 3 else "")
        self.checks.append(Check("DNS", "ok", f"{self.host} -> {shown}"))
        return True

    async def _send_probes(self, probes: list[_Probe]) -> None:
        loop = asyncio.get_running_loop()
        timeouts = self.network.timeouts
        client_timeout = aiohttp.ClientTimeout(total=timeouts.attempt_s,
                                               sock_connect=timeouts.connect_s,
                                               sock_read=timeouts.read_stall_s)
        last_answer_at: float | None = None
        async with open_session(1, timeouts.keepalive_s,
                                f"bulkgene/{__version__} doctor (+aiohttp)") as session:
            for probe in probes:
                if last_answer_at is not None:
                    await asyncio.sleep(max(0.0, last_answer_at + self.gap_s - loop.time()))
                await self._probe(session, probe, client_timeout)
                last_answer_at = loop.time()
                if probe.failure_kind in _NO_CONNECTION:
                    for later in probes[probes.index(probe) + 1:]:
                        later.detail = "not tried: the server could not be reached"
                    return

    async def _probe(self, session: aiohttp.ClientSession, probe: _Probe,
                     client_timeout: aiohttp.ClientTimeout) -> None:
        request = page_request(ApiQuery(), probe.endpoint, (PROBE_GENE_ID,), None)
        headers = {"Accept": request.accept}
        if self.network.api_key is not None:
            headers["api-key"] = self.network.api_key.reveal()
        url = self.network.base_url.rstrip("/") + request.path
        self.requests += 1
        probe.sent_wall_s = time.time()
        try:
            probe.reply = await _send(
                session, request.method, url, request.params, request.json_body, headers,
                client_timeout)
        except _Unanswered as exc:
            probe.failure, probe.failure_kind, probe.tls = exc.reason, exc.kind, exc.tls
        probe.received_wall_s = time.time()

    def _connection_check(self, probes: list[_Probe], route: ProxyRoute) -> Check:
        via = f"through the proxy {route.proxy}" if route.proxy else "directly"
        if any(p.reply is not None for p in probes):
            return Check("connection", "ok", f"reached {self.host}:{self.port} {via}")
        failed = next((p for p in probes if p.failure), None)
        if failed is None:
            return Check("connection", "skip", "not tried: the host name does not resolve")
        if failed.failure_kind == "tls":
            return Check("connection", "ok", f"connected to {self.host}:{self.port} {via}; "
                         "TLS then failed (see TLS)")
        advice = {
            "proxy": f"the proxy {route.proxy} does not let us through: check the host and port "
                     "in HTTPS_PROXY/HTTP_PROXY (credentials go in as http://user:pass@host:port), "
                     "or unset it if this machine reaches the internet directly",
            "dns": "check the host name in --base-url, or set HTTPS_PROXY if only a proxy can "
                   "resolve outside names",
            "connect timeout": "nothing answered in time: outgoing traffic may be filtered here "
                               "(compute nodes often reach the internet only through a proxy: "
                               "set HTTPS_PROXY), or raise --timeout",
            "timeout": "nothing answered in time: outgoing traffic may be filtered here (compute "
                       "nodes often need HTTPS_PROXY), or the server is slow; try again, or "
                       "raise --timeout",
        }.get(failed.failure_kind,
              f"nothing accepts connections at {self.host}:{self.port}: {BASE_URL_HELP}; "
              "compute nodes often reach the internet only through a proxy (HTTPS_PROXY)")
        return Check("connection", "fail", f"cannot reach {self.host}:{self.port} {via}: "
                     f"{failed.failure}", advice)

    def _tls_check(self, probes: list[_Probe]) -> Check:
        if not self.https:
            if self.network.api_key is not None and not _loopback(self.host):
                return Check("TLS", "warn", "not used: plain http, so the API key travels "
                             "unencrypted", "use https:// in --base-url")
            return Check("TLS", "info", "not used: plain http")
        failed = next((p for p in probes if p.tls is not None), None)
        if failed is not None and failed.tls is not None:
            return Check("TLS", "fail", f"certificate of {self.host} not accepted: "
                         f"{failed.tls.kind} ({failed.tls.message}); trusted CAs: {ca_source()}",
                         tls_advice(failed.tls, self.host))
        if not any(p.reply is not None for p in probes):
            return Check("TLS", "skip", "not checked: no connection")
        detail = f"certificate of {self.host} verified against {ca_source()}"
        return Check("TLS", "ok", detail)

    def _judge(self, probes: list[_Probe]) -> None:
        """Each probe's verdict and detail; a 404 is 'wrong URL' only if no endpoint answers."""
        for probe in probes:
            reply = probe.reply
            if reply is None:
                if probe.failure:
                    probe.verdict = "unreached"
                    probe.detail = probe.failure
                continue
            message = _DOCS_NOTE.sub("", server_message(reply.body)).strip()[:160]
            status = f"HTTP {reply.status}"
            if reply.status == 200:
                try:
                    answer = BatchAnswer((PROBE_GENE_ID,))
                    answer.add(parse_page(reply.body))
                    answer.check_complete()
                except InvalidPage as exc:
                    probe.verdict, probe.detail = "invalid", f"{status} but not a gene report page: {exc}"
                    continue
                if PROBE_GENE_ID in answer.answered:
                    probe.verdict = "works"
                    probe.detail = f"GeneID {PROBE_GENE_ID} answered ({status}, {len(reply.body)} bytes)"
                else:
                    probe.verdict = "no gene"
                    probe.detail = f"{status}, a valid page without GeneID {PROBE_GENE_ID}"
            elif reply.status == 410 or (reply.status == 404 and "retired" in message.lower()):
                probe.verdict, probe.detail = "retired", f"retired ({status}: {message})"
            elif reply.status == 404:
                probe.verdict, probe.detail = "not found", f"{status}: {message}"
            elif reply.status in (401, 403):
                probe.verdict, probe.detail = "auth", f"{status}: {message}"
            elif reply.status == 429:
                probe.verdict, probe.detail = "throttled", f"{status}: {message}"
            elif 300 <= reply.status < 400:
                target = urlsplit(reply.headers.get("Location", "")).hostname or "the same host"
                probe.verdict, probe.detail = "redirect", f"{status}: a redirect to {target}"
            else:
                probe.verdict, probe.detail = "error", f"{status}: {message}"

    def _endpoint_check(self, probe: _Probe, probes: list[_Probe]) -> Check:
        name = probe.endpoint
        others = [p.endpoint for p in probes if p.verdict == "works" and p is not probe]
        use_other = (f"use --endpoint {others[0]}, which works" if others
                     else "no other endpoint works either")
        if probe.verdict == "works":
            note = ("; deprecated by NCBI (may be retired; gene-id-report is its current twin)"
                    if name in DEPRECATED else "")
            return Check(name, "ok", probe.detail + note)
        if probe.verdict == "skipped":
            return Check(name, "skip", probe.detail or "not tried")
        if probe.verdict == "retired":
            switch = (f"fetch switches to {others[0]} by itself; pass --endpoint {others[0]} to "
                      "start there" if others else "no endpoint works: look for a newer bulkgene")
            return Check(name, "fail", probe.detail, switch)
        if probe.verdict == "not found":
            if others:
                return Check(name, "fail", f"gone? {probe.detail} while other endpoints answer",
                             f"NCBI may have retired it: {use_other} (fetch switches by itself)")
            return Check(name, "fail", probe.detail, BASE_URL_HELP + " (every endpoint says 404)")
        if probe.verdict == "auth":
            return Check(name, "fail", probe.detail, "see the API key row")
        if probe.verdict == "throttled":
            return Check(name, "fail", probe.detail, "other downloads from this machine or IP "
                         "use the rate budget: stop them, wait a minute, run doctor again")
        if probe.verdict == "redirect":
            return Check(name, "fail", probe.detail, "bulkgene never follows redirects (the key "
                         "could go to another host): " + BASE_URL_HELP)
        if probe.verdict in ("invalid", "no gene"):
            return Check(name, "fail", probe.detail, "something other than NCBI's gene API "
                         "answers (a proxy's login page, a captive portal, another server): "
                         "check the proxy settings and " + BASE_URL_HELP)
        if probe.verdict == "unreached":
            advice = ("see the TLS row" if probe.failure_kind == "tls"
                      else "see the connection row" if probe.failure_kind in _NO_CONNECTION
                      else f"try again; {use_other}")
            return Check(name, "fail", probe.detail, advice)
        reply_status = probe.reply.status if probe.reply else 0
        advice = (f"the server is in trouble: try later (fetch retries these by itself); {use_other}"
                  if reply_status >= 500 else
                  f"the server refuses the request bulkgene builds: {use_other}, and please "
                  "report it")
        return Check(name, "fail", probe.detail, advice)

    def _server_checks(self, probes: list[_Probe]) -> list[Check]:
        replies = [p.reply for p in probes if p.reply is not None]
        if not replies:
            return [Check("server version", "skip", "not checked: no answer"),
                    Check("clock", "skip", "not checked: no answer")]
        version = _first_header(replies, "X-Datasets-Version")
        checks = [Check("server version", "info", f"X-Datasets-Version {version}" if version
                        else "not announced (no X-Datasets-Version: not NCBI, or a proxy "
                        "strips it)")]
        for header in ("X-Datasets-Version-Message", "X-Datasets-User-Message"):
            if message := _first_header(replies, header):
                checks.append(Check("server message", "warn", f"{header}: {message[:200]}",
                                    "read it: NCBI announces changes this way"))
        dated = next((p for p in probes if p.reply is not None and "Date" in p.reply.headers),
                     None)
        if dated is None or dated.reply is None:
            checks.append(clock_check(None, time.time()))
        else:
            midpoint = (dated.sent_wall_s + dated.received_wall_s) / 2
            checks.append(clock_check(dated.reply.headers["Date"], midpoint))
        return checks

    def _fetch_choice(self, probes: list[_Probe]) -> tuple[str | None, str]:
        chosen = next(p for p in probes if p.endpoint == self.endpoint)
        working = [p.endpoint for p in probes if p.verdict == "works"]
        if chosen.verdict == "works":
            return self.endpoint, f"a fetch would work: it will use {self.endpoint}"
        if not working:
            return None, ("a fetch would not work: no endpoint answered with a valid page; "
                          "fix the failing rows above, from the top")
        other = working[0]
        if chosen.verdict in ("retired", "not found"):
            state = "is retired" if chosen.verdict == "retired" else "answers 404"
            return other, (f"a fetch would work: {self.endpoint} {state}, so fetch switches "
                           f"to {other} by itself (or pass --endpoint {other})")
        return other, (f"a fetch would work with --endpoint {other}; with {self.endpoint} "
                       f"it would not ({chosen.detail})")


async def _send(session: aiohttp.ClientSession, method: str, url: str,
                params: list[tuple[str, str]], json_body: dict[str, Any] | None,
                headers: Mapping[str, str], client_timeout: aiohttp.ClientTimeout
                ) -> Reply:
    """One request and its answer, read whole; raises _Unanswered with the kind of failure."""
    try:
        async with session.request(method, url, params=params, json=json_body,
                                   headers=dict(headers), allow_redirects=False,
                                   timeout=client_timeout) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > _MAX_BODY_BYTES:
                    raise _Unanswered(f"the answer is larger than {_MAX_BODY_BYTES >> 20} MiB, "
                                      "far more than one gene's page", "other")
                chunks.append(chunk)
            return Reply(response.status, response.headers, b"".join(chunks))
    except aiohttp.ClientSSLError as exc:
        failure = tls_failure(exc)
        raise _Unanswered(f"TLS failed: {failure.kind}", "tls", failure) from None
    except (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError) as exc:
        raise _Unanswered(describe_exception(exc), "proxy") from None
    except aiohttp.ClientConnectorDNSError as exc:
        raise _Unanswered(describe_exception(exc), "dns") from None
    except aiohttp.ClientConnectorError as exc:
        raise _Unanswered(describe_exception(exc), "connect") from None
    except aiohttp.ConnectionTimeoutError:
        raise _Unanswered("timed out while connecting", "connect timeout") from None
    except TimeoutError as exc:
        raise _Unanswered(describe_exception(exc), "timeout") from None
    except aiohttp.ClientError as exc:
        raise _Unanswered(describe_exception(exc), "other") from None


async def diagnose(network: NetworkSpec, endpoint: str | None = None,
                   base_url_origin: str = "default", gap_s: float = GAP_S) -> Diagnosis:
    """Check that a fetch with ``network`` would work; at most one request per endpoint.

    ``endpoint`` is the one fetch is asked to use (fetch's default if None);
    ``base_url_origin`` says where the base URL came from, for the report.
    """
    chosen = endpoint or str(default_of(ApiQuery, "endpoint"))
    return await _Doctor(network, chosen, base_url_origin, gap_s).run()
