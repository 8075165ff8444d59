"""A black hole on 127.0.0.1: it accepts connections, reads what is sent, and never answers,
as a proxy or firewall that swallows requests does (for tests, bench/ and tries by hand)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from bulkgene.testing.server import LOOPBACK
from bulkgene.testing.state import API_PREFIX


async def _swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   received: list[int] | None = None) -> None:
    try:
        while chunk := await reader.read(1 << 16):
            if received is not None:  # read and drop: the request is "delivered", no answer
                received[0] += len(chunk)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def start_black_hole(port: int = 0, received: list[int] | None = None
                           ) -> tuple[asyncio.Server, int]:
    """Listen on 127.0.0.1:``port`` (0: a free one); the server and its port. ``received[0]``
    counts the bytes swallowed (a test sees a request has gone out)."""
    server = await asyncio.start_server(
        lambda reader, writer: _swallow(reader, writer, received), LOOPBACK, port)
    return server, server.sockets[0].getsockname()[1]


class BlackHoleThread:
    """The black hole in a daemon thread with its own event loop; a context manager."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="bulkgene-black-hole")
        self._server: asyncio.Server | None = None
        self._received = [0]

    @property
    def bytes_received(self) -> int:
        """What the clients have sent so far (requests on the wire, never answered)."""
        return self._received[0]

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{API_PREFIX}"

    def __enter__(self) -> BlackHoleThread:
        self._thread.start()
        self._server, self.port = asyncio.run_coroutine_threadsafe(
            start_black_hole(self.port, self._received), self._loop).result(timeout=30)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            server = self._server

            async def close() -> None:
                server.close()
                # the open connections are the clients'; they are dropped with the loop
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


async def serve_black_hole_forever(port: int) -> None:
    """The ``bulkgene emulate --black-hole`` command: until cancelled."""
    server, bound = await start_black_hole(port)
    print(f"bulkgene black hole listening on http://{LOOPBACK}:{bound}{API_PREFIX} "
          "(accepts, never answers)", flush=True)
    async with server:
        await asyncio.Event().wait()
