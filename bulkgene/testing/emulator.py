"""The emulator's aiohttp application: NCBI Datasets v2 gene reports, with its quirks and faults.

Serves ``GET {prefix}/gene/id/{gene_ids}`` with the real ``v2reportsGeneDataReportPage``
schema: ``reports`` out of input order, ``total_count``, ``next_page_token`` only while pages
remain (opaque, bound to the query), page-level ``messages`` for unknown and discontinued
IDs, replaced IDs answered by their new gene with a ``REPLACED_GENE_ID`` warning, and a
per-key sliding-window rate limit answering 429 with ``Retry-After``. Faults are drawn per
request from a seeded RNG. Every request is logged (never the key) for tests to assert on.

Control endpoints (not part of NCBI's API): ``GET /_emulator/arrivals``,
``POST /_emulator/reset``, ``POST /_emulator/outage?status=503`` and ``DELETE /_emulator/outage``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

from bulkgene.testing import tabular
from bulkgene.testing.universe import Content, Fate, GeneUniverse

API_PREFIX = "/datasets/v2"
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 20
MAX_GENE_ID = 2**31 - 1
DOCS = "(For more help, see the NCBI Datasets Documentation at https://www.ncbi.nlm.nih.gov/datasets/docs/)"
FAULTS = (
    "http_500", "http_502", "http_503", "http_504", "truncate", "reset", "html", "stall",
    "missing_reports", "foreign_gene", "throttle_seconds", "throttle_date", "throttle_bare",
    "blocked", "bad_token", "repeat_token",
)


@dataclass
class EmulatorConfig:
    """Knobs of the emulator: limits, latency, faults. Probabilities are per request."""

    seed: int = 0
    anonymous_requests_per_second: float = 5.0
    keyed_requests_per_second: float = 10.0
    rate_limit: bool = True
    retry_after_s: int = 1
    rate_limit_headers: bool = True  # X-RateLimit-Limit/-Remaining on 429s
    valid_keys: frozenset[str] | None = None  # None: any key is accepted
    latency_s: float = 0.0
    latency_per_gene_s: float = 0.0
    latency_jitter: float = 0.0  # +- this fraction of the latency, uniformly
    stall_s: float = 30.0
    max_request_line_bytes: int = 16384  # longer request targets get 414, as a gateway does
    poison_ids: frozenset[int] = frozenset()  # any request naming one of these gets a 400
    faults: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")


@dataclass(frozen=True)
class Arrival:
    """One request as the emulator saw it; the key itself is never kept."""

    t: float
    method: str
    path: str
    query: str
    n_ids: int
    first_id: int | None
    page_token: bool
    has_key: bool
    status: int
    fault: str | None
    accept: str = ""


class EmulatorState:
    """Mutable server state: the arrival log, rate windows, the outage switch."""

    def __init__(self, config: EmulatorConfig, universe: GeneUniverse) -> None:
        self.config = config
        self.universe = universe
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._windows: dict[str, deque[float]] = {}
        self._rng = random.Random(config.seed)
        self._secret = hashlib.blake2b(str(config.seed).encode(), digest_size=16).digest()
        self.outage_status: int | None = None

    def log(self, arrival: Arrival) -> None:
        with self._lock:
            self._arrivals.append(arrival)

    def arrivals(self) -> list[Arrival]:
        """A copy of the arrival log, safe to read from another thread."""
        with self._lock:
            return list(self._arrivals)

    def reset(self) -> None:
        with self._lock:
            self._arrivals.clear()
            self._windows.clear()

    def admit(self, client: str, limit: float, now: float) -> bool:
        """Sliding one-second window per client: admit unless ``limit`` already arrived."""
        window = self._windows.setdefault(client, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def draw_fault(self) -> str | None:
        """The fault this request suffers, if any (deterministic in arrival order)."""
        if not self.config.faults:
            return None
        roll = self._rng.random()
        for name, probability in self.config.faults.items():
            if roll < probability:
                return name
            roll -= probability
        return None

    def jitter(self) -> float:
        spread = self.config.latency_jitter
        return 1.0 + self._rng.uniform(-spread, spread) if spread else 1.0

    def token(self, offset: int, signature: bytes) -> str:
        """An opaque page token: the offset, sealed to this query by a keyed hash."""
        seal = hashlib.blake2b(signature + offset.to_bytes(4, "big"), key=self._secret,
                               digest_size=12).digest()
        return base64.urlsafe_b64encode(offset.to_bytes(4, "big") + seal).decode().rstrip("=")

    def offset_of(self, token: str, signature: bytes) -> int | None:
        """The offset inside a token, or None if it is not one of ours for this query."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        if len(raw) != 16:
            return None
        offset = int.from_bytes(raw[:4], "big")
        return offset if self.token(offset, signature) == token else None


STATE_KEY = web.AppKey("state", EmulatorState)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


def _error(status: int, reason: str, message: str) -> web.Response:
    """The error body NCBI actually sends: ``{error, code, message}``."""
    return _json(status, {"error": reason, "code": status, "message": f"{message} {DOCS}"})


_HTML_403 = (b"<!DOCTYPE html><html><head><title>403 Error - NCBI</title></head><body>"
             b"<h1>Access Denied</h1><p>Your access to NCBI has been blocked.</p></body></html>")
_HTML_200 = (b"<!DOCTYPE html><html><head><title>NCBI</title></head><body>"
             b"<p>Service temporarily unavailable. Please try again later.</p></body></html>")


def _parse_ids(raw: str) -> list[int] | None:
    """The path's GeneIDs (comma-separated, ``%2C`` already decoded), or None if invalid."""
    ids: list[int] = []
    for part in raw.split(","):
        token = part.strip()
        if not token.isdigit() or len(token) > 10 or not 1 <= int(token) <= MAX_GENE_ID:
            return None
        ids.append(int(token))
    return ids


def _page_body(reports: list[bytes], total: int, token: str | None,
               messages: list[dict[str, Any]]) -> bytes:
    """The page as NCBI orders it; empty fields (no reports, no token) are omitted."""
    parts = []
    if reports:
        parts.append(b'"reports":[' + b",".join(reports) + b"]")
    if messages:
        parts.append(b'"messages":' + orjson.dumps(messages))
    if total:
        parts.append(b'"total_count":%d' % total)
    if token:
        parts.append(b'"next_page_token":' + orjson.dumps(token))
    return b"{" + b",".join(parts) + b"}"


def _warning(code: str, gene_id: int) -> dict[str, Any]:
    if code == "DISCONTINUED_GENE_ID":
        reason = "This GeneID has been discontinued."
        message = (f"The gene you requested, ({gene_id}) is a valid NCBI Gene IDs that has been "
                   "discontinued. It will be omitted from your dataset.")
    else:
        reason = "This GeneID is unrecognized."
        message = f"The GeneID that you specified, ({gene_id}) is not a recognized NCBI GeneID."
    return {"warning": {"gene_warning_code": code, "reason": reason, "message": message,
                        "unrecognized_identifier": str(gene_id)}}


def _matches(universe: GeneUniverse, ids: list[int], content: Content
             ) -> tuple[list[tuple[int, int, bytes]], list[dict[str, Any]]]:
    """(order key, GeneID, bytes) of every report match for ``ids``, and the page messages."""
    found: list[tuple[int, int, bytes]] = []
    messages: list[dict[str, Any]] = []
    for gene_id in ids:
        fate = universe.fate(gene_id)
        if fate is Fate.FOUND:
            match = (b'{"gene":' + universe.gene_bytes(gene_id, content)
                     + b',"query":["%d"]}' % gene_id)
            found.append((universe.order_key(gene_id), gene_id, match))
        elif fate is Fate.REPLACED:
            new_id = universe.replacement(gene_id)
            warning = {"gene_warning_code": "REPLACED_GENE_ID",
                       "reason": "This GeneID has been replaced.",
                       "message": f"The GeneID you requested, ({gene_id}), has been replaced by "
                                  f"({new_id}). The current GeneID will be returned.",
                       "replaced_id": {"requested": str(gene_id), "returned": str(new_id)}}
            match = (b'{"gene":' + universe.gene_bytes(new_id, content, replaced_from=gene_id)
                     + b',"query":["%d"],"warnings":' % gene_id + orjson.dumps([warning]) + b"}")
            found.append((universe.order_key(new_id), new_id, match))
        else:
            code = "UNRECOGNIZED_GENE_ID" if fate is Fate.UNKNOWN else "DISCONTINUED_GENE_ID"
            messages.append(_warning(code, gene_id))
    return found, messages


SORT_FIELDS = ("gene_id",)
SORT_DIRECTIONS = ("SORT_DIRECTION_UNSPECIFIED", "SORT_DIRECTION_ASCENDING",
                   "SORT_DIRECTION_DESCENDING")


@dataclass
class Query:
    """One report request, from a GET's path and query or a POST's JSON body."""

    ids: list[int] | None  # None: not a list of GeneIDs
    page_size: str = str(DEFAULT_PAGE_SIZE)
    returned_content: str = "COMPLETE"
    page_token: str | None = None
    locus_tags: list[str] = field(default_factory=list)
    sort_field: str | None = None
    sort_direction: str | None = None
    tax_search_subtree: bool = False
    table_fields: list[str] = field(default_factory=list)
    accession_filter: list[str] = field(default_factory=list)
    include_tabular_header: str = "INCLUDE_TABULAR_HEADER_FIRST_PAGE_ONLY"
    logged: str = ""  # what the arrival log keeps of it (never the key)

    def signature(self) -> bytes:
        """What a page token is bound to: everything but the token itself."""
        bound = [self.ids, self.returned_content, self.locus_tags, self.sort_field,
                 self.sort_direction, self.tax_search_subtree, self.table_fields,
                 self.accession_filter, self.include_tabular_header]
        return hashlib.blake2b(orjson.dumps(bound), digest_size=16).digest()


def query_from_get(request: web.Request) -> Query:
    query = request.query
    return Query(
        ids=_parse_ids(request.match_info["gene_ids"]),
        page_size=query.get("page_size", str(DEFAULT_PAGE_SIZE)),
        returned_content=query.get("returned_content", "COMPLETE"),
        page_token=query.get("page_token") or None,
        locus_tags=query.getall("locus_tags", []),
        sort_field=query.get("sort.field"),
        sort_direction=query.get("sort.direction"),
        tax_search_subtree=query.get("tax_search_subtree", "false") == "true",
        table_fields=query.getall("table_fields", []),
        accession_filter=query.getall("accession_filter", []),
        include_tabular_header=query.get("include_tabular_header",
                                         "INCLUDE_TABULAR_HEADER_FIRST_PAGE_ONLY"),
        logged="&".join(part for part in request.query_string.split("&")
                        if not part.startswith("api_key=")),  # exactly as sent, less the key
    )


async def query_from_post(request: web.Request) -> Query:
    try:
        body = await request.json(loads=orjson.loads)
    except ValueError:
        return Query(ids=None, logged="<not JSON>")
    if not isinstance(body, dict):
        return Query(ids=None, logged="<not an object>")
    raw_ids = body.get("gene_ids")
    ids = ([int(i) for i in raw_ids] if isinstance(raw_ids, list) and raw_ids and all(
        isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= MAX_GENE_ID
        for i in raw_ids) else None)
    sort = body.get("sort") or [{}]
    first_sort = sort[0] if isinstance(sort, list) and sort and isinstance(sort[0], dict) else {}
    return Query(
        ids=ids,
        page_size=str(body.get("page_size", DEFAULT_PAGE_SIZE)),
        returned_content=str(body.get("returned_content", "COMPLETE")),
        page_token=body.get("page_token") or None,
        locus_tags=[str(t) for t in body.get("locus_tags", [])],
        sort_field=first_sort.get("field"),
        sort_direction=first_sort.get("direction"),
        tax_search_subtree=body.get("tax_search_subtree") is True,
        table_fields=[str(f) for f in body.get("table_fields", [])],
        accession_filter=[str(a) for a in body.get("accession_filter", [])],
        include_tabular_header=str(body.get("include_tabular_header",
                                            "INCLUDE_TABULAR_HEADER_FIRST_PAGE_ONLY")),
        logged=orjson.dumps({k: v for k, v in body.items() if k != "gene_ids"},
                            option=orjson.OPT_SORT_KEYS).decode(),
    )


async def _faulty(request: web.Request, state: EmulatorState, fault: str, ids: list[int],
                  body: bytes) -> web.StreamResponse:
    """Answer with the drawn fault instead of the page."""
    if fault in ("http_500", "http_502", "http_503"):
        status = int(fault[-3:])
        return _error(status, "Internal Server Error" if status == 500 else "Bad Gateway"
                      if status == 502 else "Service Unavailable", "Upstream error.")
    if fault == "http_504":
        return web.Response(status=504, content_type="text/plain", text=(
            f"[gateway] Internal server error - request timed out {DOCS} (2238ABA88E40A8A21A5DD2E8.3.1)"))
    if fault == "html":
        return web.Response(status=200, body=_HTML_200, content_type="text/html")
    if fault == "blocked":
        return web.Response(status=403, body=_HTML_403, content_type="text/html")
    if fault.startswith("throttle"):
        headers = {}
        if fault == "throttle_seconds":
            headers["Retry-After"] = str(state.config.retry_after_s)
        elif fault == "throttle_date":
            headers["Retry-After"] = formatdate(time.time() + state.config.retry_after_s,
                                                usegmt=True)
        return _json(429, {"error": "Too Many Requests", "code": 429,
                           "message": "API rate limit exceeded"}, headers)
    if fault == "missing_reports":
        return _json(200, {"total_count": len(ids)})
    if fault == "foreign_gene":
        stranger = max(ids) + 1 if max(ids) < MAX_GENE_ID else 1
        match = (b'{"gene":' + state.universe.gene_bytes(stranger, Content.IDS_ONLY)
                 + b',"query":["%d"]}' % stranger)
        return web.Response(body=_page_body([match], 1, None, []),
                            content_type="application/json")
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    if fault == "stall":
        await response.prepare(request)
        await response.write(body[:1])
        await asyncio.sleep(state.config.stall_s)
        return response
    if fault == "truncate":
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.close()
        return response
    # reset: no response at all
    assert request.transport is not None
    request.transport.abort()
    return response


async def gene_by_id(request: web.Request) -> web.StreamResponse:
    """``GET /gene/id/{gene_ids}`` (and ``.../dataset_report``): the paged report page."""
    return await _serve(request, query_from_get(request))


async def gene_dataset_report(request: web.Request) -> web.StreamResponse:
    """``POST /gene/dataset_report`` (and the deprecated ``POST /gene``): the same, by body."""
    return await _serve(request, await query_from_post(request))


async def _serve(request: web.Request, query: Query) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    config = state.config
    now = time.monotonic()
    key = request.headers.get("api-key") or request.query.get("api_key")
    ids = query.ids

    def log(status: int, fault: str | None = None) -> None:
        state.log(Arrival(now, request.method, request.path, query.logged,
                          len(ids or ()), ids[0] if ids else None,
                          query.page_token is not None, key is not None, status, fault,
                          request.headers.get("Accept", "")))

    if len(request.raw_path) > config.max_request_line_bytes:
        log(414)
        return _error(414, "URI Too Long", "The request URI is too long.")
    if state.outage_status is not None:
        log(state.outage_status, "outage")
        return _error(state.outage_status, "Service Unavailable", "The service is down.")
    if key is not None and config.valid_keys is not None and key not in config.valid_keys:
        log(401, "bad_key")
        return _error(401, "Unauthorized", "Invalid API key.")
    if config.rate_limit:
        limit = config.keyed_requests_per_second if key else config.anonymous_requests_per_second
        client = f"key:{key}" if key else f"ip:{request.remote}"
        if not state.admit(client, limit, now):
            log(429, "rate_limit")
            headers = {"Retry-After": str(config.retry_after_s)}
            if config.rate_limit_headers:
                headers.update({"X-RateLimit-Limit": f"{limit:g}", "X-RateLimit-Remaining": "0"})
            return _json(429, {"error": "Too Many Requests", "code": 429,
                               "message": "API rate limit exceeded"}, headers)
    if ids is None:
        log(400)
        return _error(400, "Bad Request", "Invalid argument type for gene_ids.")
    if config.poison_ids.intersection(ids):
        log(400)
        return _error(400, "Bad Request", "Invalid argument provided: 'gene_ids' contains an "
                      "identifier that can't be processed.")
    try:
        page_size = int(query.page_size)
        content = Content(query.returned_content)
    except ValueError:
        log(400)
        return _error(400, "Bad Request", "Invalid argument provided: page_size or "
                      "returned_content.")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        log(400)
        return _error(400, "Bad Request",
                      f"Invalid argument provided: page_size must be 1..{MAX_PAGE_SIZE}.")
    if (query.sort_field is not None and query.sort_field not in SORT_FIELDS) or (
            query.sort_direction is not None and query.sort_direction not in SORT_DIRECTIONS):
        log(400)
        return _error(400, "Bad Request", f"Invalid argument provided: 'invalid sort "
                      f"{query.sort_field} {query.sort_direction}'.")
    ids = list(dict.fromkeys(ids))
    signature = query.signature()
    offset = 0
    fault = state.draw_fault()
    if token := query.page_token:
        found = state.offset_of(token, signature)
        if found is None or fault == "bad_token":  # e.g. a token that expired server-side
            log(400, "bad_token" if found is not None else None)
            return _error(400, "Bad Request", "Invalid argument provided: invalid page token.")
        offset = found

    found_matches, messages = _matches(state.universe, ids, content)
    if query.sort_field == "gene_id":
        found_matches.sort(key=lambda item: item[1],
                           reverse=query.sort_direction == "SORT_DIRECTION_DESCENDING")
    else:
        found_matches.sort(key=lambda item: item[0])
    matches = [match for _, _, match in found_matches]
    accept = request.headers.get("Accept", "")
    if "application/x-ndjson" in accept:
        return await _serve_ndjson(request, state, matches, messages, fault, log, ids)
    if "text/tab-separated-values" in accept:
        if unknown := tabular.unknown_fields(query.table_fields):
            log(400)
            return _error(400, "Bad Request", f"Invalid argument provided: unknown table "
                          f"fields {unknown}.")
        genes = [orjson.loads(match)["gene"] for match in matches]
        body = tabular.render(genes, query.table_fields, query.include_tabular_header,
                              page_size)
        return await _serve_lines(request, state, body, "text/tab-separated-values",
                                  len(matches), fault, log, ids)
    page = matches[offset : offset + page_size]
    next_offset = offset + page_size
    token_out = state.token(next_offset, signature) if next_offset < len(matches) else None
    repeated = fault == "repeat_token" and bool(token) and token_out is not None
    if repeated:
        token_out = token  # a server bug: the chain loops
    body = _page_body(page, len(matches), token_out, messages if offset == 0 else [])

    delay = (config.latency_s + config.latency_per_gene_s * len(page)) * state.jitter()
    if delay > 0:
        await asyncio.sleep(delay)
    if fault is not None and fault not in ("bad_token", "repeat_token"):
        response = await _faulty(request, state, fault, ids, body)
        log(response.status if fault not in ("truncate", "reset", "stall") else 0, fault)
        return response
    log(200, "repeat_token" if repeated else None)
    return web.Response(body=body, content_type="application/json")


async def _serve_ndjson(request: web.Request, state: EmulatorState, matches: list[bytes],
                        messages: list[dict[str, Any]], fault: str | None,
                        log: Callable[[int, str | None], None], ids: list[int]
                        ) -> web.StreamResponse:
    """JSON lines: every match of the request at once (no paging), then one query-only line
    with its warning for each unknown or discontinued ID (as v1's stream did)."""
    lines = [match + b"\n" for match in matches]
    for message in messages:
        warning = message["warning"]
        lines.append(orjson.dumps({"query": [warning["unrecognized_identifier"]],
                                   "warnings": [warning]}) + b"\n")
    return await _serve_lines(request, state, b"".join(lines), "application/x-ndjson",
                              len(matches), fault, log, ids)


async def _serve_lines(request: web.Request, state: EmulatorState, body: bytes,
                       content_type: str, genes: int, fault: str | None,
                       log: Callable[[int, str | None], None], ids: list[int]
                       ) -> web.StreamResponse:
    """A whole-request answer (JSON lines or TSV), with latency and faults."""
    config = state.config
    delay = (config.latency_s + config.latency_per_gene_s * genes) * state.jitter()
    if delay > 0:
        await asyncio.sleep(delay)
    if fault is not None and fault not in ("bad_token", "repeat_token"):
        response = await _faulty(request, state, fault, ids, body)
        log(response.status if fault not in ("truncate", "reset", "stall") else 0, fault)
        return response
    log(200, None)
    return web.Response(body=body, content_type=content_type)


async def arrivals(request: web.Request) -> web.Response:
    """The arrival log as JSON, for tests and benchmarks in another process."""
    return web.Response(body=orjson.dumps([asdict(a) for a in request.app[STATE_KEY].arrivals()]),
                        content_type="application/json")


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return _json(200, {"reset": True})


async def outage_on(request: web.Request) -> web.Response:
    request.app[STATE_KEY].outage_status = int(request.query.get("status", "503"))
    return _json(200, {"outage": True})


async def outage_off(request: web.Request) -> web.Response:
    request.app[STATE_KEY].outage_status = None
    return _json(200, {"outage": False})


async def not_found(request: web.Request) -> web.Response:
    return _error(404, "Not Found", "Your request is invalid.")


def create_app(config: EmulatorConfig | None = None,
               universe: GeneUniverse | None = None) -> web.Application:
    """The emulator as an aiohttp application (mount it on any runner or test server)."""
    config = config or EmulatorConfig()
    app = web.Application()
    app[STATE_KEY] = EmulatorState(config, universe or GeneUniverse(seed=config.seed))
    app.router.add_get(API_PREFIX + "/gene/id/{gene_ids}", gene_by_id)
    app.router.add_get(API_PREFIX + "/gene/id/{gene_ids}/dataset_report", gene_by_id)
    app.router.add_post(API_PREFIX + "/gene/dataset_report", gene_dataset_report)
    app.router.add_post(API_PREFIX + "/gene", gene_dataset_report)  # deprecated by NCBI
    app.router.add_get("/_emulator/arrivals", arrivals)
    app.router.add_post("/_emulator/reset", reset)
    app.router.add_post("/_emulator/outage", outage_on)
    app.router.add_delete("/_emulator/outage", outage_off)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
