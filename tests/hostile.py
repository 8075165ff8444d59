"""A small hostile server for tests: it answers every request with what a test scripts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType

from aiohttp import web

from bulkgene.testing.server import start_site

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HostileServer:
    """Serves ``handler`` for every path on 127.0.0.1 in a background thread; counts requests."""

    def __init__(self, handler: Handler) -> None:
        self.requests = 0
        self._handler = handler
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        return await self._handler(request)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/datasets/v2"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_site(self._app, 0), self._loop)
        self._runner, self.port = future.result(timeout=30)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
