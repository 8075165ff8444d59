"""`bulkgene doctor`'s judgements: proxy route, TLS advice, clock, key, each endpoint's row."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit
from urllib.request import proxy_bypass

from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from bulkgene.config import DEFAULT_BASE_URL
from bulkgene.ncbi.pages import BatchAnswer, InvalidPage, parse_page
from bulkgene.net.attempt import Reply
from bulkgene.net.client import PROBE_GENE_ID, server_message
from bulkgene.net.doctor_report import Check, Probe, ProxyRoute, TlsFailure

CLOCK_SKEW_WARN_S = 30.0
DEPRECATED = frozenset({"gene-id"})  # `deprecated: true` in NCBI's OpenAPI spec
KEYED_LIMIT = 10  # X-RateLimit-Limit NCBI announces for a keyed client (5 without)
KEY_HELP = ("check NCBI_API_KEY, --api-key-file or --api-key (keys are made at "
            "https://www.ncbi.nlm.nih.gov/account/settings/), or run without a key at 5 requests/s")
BLOCKED_HELP = ("NCBI blocks IP addresses that send too many requests: stop other downloads "
                "from this machine, wait, and write to info@ncbi.nlm.nih.gov if it persists")
BASE_URL_HELP = f"check --base-url (or BULKGENE_BASE_URL); NCBI's is {DEFAULT_BASE_URL}"
NO_CONNECTION = frozenset({"dns", "proxy", "connect", "connect timeout", "tls"})  # failure kinds
NO_ANSWER = "no answer"  # the failure kind of a request that went out and got nothing back

DOCS_NOTE = re.compile(r"\s*\(For more help, see [^)]*\)")


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


def first_header(replies: list[Reply], name: str) -> str | None:
    return next((reply.headers[name] for reply in replies if name in reply.headers), None)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def judge(probes: list[Probe]) -> None:
    """Each probe's verdict and detail; a 404 is 'wrong URL' only if no endpoint answers."""
    for probe in probes:
        reply = probe.reply
        if reply is None:
            if probe.failure:
                probe.verdict = "unreached"
                probe.detail = probe.failure
            continue
        message = DOCS_NOTE.sub("", server_message(reply.body)).strip()[:160]
        status = f"HTTP {reply.status}"
        said = f"{status}: {message}" if message else f"{status} (no message in the answer)"
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
            probe.verdict, probe.detail = "retired", f"retired ({said})"
        elif reply.status == 404:
            probe.verdict, probe.detail = "not found", said
        elif reply.status in (401, 403):
            probe.verdict, probe.detail = "auth", said
        elif reply.status == 429:
            probe.verdict, probe.detail = "throttled", said
        elif 300 <= reply.status < 400:
            target = urlsplit(reply.headers.get("Location", "")).hostname or "the same host"
            probe.verdict, probe.detail = "redirect", f"{status}: a redirect to {target}"
        else:
            probe.verdict, probe.detail = "error", said


def endpoint_check(probe: Probe, probes: list[Probe]) -> Check:
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
                  else "see the connection row" if probe.failure_kind in (*NO_CONNECTION,
                                                                          NO_ANSWER)
                  else f"try again; {use_other}")
        return Check(name, "fail", probe.detail, advice)
    reply_status = probe.reply.status if probe.reply else 0
    advice = (f"the server is in trouble: try later (fetch retries these by itself); {use_other}"
              if reply_status >= 500 else
              f"the server refuses the request bulkgene builds: {use_other}, and please "
              "report it")
    return Check(name, "fail", probe.detail, advice)

