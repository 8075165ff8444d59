"""Whether a failing run should go on: a host that never answers stops it, and so does an outage.

The retry loop (net/exchange.py) reports every attempt here and asks, after each failure,
whether to try again. The rules are about the whole run rather than one request:

* a setup problem: while nothing has ever answered (no HTTP answer of any kind), a host
  that can't be had is no outage to wait out. The run stops, naming the host and the
  proxy, once such failures have lasted, counted from the start of the first one:
  ``unresolved_s`` (2 s) for a name that does not resolve; ``unreachable_s`` (15 s) for a
  refused connection, no route, a proxy that refuses, a connection that times out; and
  for a black hole (connected and sent, and not one byte back: a proxy or firewall that
  swallows requests) the first such attempt is already a read timeout long, so it stops
  then. Connected but unanswered for ``unreachable_s``, it says so at once, without
  waiting for the timeout;
* an outage: when nothing has succeeded for ``outage_s``, the run stops (resumably).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from urllib.parse import urlsplit

from bulkgene.config import NetworkSpec
from bulkgene.errors import FatalHTTPError, OutageError
from bulkgene.net.failures import AttemptFailed, NameNotResolved, NoAnswer, Unreachable

log = logging.getLogger("bulkgene")


def _env_proxy() -> str | None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def _setup_failure(failure: AttemptFailed | None) -> bool:
    return isinstance(failure, Unreachable | NoAnswer)


class Health:
    """The run's network health: when things last worked, and whether anything ever answered."""

    def __init__(self, network: NetworkSpec, clock: Callable[[], float] | None = None) -> None:
        self._network = network
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        url = urlsplit(network.base_url)
        self._host = url.hostname or ""
        self._where = f"{self._host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        self._last_success_at: float | None = None
        self._ever_answered = False
        self._first_failure_at: float | None = None  # the start of the first setup failure
        self._silence_watch: asyncio.TimerHandle | None = None
        self._silence_said = False
        self._out = 0  # requests on the wire, not back yet (answered, failed or cancelled)

    def went_out(self) -> None:
        """A request is on the wire: before any answer, watch for a server that keeps quiet."""
        self._out += 1
        if self._ever_answered or self._silence_watch is not None:
            return
        self._silence_watch = asyncio.get_running_loop().call_later(
            self._network.retry.unreachable_s, self._still_silent)

    def came_back(self) -> None:
        """A request that went out is over, however it ended (a cancelled run's too)."""
        self._out -= 1

    def answered(self) -> None:
        """An HTTP answer, whatever its status: the host is there."""
        self._ever_answered = True
        if self._silence_watch is not None:
            self._silence_watch.cancel()

    def succeeded(self) -> None:
        """An answer the run can use (or a refusal: the server is there and answering)."""
        self.answered()
        self._last_success_at = self._clock()

    def failed(self, failure: AttemptFailed | None, reason: str) -> None:
        """An attempt failed (``failure`` if there was no HTTP answer at all): raises when
        the run should stop."""
        if _setup_failure(failure) and not self._ever_answered:
            assert failure is not None
            started = failure.started_at if failure.started_at is not None else self._clock()
            if self._first_failure_at is None or started < self._first_failure_at:
                self._first_failure_at = started
            if self._clock() - self._first_failure_at >= self._limit_s(failure):
                raise self._setup_error(failure)
            if isinstance(failure, NoAnswer):
                self._warn_silent(self._clock() - started)
        self._check_outage(reason)

    def gave_up(self, failure: AttemptFailed | None) -> None:
        """A request failed its last attempt: before anything answered, a host that can't
        be had is the run's setup problem, not one batch's."""
        if _setup_failure(failure) and not self._ever_answered:
            assert failure is not None
            raise self._setup_error(failure)

    def wait_s(self, delay_s: float, failure: AttemptFailed | None) -> float:
        """The backoff before the next attempt, cut so that a host that can't be had is
        tried once more right at its deadline, and the run stops then, not a backoff later."""
        if (not _setup_failure(failure) or self._ever_answered
                or self._first_failure_at is None):
            return delay_s
        assert failure is not None
        deadline = self._first_failure_at + self._limit_s(failure) + 0.01
        return min(delay_s, max(0.0, deadline - self._clock()))

    def _limit_s(self, failure: AttemptFailed) -> float:
        retry = self._network.retry
        return retry.unresolved_s if isinstance(failure, NameNotResolved) else retry.unreachable_s

    def _proxy(self) -> str:
        return next((f" through the proxy {urlsplit(value).hostname}" for value in
                     (_env_proxy(),) if value), "")

    def _still_silent(self) -> None:
        # none on the wire: the run ended (a library download cancelled) and nothing waits
        if not self._ever_answered and self._out > 0:
            self._warn_silent(self._network.retry.unreachable_s)

    def _warn_silent(self, silent_s: float) -> None:
        if self._silence_said:
            return
        self._silence_said = True
        if self._silence_watch is not None:
            self._silence_watch.cancel()
        log.warning("connected to %s%s, and no answer in %.3g s: a proxy or firewall that "
                    "accepts connections and passes nothing? Waiting up to %.3g s "
                    "(--read-timeout) for a first answer, then stopping", self._where,
                    self._proxy(), silent_s, self._network.timeouts.read_stall_s)

    def _setup_error(self, failure: AttemptFailed) -> FatalHTTPError:
        if isinstance(failure, NoAnswer):
            waited = self._clock() - (self._first_failure_at or self._clock())
            return FatalHTTPError(
                f"connected to {self._where}{self._proxy()}, but no answer came back in "
                f"{waited:.3g} s: a proxy or firewall that accepts connections and passes "
                "nothing, or a server that hangs. Check HTTPS_PROXY / NO_PROXY and the host "
                "in --base-url, then run `bulkgene doctor` to check step by step; nothing "
                "was fetched, run the same command again once it answers.")
        return FatalHTTPError(
            f"cannot reach {self._host}{self._proxy()}: {failure.reason}. Check the host name "
            "in --base-url, the network (compute nodes often reach the internet only through "
            "a proxy: set HTTPS_PROXY), then run `bulkgene doctor` to check step by step; "
            "`bulkgene demo` works offline.")

    def _check_outage(self, reason: str) -> None:
        now = self._clock()
        if self._last_success_at is None:
            self._last_success_at = now
        elif now - self._last_success_at > self._network.retry.outage_s:
            raise OutageError(
                f"no request has succeeded for {self._network.retry.outage_s:.0f} s (last "
                f"error: {reason}); the API looks down. Everything fetched so far is saved: "
                "re-run the same command later to resume.")
