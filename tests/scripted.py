"""A scripted server for the fetch path's unit tests: no sockets, a virtual clock.

``ScriptedTransport`` answers each request the client makes with the next step of a script
(a Reply, a typed failure, or a function of what was asked) and records what was asked and
when; ``fetch``/``fetch_all`` run ``GeneClient.fetch_batch`` through it on a fresh virtual
clock. ``ScriptedSession`` scripts aiohttp's side instead, for the real ``attempt``. The
backoff's jitter is pinned to its ceiling (``CeilingRandom``), so every wait is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
from aiohttp.client_reqrep import ConnectionKey
from helpers import make_config

from bulkgene.config import RetryPolicy
from bulkgene.model import Batch, BatchFailure, BatchOutcome, BatchResult
from bulkgene.net.attempt import HttpRequest, Reply, SessionTransport, Transport
from bulkgene.net.client import GeneClient
from bulkgene.net.failures import AttemptFailed
from bulkgene.net.pacer import AdaptiveRateLimiter
from bulkgene.testing.virtual_time import run_virtual

BASE_URL = "http://ncbi.test/datasets/v2"
IDS = (1, 2, 3, 4)


class CeilingRandom(random.Random):
    """Jitter pinned to its upper bound: every backoff is the longest it may be."""

    def uniform(self, a: float, b: float) -> float:
        return b


# -- what the server says ----------------------------------------------------------------

def page(answered: tuple[int, ...], *, total: int | None = None,
         next_page: str | None = None) -> bytes:
    """A report page answering ``answered`` (``total`` defaults to their number)."""
    content: dict[str, Any] = {
        "reports": [{"query": [str(g)], "gene": {"gene_id": str(g)}} for g in answered],
        "total_count": len(answered) if total is None else total}
    if next_page is not None:
        content["next_page_token"] = next_page
    return orjson.dumps(content)


def ok(answered: tuple[int, ...], **kwargs: Any) -> Reply:
    return Reply(200, {}, page(answered, **kwargs))


def status(code: int, message: str = "", headers: Mapping[str, str] | None = None) -> Reply:
    body = orjson.dumps({"error": "error", "code": code, "message": message or f"HTTP {code}"})
    return Reply(code, dict(headers or {}), body)


# -- the scripted transport --------------------------------------------------------------

@dataclass(frozen=True)
class Asked:
    """One request the client made, and when (virtual seconds since the batch began)."""

    endpoint: str
    gene_ids: tuple[int, ...]
    token: str | None
    at_s: float


Answer = Reply | AttemptFailed
Step = Answer | Callable[[Asked], Answer]


def _asked(request: HttpRequest, at_s: float) -> Asked:
    path = request.url.removeprefix(BASE_URL)
    json_body, params = request.page.json_body, request.page.params
    if request.page.method == "POST":
        assert json_body is not None
        return Asked("dataset-report", tuple(json_body["gene_ids"]),
                     json_body.get("page_token"), at_s)
    endpoint = "gene-id-report" if path.endswith("/dataset_report") else "gene-id"
    ids = path.removeprefix("/gene/id/").removesuffix("/dataset_report")
    return Asked(endpoint, tuple(int(i) for i in ids.split(",")), dict(params).get("page_token"),
                 at_s)


class ScriptedTransport:
    """Answers each request with the next step of its script, then with ``then``."""

    def __init__(self, *script: Step, then: Callable[[Asked], Answer] | None = None) -> None:
        self.script: deque[Step] = deque(script)
        self.then = then
        self.asked: list[Asked] = []
        self.started_at = 0.0

    async def __call__(self, request: HttpRequest) -> Reply:
        request.on_sent()
        asked = _asked(request, asyncio.get_running_loop().time() - self.started_at)
        self.asked.append(asked)
        if self.script:
            step = self.script.popleft()
        else:
            assert self.then is not None, f"unscripted request {asked}"
            step = self.then
        answer = step(asked) if callable(step) else step
        if isinstance(answer, AttemptFailed):
            raise answer
        return answer

    @property
    def gaps_s(self) -> list[float]:
        """Virtual seconds between one request and the next."""
        times = [a.at_s for a in self.asked]
        return [round(b - a, 2) for a, b in itertools.pairwise(times)]

    @property
    def ids_asked(self) -> list[tuple[int, ...]]:
        return [a.gene_ids for a in self.asked]


@dataclass
class Fetched:
    """What one fetch_batch returned, and the client it ran on."""

    result: BatchResult
    client: GeneClient

    @property
    def outcome(self) -> BatchOutcome:
        assert isinstance(self.result, BatchOutcome), self.result
        return self.result

    @property
    def failure(self) -> BatchFailure:
        assert isinstance(self.result, BatchFailure), self.result
        return self.result


def fetch_all(transport: Transport, *batches: tuple[int, ...], **settings: Any
              ) -> tuple[list[BatchResult], GeneClient]:
    """``fetch_batch`` of each batch in turn through ``transport``, on a fresh virtual clock."""
    settings.setdefault("retry", RetryPolicy(max_attempts=3, backoff_base_s=1.0))
    config = make_config(["ids.txt"], Path("out"), base_url=BASE_URL, **settings)

    async def run() -> tuple[list[BatchResult], GeneClient]:
        if isinstance(transport, ScriptedTransport):
            transport.started_at = asyncio.get_running_loop().time()
        # the transport never uses the client's session: it has its own, or none
        async with aiohttp.ClientSession() as unused:
            client = GeneClient(unused, AdaptiveRateLimiter(1000.0), config, rng=CeilingRandom(),
                                transport=transport)
            return [await client.fetch_batch(Batch(i, ids)) for i, ids in enumerate(batches)], client

    return run_virtual(run())


def fetch(transport: Transport, gene_ids: tuple[int, ...] = IDS, **settings: Any) -> Fetched:
    """``fetch_batch`` of ``gene_ids`` through ``transport``, on a fresh virtual clock."""
    (result,), client = fetch_all(transport, gene_ids, **settings)
    return Fetched(result, client)


def answering(refused: Callable[[tuple[int, ...]], Reply | None]) -> Callable[[Asked], Answer]:
    """A server that answers every ID it has (all of them), unless ``refused`` says no."""
    def respond(asked: Asked) -> Answer:
        return refused(asked.gene_ids) or ok(asked.gene_ids)
    return respond



@dataclass
class ScriptedContent:
    chunks: list[bytes | BaseException]

    async def iter_chunked(self, _size: int) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk


@dataclass
class ScriptedResponse:
    status: int
    headers: Mapping[str, str]
    content: ScriptedContent
    content_length: int | None = None
    connection: None = None


ServerStep = ScriptedResponse | BaseException


class ScriptedSession:
    """aiohttp's side of a request, scripted: an exception, or a response to read."""

    def __init__(self, *script: ServerStep) -> None:
        self.script = deque(script)

    @contextlib.asynccontextmanager
    async def request(self, _method: str, _url: str, **_kwargs: Any
                      ) -> AsyncIterator[ScriptedResponse]:
        step = self.script.popleft()
        if isinstance(step, BaseException):
            raise step
        yield step


def body(*chunks: bytes | BaseException, length: int | None = None) -> ScriptedResponse:
    return ScriptedResponse(200, {}, ScriptedContent(list(chunks)), length)


CONNECTION_KEY = ConnectionKey("ncbi.test", 80, False, True, None, None, None)


def via_attempt(*script: ServerStep) -> Transport:
    """The real ``attempt`` over a scripted aiohttp session."""
    return SessionTransport(cast(aiohttp.ClientSession, ScriptedSession(*script)))
