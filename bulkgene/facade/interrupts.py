"""Ctrl-C during ``bulkgene.fetch``: the download stops as the CLI's does, then KeyboardInterrupt.

Python's default SIGINT handler raises KeyboardInterrupt wherever the main thread happens to
be, and ``asyncio.run`` cancels its task instead; neither reaches a download that runs in a
worker thread's loop (``fetch`` inside a running loop, as in Jupyter), and a cancellation
mid-commit is no way to stop it. So while a fetch runs, SIGINT (in the main thread, where
Python delivers it) asks the download to stop through ``Interrupter``: in-flight batches
finish and are committed (up to the grace period), the lock is released, summary.json says
"interrupted". A second Ctrl-C drops what is in flight at once, and a notebook's kernel
lives on (the CLI would exit the process). The handler that was there before comes back
when the fetch ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

from bulkgene.run.interrupt import Interrupter


@contextlib.contextmanager
def sigint_stops(interrupter: Interrupter) -> Iterator[None]:
    """While the block runs, SIGINT asks ``interrupter``'s download to stop; outside the
    main thread (where no handler can be installed) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        interrupter.interrupt(signum)

    try:
        previous = signal.signal(signal.SIGINT, stop)
    except ValueError:  # an interpreter that is not the main one
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def run_in_thread(coroutine: Coroutine[Any, Any, Any], interrupter: Interrupter) -> Any:
    """Run ``coroutine`` to its end in a thread with a loop of its own (this thread's loop
    is running: asyncio.run can't nest) and return its result."""
    loop = asyncio.new_event_loop()

    def run() -> Any:
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(coroutine)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bulkgene") as pool:
        future = pool.submit(run)
        while True:
            try:
                return future.result()
            except KeyboardInterrupt:
                if future.done():  # the fetch itself ended so
                    raise
                # raised here by a handler other than ours (one installed meanwhile): stop
                # the download as Ctrl-C would, and wait for it to say so
                interrupter.interrupt(signal.SIGINT)
