"""Run the emulator on 127.0.0.1: in a background thread (tests, demo) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import signal
import ssl
import threading
from types import TracebackType

from aiohttp import web

from bulkgene.testing.emulator import (
    API_PREFIX,
    STATE_KEY,
    EmulatorConfig,
    EmulatorState,
    create_app,
)
from bulkgene.testing.history import HISTORY_PATH
from bulkgene.testing.universe import GeneUniverse

LOOPBACK = "127.0.0.1"


async def start_site(app: web.Application, port: int, ssl_context: ssl.SSLContext | None = None
                     ) -> tuple[web.AppRunner, int]:
    """Start ``app`` on 127.0.0.1:``port`` (0 picks a free port); returns the runner and port.

    An emulator app closes idle connections after its configured keep-alive; any other app
    (a test's own server) after aiohttp's default.
    """
    state = app.get(STATE_KEY)
    keepalive_timeout_s = state.config.keepalive_timeout_s if state is not None else None
    # the parser accepts long lines; the handler answers 414 past the configured limit
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           max_line_size=1 << 20, max_field_size=1 << 16,
                           keepalive_timeout=75.0 if keepalive_timeout_s is None
                           else keepalive_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, port, ssl_context=ssl_context)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only through the asyncio server
    assert isinstance(server, asyncio.Server)
    return runner, server.sockets[0].getsockname()[1]


class EmulatorThread:
    """The emulator in a daemon thread with its own event loop; a context manager.

    >>> with EmulatorThread(EmulatorConfig(rate_limit=False)) as emulator:
    ...     url = emulator.base_url   # http://127.0.0.1:PORT/datasets/v2
    """

    def __init__(self, config: EmulatorConfig | None = None,
                 universe: GeneUniverse | None = None, port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.ssl_context = ssl_context
        self.app = create_app(self.config, universe)
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="bulkgene-emulator")
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> EmulatorState:
        return self.app[STATE_KEY]

    @property
    def root_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def base_url(self) -> str:
        """What bulkgene's ``--base-url`` should be."""
        return self.root_url + API_PREFIX

    @property
    def history_url(self) -> str:
        """Where the emulator serves its gene_history.gz (what ``--history`` should be)."""
        return self.root_url + HISTORY_PATH

    def start(self) -> EmulatorThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            start_site(self.app, self.port, self.ssl_context), self._loop)
        self._runner, self.port = future.result(timeout=30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


async def serve_forever(config: EmulatorConfig, port: int, ready: asyncio.Event | None = None,
                        announce: bool = True) -> None:
    """Serve the emulator until cancelled, or until SIGTERM/SIGINT (the ``bulkgene emulate``
    command), then close it.

    The signals go through the loop (``add_signal_handler``), which wakes it whichever
    thread the kernel hands them to: a plain Python handler runs only when the main thread
    wakes, and an idle emulator's main thread sleeps in epoll with no timer, so a SIGTERM
    delivered to the resolver's worker thread left it serving nothing, forever.
    """
    app = create_app(config)
    runner, bound = await start_site(app, port)
    if announce:
        # the first line ends with the API root, which scripts take as its last word
        print(f"bulkgene emulator listening on http://{LOOPBACK}:{bound}{API_PREFIX}\n"
              f"bulkgene emulator: gene history at http://{LOOPBACK}:{bound}{HISTORY_PATH} "
              "(explain's --history, or BULKGENE_HISTORY)", flush=True)
    if ready is not None:
        ready.set()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        await stop.wait()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        await runner.cleanup()
