"""Stopping a download from outside its event loop, as SIGINT stops the CLI's (no aiohttp here)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable


class Interrupter:
    """Stops a download from outside its event loop as SIGINT stops the CLI's: a signal
    handler in the main thread calls ``interrupt`` while the download runs in any loop of
    any thread. The first call lets in-flight batches finish and be committed; the next
    drops them (no process exit: the caller may be a notebook's kernel). Calls before the
    download starts are kept and given to it when it does."""

    def __init__(self) -> None:
        # re-entrant: a signal handler may run in the very thread that holds it
        self._lock = threading.RLock()
        self._target: tuple[asyncio.AbstractEventLoop, Callable[[int], None]] | None = None
        self._pending: list[int] = []
        self.received = 0

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Ask the download to stop (safe from a signal handler and from any thread)."""
        with self._lock:
            self.received += 1
            target = self._target
            if target is None:
                self._pending.append(signum)
                return
        with contextlib.suppress(RuntimeError):  # its loop closed: the download is over
            target[0].call_soon_threadsafe(target[1], signum)

    def attach(self, loop: asyncio.AbstractEventLoop, handler: Callable[[int], None]) -> None:
        with self._lock:
            self._target = (loop, handler)
            pending, self._pending = self._pending, []
        for signum in pending:
            loop.call_soon_threadsafe(handler, signum)

    def detach(self) -> None:
        with self._lock:
            self._target = None
