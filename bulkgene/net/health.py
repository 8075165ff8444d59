"""Whether a failing run should go on: an unreachable host, or an outage, stops it.

The retry loop (net/exchange.py) reports every attempt here and asks, after each failure,
whether to try again. Two rules, each about the whole run rather than one request:

* a setup problem: before any request has worked, a host that can't be reached (DNS, a
  refused connection, the proxy) is no outage to wait out; the run stops
  ``unreachable_s`` after the first such failure, naming the host and the proxy;
* an outage: when nothing has succeeded for ``outage_s``, the run stops (resumably).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from urllib.parse import urlsplit

from bulkgene.config import NetworkSpec
from bulkgene.errors import FatalHTTPError, OutageError
from bulkgene.net.failures import AttemptFailed, Unreachable


def _env_proxy() -> str | None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def _setup_failure(failure: AttemptFailed | None) -> bool:
    return isinstance(failure, Unreachable) and not failure.timed_out


class Health:
    """The run's network health: when things last worked, and whether they ever did."""

    def __init__(self, network: NetworkSpec, clock: Callable[[], float] | None = None) -> None:
        self._network = network
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._last_success_at: float | None = None
        self._ever_succeeded = False
        self._first_failure_at: float | None = None

    def succeeded(self) -> None:
        """An answer the run can use (or a refusal: the server is there and answering)."""
        self._last_success_at = self._clock()
        self._ever_succeeded = True

    def failed(self, failure: AttemptFailed | None, reason: str) -> None:
        """An attempt failed (``failure`` if there was no HTTP answer at all): raises when
        the run should stop."""
        if _setup_failure(failure) and not self._ever_succeeded:
            assert failure is not None
            now = self._clock()
            if self._first_failure_at is None:
                self._first_failure_at = now
            if now - self._first_failure_at >= self._network.retry.unreachable_s:
                self._raise_unreachable(failure)
        self._check_outage(reason)

    def gave_up(self, failure: AttemptFailed | None) -> None:
        """A request failed its last attempt: before anything worked, a host that can't be
        reached is the run's setup problem, not one batch's."""
        if _setup_failure(failure) and not self._ever_succeeded:
            assert failure is not None
            self._raise_unreachable(failure)

    def wait_s(self, delay_s: float, failure: AttemptFailed | None) -> float:
        """The backoff before the next attempt, cut so that an unreachable host is tried
        once more right at its deadline, and the run stops then, not a backoff later."""
        if not _setup_failure(failure) or self._ever_succeeded or self._first_failure_at is None:
            return delay_s
        deadline = self._first_failure_at + self._network.retry.unreachable_s + 0.01
        return min(delay_s, max(0.0, deadline - self._clock()))

    def _raise_unreachable(self, failure: AttemptFailed) -> None:
        host = urlsplit(self._network.base_url).hostname
        proxy = next((f" through the proxy {urlsplit(value).hostname}" for value in
                      (_env_proxy(),) if value), "")
        raise FatalHTTPError(
            f"cannot reach {host}{proxy}: {failure.reason}. Check the host name in --base-url, "
            "the network (compute nodes often reach the internet only through a proxy: set "
            "HTTPS_PROXY), then run `bulkgene doctor` to check step by step; `bulkgene demo` "
            "works offline.")

    def _check_outage(self, reason: str) -> None:
        now = self._clock()
        if self._last_success_at is None:
            self._last_success_at = now
        elif now - self._last_success_at > self._network.retry.outage_s:
            raise OutageError(
                f"no request has succeeded for {self._network.retry.outage_s:.0f} s (last "
                f"error: {reason}); the API looks down. Everything fetched so far is saved: "
                "re-run the same command later to resume.")
