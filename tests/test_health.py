"""A host that never answers stops the run like a setup problem, not an outage to wait out:
a name that doesn't resolve in about two seconds, a refused or timed-out connection in 15,
a black hole (connected, nothing back) at its first read timeout, saying so at once
(scripted transport and aiohttp session, virtual clock).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest
from scripted import (
    CONNECTION_KEY,
    IDS,
    ScriptedContent,
    ScriptedResponse,
    body,
    fetch,
    page,
    via_attempt,
)

from bulkgene.config import RetryPolicy, Timeouts
from bulkgene.errors import FatalHTTPError
from bulkgene.net.attempt import HttpRequest, Reply
from bulkgene.net.failures import AttemptFailed, NoAnswer, Unreachable

PATIENT = RetryPolicy(max_attempts=50, backoff_base_s=1.0)


class Timed:
    """A transport whose every attempt fails with ``failure`` after ``after_s`` (virtual),
    having gone out on the wire first if ``connected``; it records when each started."""

    def __init__(self, failure: AttemptFailed, after_s: float, connected: bool) -> None:
        self.failure, self.after_s, self.connected = failure, after_s, connected
        self.started: list[float] = []

    async def __call__(self, request: HttpRequest) -> Reply:
        self.started.append(asyncio.get_running_loop().time())
        if self.connected:
            request.on_sent()
        await asyncio.sleep(self.after_s)
        raise type(self.failure)(self.failure.reason)

    @property
    def starts_s(self) -> list[float]:
        return [round(t - self.started[0], 2) for t in self.started]


def test_a_name_that_does_not_resolve_stops_the_run_in_about_two_seconds() -> None:
    unresolved = aiohttp.ClientConnectorDNSError(
        CONNECTION_KEY, socket.gaierror(-2, "Name or service not known"))
    started: list[float] = []
    transport = via_attempt(*[unresolved] * 10)

    async def timed(request: HttpRequest) -> Reply:
        started.append(asyncio.get_running_loop().time())
        return await transport(request)

    with pytest.raises(FatalHTTPError, match=r"cannot reach ncbi\.test: the host name could "
                                             r"not be resolved.*HTTPS_PROXY.*doctor"):
        fetch(timed, retry=PATIENT)
    assert [round(t - started[0], 2) for t in started] == [0.0, 1.0, 2.01]


def test_a_connection_that_times_out_from_the_first_attempt_is_a_host_never_reached() -> None:
    transport = Timed(Unreachable("timed out while connecting", timed_out=True), 20.0, False)
    with pytest.raises(FatalHTTPError, match=r"cannot reach ncbi\.test: timed out while "
                                             r"connecting"):
        fetch(transport, retry=PATIENT)
    assert transport.starts_s == [0.0], "20 s of trying already passed the 15 s deadline"


def test_a_black_hole_is_named_at_once_and_stops_the_run_at_its_first_read_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    transport = Timed(NoAnswer("timed out"), 60.0, True)
    with caplog.at_level(logging.WARNING, "bulkgene"), pytest.raises(
            FatalHTTPError, match=r"connected to ncbi\.test:80, but no answer came back in "
                                  r"60 s: a proxy or firewall.*doctor"):
        fetch(transport, retry=PATIENT, timeouts=Timeouts(read_stall_s=60.0))
    assert transport.starts_s == [0.0]
    warned = [r for r in caplog.records if "no answer in 15 s" in r.getMessage()]
    assert len(warned) == 1 and "Waiting up to 60 s (--read-timeout)" in warned[0].getMessage()


def test_a_short_read_timeout_retries_a_black_hole_until_the_deadline() -> None:
    transport = Timed(NoAnswer("timed out"), 5.0, True)
    with pytest.raises(FatalHTTPError, match="no answer came back in 18 s"):
        fetch(transport, retry=PATIENT, timeouts=Timeouts(read_stall_s=5.0))
    # 5 s silent and 1 s of backoff, 5 s and 2 s: the attempt ending past 15 s is the last
    assert transport.starts_s == [0.0, 6.0, 13.0]


def test_a_host_that_answered_once_is_in_an_outage_not_misconfigured() -> None:
    refused = aiohttp.ClientConnectorError(CONNECTION_KEY, ConnectionRefusedError(111, "Refused"))
    unavailable = ScriptedResponse(503, {}, ScriptedContent([b""]))
    transport = via_attempt(unavailable, *[refused] * 20)
    failure = fetch(transport, retry=RetryPolicy(max_attempts=3, unreachable_s=0.5)).failure
    assert failure.reason == "gave up after 3 attempts; last: could not connect (Refused)"


def test_an_answer_before_the_watch_fires_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "bulkgene"):
        fetch(via_attempt(body(page(IDS))), retry=PATIENT)
    assert not caplog.records
