"""A scripted NCBI for the taxon routes, as an Exchanger transport (no sockets), and its runner.

``TaxonServer`` answers ``POST /gene/dataset_report`` bodies naming a taxon from a dict of
listings, with knobs for what real servers get wrong (a page short, a token refused, pages
that repeat GeneIDs, a request that always fails); every request is recorded. ``run_listing``
runs ``list_taxa`` on a virtual clock with file work inline, so a test takes no real time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from helpers import make_config

from bulkgene.config import DownloadConfig, RetryPolicy, TaxonSelection
from bulkgene.net.attempt import HttpRequest, Reply
from bulkgene.net.exchange import Exchanger, NetStats
from bulkgene.net.pacer import AdaptiveRateLimiter
from bulkgene.testing.virtual_time import run_virtual

BASE_URL = "http://ncbi.test/datasets/v2"
T = TypeVar("T")


class CeilingRandom(random.Random):
    """Backoff jitter pinned to its ceiling: every wait is exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass
class Asked:
    """One request the client made: its body and when (virtual seconds from the start)."""

    body: dict[str, Any]
    at_s: float

    @property
    def taxon(self) -> str:
        return str(self.body.get("taxon"))

    @property
    def token(self) -> str | None:
        token = self.body.get("page_token")
        return str(token) if token is not None else None

    @property
    def offset(self) -> int | None:
        """Where the page asked for starts (None: page 1, -1: a token not of this server)."""
        token = self.token
        if token is None:
            return None
        return int(token.split("@")[1].split("#")[0]) if "@" in token else -1


def page(ids: list[int], *, total: int | None = None, token: str | None = None,
         messages: list[dict[str, Any]] | None = None) -> Reply:
    body: dict[str, Any] = {}
    if ids:
        body["reports"] = [{"gene": {"gene_id": str(gene_id)}} for gene_id in ids]
    if messages:
        body["messages"] = messages
    if total:
        body["total_count"] = total
    if token is not None:
        body["next_page_token"] = token
    return Reply(200, {}, orjson.dumps(body))


def status(code: int, message: str = "") -> Reply:
    return Reply(code, {}, orjson.dumps({"error": "error", "code": code,
                                         "message": message or f"HTTP {code}"}))


@dataclass
class TaxonServer:
    """Pages each taxon's listing in pages of the asked size. Tokens are
    ``"<taxon>@<offset>#<generation>"``, a generation per page 1 asked for: a server that
    restarted hands out a later one and answers older tokens with 500, as NCBI answers a
    token it no longer takes."""

    listings: Mapping[str, list[int]]
    latency_s: float = 0.0
    overlap: int = 0  # each page after the first repeats this many of the page before
    short_by: int = 0  # the last page leaves out this many GeneIDs (total_count doesn't)
    refuse_offsets: set[int] = field(default_factory=set)  # tokens to these answered 500
    hang_offsets: set[int] = field(default_factory=set)  # pages here never answer
    types_of: Mapping[int, str] | None = None  # each GeneID's type; None: ``types`` ignored
    generation: int = 0
    stale_below: int = 0  # tokens of earlier generations are answered 500
    special: dict[str, Callable[[Asked], Reply]] = field(default_factory=dict)  # by taxon
    asked: list[Asked] = field(default_factory=list)
    on_ask: Callable[[Asked], None] | None = None
    started_at: float = 0.0

    async def __call__(self, request: HttpRequest) -> Reply:
        request.on_sent()
        method, url, json_body = request.page.method, request.url, request.page.json_body
        assert method == "POST" and url == BASE_URL + "/gene/dataset_report", url
        assert json_body is not None and json_body["returned_content"] == "IDS_ONLY"
        asked = Asked(dict(json_body), asyncio.get_running_loop().time() - self.started_at)
        self.asked.append(asked)
        if self.on_ask is not None:
            self.on_ask(asked)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if asked.offset in self.hang_offsets:
            await asyncio.sleep(86_400)
        if asked.taxon in self.special:
            return self.special[asked.taxon](asked)
        listing = self.listings.get(asked.taxon)
        if listing is None:
            return Reply(200, {}, b"{}")
        token = asked.token
        if token is None:
            self.generation += 1
        elif ("@" not in token or "#" not in token or asked.offset in self.refuse_offsets
              or int(token.split("#")[1]) < self.stale_below):
            return status(500, "Internal server error.")
        offset = asked.offset or 0
        size = int(json_body.get("page_size", 20))
        types = json_body.get("types")
        if types and self.types_of is not None:
            listing = [gene_id for gene_id in listing if self.types_of.get(gene_id) in types]
            if not listing:
                return Reply(200, {}, b"{}")
        whole = len(listing)
        listing = listing[: len(listing) - self.short_by] if self.short_by else listing
        ids = listing[offset: offset + size]
        following = offset + size - self.overlap
        more = offset + size < len(listing)
        return page(ids, total=whole if token is None else None,
                    token=f"{asked.taxon}@{following}#{self.generation}" if more else None)


def config_for(tmp_path: Path, *taxa: str, inputs: tuple[str, ...] = (),
               **settings: Any) -> DownloadConfig:
    selection = TaxonSelection(taxa, tuple(settings.pop("gene_types", ())),
                               settings.pop("include_subtree", False))
    settings.setdefault("retry", RetryPolicy(max_attempts=3, backoff_base_s=1.0))
    settings.setdefault("progress_interval_s", 0)
    settings.setdefault("base_url", BASE_URL)
    return make_config(list(inputs), tmp_path / "out", taxa=selection, **settings)


async def inline(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Offload for a virtual clock: the file work runs in the loop (it takes no time there)."""
    return function(*args, **kwargs)


def run_listing(server: TaxonServer, config: DownloadConfig,
                body: Callable[[Exchanger], Coroutine[Any, Any, T]]) -> tuple[T, NetStats]:
    """``body(exchanger)`` on a fresh virtual clock, the exchanger talking to ``server``."""
    async def run() -> tuple[T, NetStats]:
        server.started_at = asyncio.get_running_loop().time()
        stats = NetStats()
        exchanger = Exchanger(server, AdaptiveRateLimiter(1000.0), config, stats,
                              CeilingRandom())
        return await body(exchanger), stats

    return run_virtual(run())
