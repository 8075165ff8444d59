"""`bulkgene doctor`'s conversation: resolve, connect, ask each endpoint once, and judge."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from bulkgene.config import ApiQuery, NetworkSpec, default_of
from bulkgene.ncbi.requests import FALLBACK_ENDPOINTS, page_request
from bulkgene.net.attempt import HttpRequest, attempt, open_session
from bulkgene.net.client import PROBE_GENE_ID
from bulkgene.net.doctor_checks import (
    BASE_URL_HELP,
    NO_ANSWER,
    NO_CONNECTION,
    ca_source,
    clock_check,
    endpoint_check,
    first_header,
    is_loopback,
    judge,
    key_check,
    proxy_route,
    tls_advice,
)
from bulkgene.net.doctor_report import Check, Diagnosis, Probe, ProxyRoute, TlsFailure
from bulkgene.net.failures import (
    AttemptFailed,
    NameNotResolved,
    NoAnswer,
    TlsUnverified,
    Unreachable,
)
from bulkgene.version import __version__

GAP_S = 0.25  # between one answer and the next request: 3 requests stay under 4 per second
_MAX_BODY_BYTES = 8 << 20  # one gene's page is ~50 KB


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
        probes = [Probe(e) for e in self._endpoint_order()]
        if resolved:
            await self._send_probes(probes)
        else:
            for probe in probes:
                probe.detail = "not tried: the host name does not resolve"
        answered = [p.reply for p in probes if p.reply is not None]
        self.checks.append(self._connection_check(probes, route))
        self.checks.append(self._tls_check(probes))
        judge(probes)
        self.checks.extend(endpoint_check(p, probes) for p in probes)
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

    async def _send_probes(self, probes: list[Probe]) -> None:
        loop = asyncio.get_running_loop()
        timeouts = self.network.timeouts
        last_answer_at: float | None = None
        async with open_session(1, timeouts.keepalive_s,
                                f"bulkgene/{__version__} doctor (+aiohttp)") as session:
            for probe in probes:
                if last_answer_at is not None:
                    await asyncio.sleep(max(0.0, last_answer_at + self.gap_s - loop.time()))
                await self._probe(session, probe)
                last_answer_at = loop.time()
                if probe.failure_kind in (*NO_CONNECTION, NO_ANSWER):
                    why = ("the first request got no answer" if probe.failure_kind == NO_ANSWER
                           else "the server could not be reached")
                    for later in probes[probes.index(probe) + 1:]:
                        later.detail = f"not tried: {why}"
                    return

    async def _probe(self, session: aiohttp.ClientSession, probe: Probe) -> None:
        request = page_request(ApiQuery(), probe.endpoint, (PROBE_GENE_ID,), None)
        headers = {"Accept": request.accept}
        if self.network.api_key is not None:
            headers["api-key"] = self.network.api_key.reveal()
        url = self.network.base_url.rstrip("/") + request.path
        self.requests += 1
        probe.sent_wall_s = time.time()
        try:
            probe.reply = await attempt(session, HttpRequest(
                request, url, headers, self.network.timeouts, _MAX_BODY_BYTES))
        except AttemptFailed as failure:
            probe.failure, probe.failure_kind = failure.reason, _failure_kind(failure)
            if isinstance(failure, TlsUnverified):
                probe.tls = TlsFailure(failure.kind, failure.detail)
        probe.received_wall_s = time.time()

    def _connection_check(self, probes: list[Probe], route: ProxyRoute) -> Check:
        via = f"through the proxy {route.proxy}" if route.proxy else "directly"
        if any(p.reply is not None for p in probes):
            return Check("connection", "ok", f"reached {self.host}:{self.port} {via}")
        failed = next((p for p in probes if p.failure), None)
        if failed is None:
            return Check("connection", "skip", "not tried: the host name does not resolve")
        if failed.failure_kind == "tls":
            return Check("connection", "ok", f"connected to {self.host}:{self.port} {via}; "
                         "TLS then failed (see TLS)")
        if failed.failure_kind == NO_ANSWER:
            return Check(
                "connection", "fail", f"connected to {self.host}:{self.port} {via}, no answer "
                f"in {self.network.timeouts.read_stall_s:g} s",
                "something accepts the connection and passes nothing back: a proxy or firewall "
                "in the way (check HTTPS_PROXY / NO_PROXY; compute nodes often need the "
                "site's proxy), or a server that hangs; raise --timeout only if the server is "
                "known to be that slow")
        advice = {
            "proxy": f"the proxy {route.proxy} does not let us through: check the host and port "
                     "in HTTPS_PROXY/HTTP_PROXY (credentials go in as http://user:pass@host:port), "
                     "or unset it if this machine reaches the internet directly",
            "dns": "check the host name in --base-url, or set HTTPS_PROXY if only a proxy can "
                   "resolve outside names",
            "connect timeout": "nothing answered in time: outgoing traffic may be filtered here "
                               "(compute nodes often reach the internet only through a proxy: "
                               "set HTTPS_PROXY), or raise --timeout",
        }.get(failed.failure_kind,
              f"nothing accepts connections at {self.host}:{self.port}: {BASE_URL_HELP}; "
              "compute nodes often reach the internet only through a proxy (HTTPS_PROXY)")
        return Check("connection", "fail", f"cannot reach {self.host}:{self.port} {via}: "
                     f"{failed.failure}", advice)

    def _tls_check(self, probes: list[Probe]) -> Check:
        if not self.https:
            if self.network.api_key is not None and not is_loopback(self.host):
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


    def _server_checks(self, probes: list[Probe]) -> list[Check]:
        replies = [p.reply for p in probes if p.reply is not None]
        if not replies:
            return [Check("server version", "skip", "not checked: no answer"),
                    Check("clock", "skip", "not checked: no answer")]
        version = first_header(replies, "X-Datasets-Version")
        checks = [Check("server version", "info", f"X-Datasets-Version {version}" if version
                        else "not announced (no X-Datasets-Version: not NCBI, or a proxy "
                        "strips it)")]
        for header in ("X-Datasets-Version-Message", "X-Datasets-User-Message"):
            if message := first_header(replies, header):
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

    def _fetch_choice(self, probes: list[Probe]) -> tuple[str | None, str]:
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


def _failure_kind(failure: AttemptFailed) -> str:
    """The doctor's word for a failure: which row explains it and what advice fits."""
    if isinstance(failure, TlsUnverified):
        return "tls"
    if isinstance(failure, NameNotResolved):
        return "dns"
    if isinstance(failure, Unreachable):
        return "proxy" if failure.via_proxy else (
            "connect timeout" if failure.timed_out else "connect")
    if isinstance(failure, NoAnswer):
        return NO_ANSWER
    return "other"


async def diagnose(network: NetworkSpec, endpoint: str | None = None,
                   base_url_origin: str = "default", gap_s: float = GAP_S) -> Diagnosis:
    """Check that a fetch with ``network`` would work; at most one request per endpoint.

    One request per endpoint (three in all) for a GeneID NCBI always has, each at least
    ``gap_s`` after the previous answer, so a doctor run never exceeds NCBI's anonymous
    5 requests/s. Every finding is a ``Check`` row; a failing row carries what to do. A
    fetch would work when at least one endpoint answered with a valid page holding that gene.
    ``endpoint`` is the one fetch is asked to use (fetch's default if None);
    ``base_url_origin`` says where the base URL came from, for the report.
    """
    chosen = endpoint or str(default_of(ApiQuery, "endpoint"))
    return await _Doctor(network, chosen, base_url_origin, gap_s).run()
