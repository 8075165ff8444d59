"""Blocking file I/O for a lease, one call at a time, in a daemon thread the process never waits for.

A budget directory on a hung NFS mount can block a call for minutes. asyncio's default
executor is joined when the loop and the interpreter shut down, so one stuck call there kept
a run alive long after SIGTERM; a daemon thread is not waited for, and the lease never holds a
lock while a call runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class IOThread:
    """``await io.run(function, *args)``: the call runs in this object's daemon thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put((loop, future, function, args))
        return future

    def stop(self) -> None:
        """The thread ends after the calls already queued (at once if none is stuck)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, function, args = job
            try:
                result, error = function(*args), None
            except Exception as exc:  # noqa: BLE001  # handed to the awaiting coroutine, as an executor does
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed while we were stuck
                loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
