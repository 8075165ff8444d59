"""`bulkgene doctor` against the emulator: healthy, wrong URL, bad key, retired, TLS, proxy."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import re
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp import web
from helpers import cli_env, invoke_cli, run_cli, served

from bulkgene.net.attempt import Reply
from bulkgene.net.doctor_checks import clock_check, key_check, proxy_route
from bulkgene.testing import EmulatorConfig, EmulatorThread

SENTINEL_KEY = "SENTINEL-KEY-5d1e2b7a"
_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")
EmulatorFactory = Callable[..., EmulatorThread]


def doctor_env(base_url: str, **extra: str) -> dict[str, str]:
    """The CLI's environment with no proxy, CA or key settings of this machine leaking in."""
    env = cli_env(base_url)
    for name in (*_PROXY_VARIABLES, *(v.lower() for v in _PROXY_VARIABLES), "SSL_CERT_FILE",
                 "SSL_CERT_DIR"):
        env.pop(name, None)
    env.update(extra)
    return env


def doctor(base_url: str, *args: str, **env: str) -> tuple[int, str]:
    # aiohttp builds its verifying SSL context once, at import, from the SSL_CERT_FILE of that
    # moment: a run given its own SSL_CERT_FILE needs a process of its own
    run = run_cli if "SSL_CERT_FILE" in env else invoke_cli
    result = run("doctor", *args, env=doctor_env(base_url, **env), timeout=60)
    assert not result.stderr, result.stderr.decode()
    output = result.stdout.decode()
    assert SENTINEL_KEY not in output
    return result.returncode, output


def row(output: str, name: str) -> str:
    """The table row ``name`` with its continuation and advice lines, as one line of text."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        end += 1
    return " ".join(line.strip() for line in lines[start:end])


def verdict(output: str) -> str:
    """The closing sentence under the table, unwrapped."""
    return " ".join(output.rstrip().split("\n\n")[-1].split())


def assert_paced(times: list[float]) -> None:
    """At most 4 requests, each at least 0.25 s after the one before (a lower bound only)."""
    assert 1 <= len(times) <= 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.25 for gap in gaps), gaps


def test_a_healthy_server_passes_and_names_the_endpoint_fetch_will_use(
        make_emulator: EmulatorFactory) -> None:
    emulator = make_emulator(valid_keys=frozenset({SENTINEL_KEY}))
    code, output = doctor(emulator.base_url, NCBI_API_KEY=SENTINEL_KEY)
    assert code == 0, output
    assert verdict(output).startswith("a fetch would work: it will use gene-id;")
    for name in ("gene-id", "gene-id-report", "dataset-report"):
        assert row(output, name).split()[1] == "ok"
    assert "deprecated" in row(output, "gene-id ")
    assert "deprecated" not in row(output, "gene-id-report")
    assert "not rejected" in row(output, "API key")
    assert row(output, "clock").split()[1] == "ok"
    arrivals = served(emulator.state.arrivals())
    assert [(a.method, a.path, a.status) for a in arrivals] == [
        ("GET", "/datasets/v2/gene/id/7157", 200),
        ("GET", "/datasets/v2/gene/id/7157/dataset_report", 200),
        ("POST", "/datasets/v2/gene/dataset_report", 200)]
    assert all(a.has_key for a in arrivals)
    assert_paced([a.t for a in arrivals])


def test_json_output_for_scripts(emulator: EmulatorThread) -> None:
    code, output = doctor(emulator.base_url, "--json", "--endpoint", "dataset-report")
    assert code == 0
    report = orjson.loads(output)
    assert report["ok"] is True
    assert report["fetch_endpoint"] == "dataset-report"
    assert report["requests"] == 3
    assert set(report["working"]) == {"gene-id", "gene-id-report", "dataset-report"}
    assert {c["check"] for c in report["checks"]} >= {"base URL", "proxy", "TLS", "API key"}
    # the endpoint fetch is asked for goes first
    assert served(emulator.state.arrivals())[0].path == "/datasets/v2/gene/dataset_report"


def test_a_wrong_base_url_fails_with_check_base_url(emulator: EmulatorThread) -> None:
    code, output = doctor(emulator.root_url + "/wrong")
    assert code == 1
    for name in ("gene-id", "gene-id-report", "dataset-report"):
        assert "HTTP 404" in row(output, name) and "check --base-url" in row(output, name)
    assert verdict(output).startswith("a fetch would not work")
    assert "(from BULKGENE_BASE_URL)" in row(output, "base URL")


def test_nothing_listening_fails_after_one_request() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, output = doctor(f"http://127.0.0.1:{port}/datasets/v2", "--json")
    assert code == 1
    report = orjson.loads(output)
    assert report["ok"] is False and report["fetch_endpoint"] is None
    assert report["requests"] == 1, "an unreachable host is not asked three times"
    connection = next(c for c in report["checks"] if c["check"] == "connection")
    assert connection["status"] == "fail" and "cannot reach" in connection["detail"]
    assert connection["advice"]


def test_a_rejected_key_fails_without_showing_it(make_emulator: EmulatorFactory,
                                                 tmp_path: Path) -> None:
    emulator = make_emulator(valid_keys=frozenset({"another-key"}))
    key_file = tmp_path / "key"
    key_file.write_text(SENTINEL_KEY + "\n")
    code, output = doctor(emulator.base_url, "--api-key-file", str(key_file))
    assert code == 1
    key = row(output, "API key")
    assert "FAIL" in key and "rejected" in key and "HTTP 401" in key and "NCBI_API_KEY" in key
    arrivals = served(emulator.state.arrivals())
    assert arrivals and all(a.status == 401 for a in arrivals)
    assert_paced([a.t for a in arrivals])
    assert SENTINEL_KEY not in repr(arrivals)


@contextmanager
def retired_gene_id() -> Iterator[tuple[EmulatorThread, list[tuple[float, str]]]]:
    """The emulator with GET /gene/id/{ids} retired the way NCBI retired v1, and NCBI's headers."""
    emulator = EmulatorThread(EmulatorConfig(rate_limit=False))
    seen: list[tuple[float, str]] = []

    @web.middleware
    async def retire(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        seen.append((asyncio.get_running_loop().time(), request.path))
        response: web.StreamResponse
        if re.fullmatch(r"/datasets/v2/gene/id/[^/]+", request.path):
            response = web.json_response({"error": "This version of the API has been retired. "
                                          "Please migrate to the latest version."}, status=404)
        else:
            response = await handler(request)
        response.headers["X-RateLimit-Limit"] = "10" if "api-key" in request.headers else "5"
        response.headers["X-Datasets-Version"] = "18.23.0"
        return response

    emulator.app.middlewares.append(retire)
    with emulator:
        yield emulator, seen


def test_a_retired_endpoint_is_named_and_fetch_uses_a_working_one() -> None:
    with retired_gene_id() as (emulator, seen):
        code, output = doctor(emulator.base_url, NCBI_API_KEY=SENTINEL_KEY)
    assert code == 0, output
    gene_id = row(output, "gene-id ")
    assert "FAIL" in gene_id and "retired" in gene_id
    assert "fetch switches to gene-id-report by itself" in gene_id
    assert "switches to gene-id-report" in verdict(output)
    assert "accepted: X-RateLimit-Limit 10" in row(output, "API key")
    assert "18.23.0" in row(output, "server version")
    assert_paced([t for t, _ in seen])


def test_a_key_counted_as_anonymous_is_a_warning() -> None:
    check = key_check(True, [Reply(200, {"X-RateLimit-Limit": "5"}, b"{}")])
    assert check.status == "warn" and "anonymous" in check.detail
    assert key_check(False, [Reply(200, {"X-RateLimit-Limit": "5"}, b"{}")]).status == "info"
    assert key_check(True, [Reply(403, {}, b"")]).status == "fail"
    blocked = key_check(False, [Reply(403, {}, b"")])
    assert blocked.status == "fail" and "blocks IP addresses" in blocked.advice


def test_clock_skew_is_measured_against_the_date_header() -> None:
    date = "Sat, 28 Nov 2026 06:00:00 GMT"
    server_s = datetime.datetime(2026, 11, 28, 6, tzinfo=datetime.UTC).timestamp()
    assert clock_check(date, server_s + 0.7).status == "ok"
    ahead = clock_check(date, server_s + 120.5)
    assert ahead.status == "warn" and "120 s ahead" in ahead.detail
    assert clock_check(date, server_s - 300).status == "warn"
    assert clock_check(None, server_s).status == "skip"


def test_proxy_route_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*_PROXY_VARIABLES, *(v.lower() for v in _PROXY_VARIABLES)):
        monkeypatch.delenv(name, raising=False)
    url = "https://genes.example.org/datasets/v2"
    assert proxy_route(url).proxy is None
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.example.org:3128")
    route = proxy_route(url)
    assert route.proxy == "http://proxy.example.org:3128" and "secret" not in route.detail
    monkeypatch.setenv("NO_PROXY", "genes.example.org")
    assert proxy_route(url).proxy is None and "NO_PROXY" in proxy_route(url).detail
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.example.org:3128")
    ignored = proxy_route(url)
    assert ignored.proxy is None and ignored.status == "warn"


@contextmanager
def tls_emulator(tmp_path: Path, *identities: str, expired: bool = False
                 ) -> Iterator[tuple[EmulatorThread, Path]]:
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    now = datetime.datetime.now(datetime.UTC)
    dates: dict[str, Any] = ({"not_before": now - datetime.timedelta(days=30),
                              "not_after": now - datetime.timedelta(days=1)} if expired else {})
    authority.issue_cert(*identities, **dates).configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    with EmulatorThread(EmulatorConfig(rate_limit=False), ssl_context=server_context) as server:
        yield server, ca_file


def test_tls_with_an_unknown_ca_fails_and_ssl_cert_file_fixes_it(tmp_path: Path) -> None:
    with tls_emulator(tmp_path, "127.0.0.1") as (server, ca_file):
        code, output = doctor(server.base_url, NCBI_API_KEY=SENTINEL_KEY)
        assert code == 1
        tls = row(output, "TLS")
        assert "FAIL" in tls and "unknown CA" in tls and "SSL_CERT_FILE" in tls
        assert "not tried" in row(output, "gene-id-report")
        assert not served(server.state.arrivals()), "nothing went over an unverified channel"
        code, output = doctor(server.base_url, SSL_CERT_FILE=str(ca_file))
        assert code == 0, output
        assert "verified against SSL_CERT_FILE=" in row(output, "TLS")


@pytest.mark.parametrize(("identity", "expired", "kind"), [
    ("genes.example.org", False, "hostname mismatch"),
    ("127.0.0.1", True, "expired"),
])
def test_tls_failures_say_why(tmp_path: Path, identity: str, expired: bool, kind: str) -> None:
    with tls_emulator(tmp_path, identity, expired=expired) as (server, ca_file):
        code, output = doctor(server.base_url, SSL_CERT_FILE=str(ca_file))
        assert not served(server.state.arrivals())
    assert code == 1
    tls = row(output, "TLS")
    assert "FAIL" in tls and kind in tls


class ForwardProxy:
    """A plain-http forward proxy on 127.0.0.1 that records the request line of what it relays."""

    def __init__(self) -> None:
        self.request_lines: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *header_lines = [line for line in head.split("\r\n") if line]
            self.request_lines.append(request_line)
            method, target, version = request_line.split(" ")
            url = urlsplit(target)
            headers = [line for line in header_lines if line.split(":", 1)[0].lower()
                       not in ("connection", "proxy-connection", "keep-alive")]
            length = next((int(line.split(":", 1)[1]) for line in headers
                           if line.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length)
            upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname,
                                                                             url.port)
            path = url.path + (f"?{url.query}" if url.query else "")
            upstream_writer.write(f"{method} {path} {version}\r\n".encode()
                                  + "".join(f"{h}\r\n" for h in [*headers, "Connection: close"])
                                  .encode("latin-1") + b"\r\n" + body)
            await upstream_writer.drain()
            while chunk := await upstream_reader.read(1 << 16):
                writer.write(chunk)
                await writer.drain()
            upstream_writer.close()
        finally:
            writer.close()

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", 0), self._loop).result(timeout=30)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@pytest.mark.slow
def test_a_proxy_is_named_and_used(emulator: EmulatorThread) -> None:
    with ForwardProxy() as proxy:
        proxy_url = f"http://127.0.0.1:{proxy.port}"
        code, output = doctor(emulator.base_url, HTTP_PROXY=proxy_url)
        assert code == 0, output
        assert proxy_url in row(output, "proxy") and "HTTP_PROXY" in row(output, "proxy")
        assert f"through the proxy {proxy_url}" in row(output, "connection")
        assert [line.split(" ")[1] for line in proxy.request_lines] == [
            f"{emulator.base_url}/gene/id/7157?page_size=1000",
            f"{emulator.base_url}/gene/id/7157/dataset_report?page_size=1000",
            f"{emulator.base_url}/gene/dataset_report"]
        assert len(served(emulator.state.arrivals())) == 3
        code, output = doctor(emulator.base_url, HTTP_PROXY=proxy_url, NO_PROXY="127.0.0.1")
        assert code == 0
        assert "NO_PROXY exempts" in row(output, "proxy")
        assert len(proxy.request_lines) == 3, "the exempt host was reached directly"


def test_help_shows_examples() -> None:
    result = invoke_cli("doctor", "--help")
    assert result.returncode == 0
    assert b"Examples:" in result.stdout and b"bulkgene doctor --json" in result.stdout
    assert b"doctor" in invoke_cli("--help").stdout


@pytest.mark.parametrize("status", [404, 401, 429, 500])
@pytest.mark.parametrize("body", [b"", b"   \n", b'{"message": ""}'])
def test_an_answer_without_a_message_is_not_shown_as_an_empty_detail(status: int,
                                                                      body: bytes) -> None:
    """`HTTP 404:` and nothing after it."""
    from bulkgene.net.doctor_checks import judge
    from bulkgene.net.doctor_report import Probe

    probe = Probe("gene-id", Reply(status, {}, body))
    judge([probe])
    assert probe.detail.startswith(f"HTTP {status}") and not probe.detail.rstrip().endswith(":")
    assert "no message" in probe.detail
