"""The emulator's aiohttp application: NCBI Datasets v2 gene reports, with its quirks and faults.

Serves ``GET {prefix}/gene/id/{gene_ids}``, its current twin ``.../dataset_report`` and the
POSTs ``/gene`` and ``/gene/dataset_report`` with the real ``v2reportsGeneDataReportPage``
schema, behaving by default as NCBI was recorded (docs/ncbi-api.md): reports out of input
order; ``total_count`` on the first page only; ``next_page_token`` only while pages remain
(opaque, bound to the query); nothing found is ``{}``; unknown and discontinued IDs are
simply missing; replaced IDs are answered by their new gene with a ``REPLACED_GENE_ID``
warning; an invalid page token is a 500 with NCBI's error envelope and ``Connection: close``.
Every answer carries ``Server: Finatra``, ``X-Datasets-Version``, ``Ncbi-Phid``,
``X-RateLimit-Limit`` and ``-Remaining`` (what is left of the caller's 1-s window: counted at
the request's arrival, or as its answer leaves with ``remaining_counted_at="answer"``, since
which NCBI does is unrecorded) and ``Keep-Alive: timeout=4, max=40``, which the server
enforces; pages mirror their count and token in ``X-Ncbi-Total-Count`` /
``X-Ncbi-Next-Page-Token``. Over the per-key sliding-window rate limit it answers 429 with
``Retry-After``. Knobs (EmulatorConfig) add NCBI 18.23's whole-request 404 for an invalid
GeneID, retired endpoints, arrival jitter, and bring back the older guesses (page messages,
total on every page, 400 for bad tokens, rate headers on 429s only). Faults are drawn per
request from a seeded RNG. Every request is logged (never the key) for tests to assert on.

The taxon routes (``/gene/taxon/{taxon}/dataset_report``, ``/counts``, ``taxon`` in a POST
body) are in testing/taxon_routes.py, behind the same admission (testing/admission.py).
It also serves NCBI's ``/gene/DATA/gene_history.gz`` consistent with its universe, at the
root as NCBI's FTP host does (testing/history.py), outside the API's rate limit.

Control endpoints (not part of NCBI's API): ``GET /_emulator/arrivals``,
``POST /_emulator/reset``, ``POST /_emulator/outage?status=503``, ``DELETE /_emulator/outage``
and ``POST /_emulator/path?arrival_jitter_ms=150&remaining_counted_at=answer`` (a path that
turns bad, or another reading of the count, without a new emulator).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from bulkgene.testing import tabular
from bulkgene.testing.admission import admit, answer
from bulkgene.testing.history import HISTORY_PATH, gene_history
from bulkgene.testing.requests import (
    SORT_DIRECTIONS,
    SORT_FIELDS,
    Query,
    query_from_get,
    query_from_post,
)
from bulkgene.testing.state import (
    API_PREFIX,
    DATASETS_VERSION,
    ENDPOINTS,
    FAULTS,
    FRONT_END_KEY,
    MAX_PAGE_SIZE,
    PHID_KEY,
    RATE_CLIENT_KEY,
    RATE_HEADERS_KEY,
    REMAINING_COUNTED_AT,
    STATE_KEY,
    Arrival,
    EmulatorConfig,
    EmulatorState,
    error_response,
    json_response,
    mirror_headers,
    page_body,
)
from bulkgene.testing.taxon_routes import add_taxon_routes, taxon_by_body
from bulkgene.testing.universe import Content, Fate, GeneUniverse

__all__ = ["API_PREFIX", "ENDPOINTS", "FAULTS", "STATE_KEY", "Arrival", "EmulatorConfig",
           "EmulatorState", "create_app"]


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


async def _matches(universe: GeneUniverse, ids: list[int], content: Content
                   ) -> tuple[list[tuple[int, int, bytes]], list[dict[str, Any]]]:
    """(order key, GeneID, bytes) of every report match for ``ids``, and the page messages."""
    found: list[tuple[int, int, bytes]] = []
    messages: list[dict[str, Any]] = []
    for position, gene_id in enumerate(ids):
        if position % 100 == 99:
            # let other requests in: a server busy for 5 ms would time their arrival late,
            # and the rate-limit window would then judge them on the wrong clock
            await asyncio.sleep(0)
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


async def gene_by_id(request: web.Request) -> web.StreamResponse:
    """``GET /gene/id/{gene_ids}`` (deprecated by NCBI): the paged report page."""
    return await _serve(request, query_from_get(request))


async def gene_dataset_reports_by_id(request: web.Request) -> web.StreamResponse:
    """``GET /gene/id/{gene_ids}/dataset_report``: the same, with the current parameters."""
    return await _serve(request, query_from_get(request, dataset_report=True))


async def gene_dataset_report(request: web.Request) -> web.StreamResponse:
    """``POST /gene/dataset_report`` (and the deprecated ``POST /gene``): the same, by body;
    a body that names a ``taxon`` and no GeneIDs pages that taxon's genes."""
    try:
        body = await request.json(loads=orjson.loads)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("taxon") and not body.get("gene_ids"):
        return await taxon_by_body(request, body)
    return await _serve(request, await query_from_post(request))


def _kept(match: bytes, query: Query) -> bool:
    """Whether a match passes the dataset_report GET's ``query`` and ``types`` filters."""
    gene = orjson.loads(match)["gene"]
    if query.types and gene.get("type") not in query.types:
        return False
    text = (query.text or "").lower()
    return not text or text in gene.get("symbol", "").lower() or text in gene.get(
        "description", "").lower()


async def _serve(request: web.Request, query: Query) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    config = state.config
    ids = query.ids
    log, refusal = await admit(request, query.logged, ids, query.page_token is not None)
    if refusal is not None:
        return refusal
    if ids is None:
        log(400)
        return error_response(400, "Bad Request", "Invalid argument type ('parameter: gene_ids') "
                              "provided.")
    if config.poison_ids.intersection(ids):
        log(400)
        return error_response(400, "Bad Request", "Invalid argument provided: 'gene_ids' contains an "
                      "identifier that can't be processed.")
    if (config.invalid_ids or config.invalid_id_per_mille) and any(
            config.is_invalid_id(gene_id) for gene_id in ids):
        log(404, "invalid_id")  # NCBI 18.23 fails the whole request for one bad member
        return error_response(404, "Not Found", "Your request is invalid.")
    try:
        page_size = int(query.page_size)
        content = Content(query.returned_content)
    except ValueError:
        log(400)
        return error_response(400, "Bad Request", "Invalid argument provided: page_size or "
                      "returned_content.")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        log(400)
        return error_response(400, "Bad Request",
                      f"Invalid argument provided: page_size must be 1..{MAX_PAGE_SIZE}.")
    if (query.sort_field is not None and query.sort_field not in SORT_FIELDS) or (
            query.sort_direction is not None and query.sort_direction not in SORT_DIRECTIONS):
        log(400)
        return error_response(400, "Bad Request", f"Invalid argument provided: 'invalid sort "
                      f"{query.sort_field} {query.sort_direction}'.")
    ids = list(dict.fromkeys(ids))
    signature = query.signature()
    offset = 0
    fault = state.draw_fault()
    if token := query.page_token:
        found = state.offset_of(token, signature)
        if found is None or fault == "bad_token":  # e.g. a token that expired server-side
            status = config.bad_token_status
            log(status, "bad_token" if found is not None else None)
            if status == 500:
                return error_response(500, "Internal Server Error", "Internal server error.",
                                      request[PHID_KEY])
            return error_response(status, "Bad Request",
                                  "Invalid argument provided: invalid page token.")
        offset = found

    found_matches, messages = await _matches(state.universe, ids, content)
    if query.text or query.types:
        found_matches = [item for item in found_matches if _kept(item[2], query)]
    if not config.unknown_id_messages:
        messages = []  # NCBI is silent: what was asked for and not answered is just missing
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
            return error_response(400, "Bad Request", f"Invalid argument provided: unknown table "
                          f"fields {unknown}.")
        genes = [orjson.loads(match)["gene"] for match in matches]
        body = tabular.render(genes, query.table_fields, query.include_tabular_header,
                              page_size)
        return await answer(request, state, body, "text/tab-separated-values", len(matches),
                             fault, log, ids)
    page = matches[offset : offset + page_size]
    next_offset = offset + page_size
    token_out = state.token(next_offset, signature) if next_offset < len(matches) else None
    repeated = fault == "repeat_token" and bool(token) and token_out is not None
    if repeated:
        token_out = token  # a server bug: the chain loops
    total = len(matches) if offset == 0 or config.total_count_on_every_page else 0
    body = page_body(page, total, token_out, messages if offset == 0 else [])
    mirrors = mirror_headers(config, total, token_out)
    return await answer(request, state, body, "application/json", len(page), fault, log, ids,
                         "repeat_token" if repeated else None, mirrors)


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
    return await answer(request, state, b"".join(lines), "application/x-ndjson",
                         len(matches), fault, log, ids)


async def arrivals(request: web.Request) -> web.Response:
    """The arrival log as JSON, for tests and benchmarks in another process."""
    return web.Response(body=orjson.dumps([asdict(a) for a in request.app[STATE_KEY].arrivals()]),
                        content_type="application/json")


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return json_response(200, {"reset": True})


async def outage_on(request: web.Request) -> web.Response:
    request.app[STATE_KEY].outage_status = int(request.query.get("status", "503"))
    return json_response(200, {"outage": True})


async def path_knobs(request: web.Request) -> web.Response:
    """Change the arrival jitter and the reading of ``Remaining`` while serving."""
    config = request.app[STATE_KEY].config
    changes: dict[str, Any] = {}
    try:
        if "arrival_jitter_ms" in request.query:
            jitter_ms = float(request.query["arrival_jitter_ms"])
            if not 0 <= jitter_ms <= 60_000:
                raise ValueError(jitter_ms)
            changes["arrival_jitter_ms"] = jitter_ms
        if "remaining_counted_at" in request.query:
            counted_at = request.query["remaining_counted_at"]
            if counted_at not in REMAINING_COUNTED_AT:
                raise ValueError(counted_at)
            changes["remaining_counted_at"] = counted_at
    except ValueError:
        return json_response(400, {"error": "arrival_jitter_ms must be 0-60000, "
                                            f"remaining_counted_at one of {REMAINING_COUNTED_AT}"})
    for name, value in changes.items():
        setattr(config, name, value)
    return json_response(200, {"arrival_jitter_ms": config.arrival_jitter_ms,
                               "remaining_counted_at": config.remaining_counted_at})


async def outage_off(request: web.Request) -> web.Response:
    request.app[STATE_KEY].outage_status = None
    return json_response(200, {"outage": False})


async def redirect(request: web.Request) -> web.Response:
    """``/redirect/...``: a 302 to the same path without the prefix (a misconfigured proxy)."""
    target = request.path.removeprefix("/redirect") + (f"?{request.query_string}"
                                                        if request.query_string else "")
    return web.Response(status=302, headers={"Location": target})


async def not_found(request: web.Request) -> web.Response:
    return error_response(404, "Not Found", "Your request is invalid.")


@web.middleware
async def gateway(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    """What NCBI's front end adds to every answer: its headers, the rate headers, and the
    connection policy (``Keep-Alive: timeout=4, max=40``, ``Connection: close`` on 500s)."""
    state = request.app[STATE_KEY]
    config = state.config
    request[PHID_KEY] = state.phid()
    response = await handler(request)
    if response.prepared:
        return response  # a fault that wrote (or dropped) the connection itself
    headers = response.headers
    if not request.get(FRONT_END_KEY):
        if config.ncbi_headers:
            headers.setdefault("Server", "Finatra")
            headers["X-Datasets-Version"] = DATASETS_VERSION
            headers["Ncbi-Phid"] = request[PHID_KEY]
        rate_headers = dict(request.get(RATE_HEADERS_KEY, {}))
        if rate_headers and config.remaining_counted_at == "answer" and (
                rate_client := request.get(RATE_CLIENT_KEY)) is not None:
            # the other reading of NCBI's count: what the window holds as the answer leaves
            client, limit = rate_client
            rate_headers["X-RateLimit-Remaining"] = str(state.remaining(client, limit,
                                                                        state.clock()))
        for name, value in rate_headers.items():
            headers.setdefault(name, value)
    if response.status == 500:
        response.force_close()
    if config.keepalive_max_requests is not None and request.transport is not None and (
            state.count_answer(request.transport) >= config.keepalive_max_requests):
        response.force_close()
    if response.keep_alive is not False and (keep_alive := config.keep_alive_header()):
        headers["Keep-Alive"] = keep_alive
    return response


def create_app(config: EmulatorConfig | None = None,
               universe: GeneUniverse | None = None) -> web.Application:
    """The emulator as an aiohttp application (mount it on any runner or test server)."""
    config = config or EmulatorConfig()
    app = web.Application(middlewares=[gateway])
    app[STATE_KEY] = EmulatorState(config, universe or GeneUniverse(seed=config.seed))
    # route names are NCBI's operationIds (ENDPOINTS), which ``retired_endpoints`` names
    app.router.add_get(API_PREFIX + "/gene/id/{gene_ids}", gene_by_id,
                       name="gene_reports_by_id")
    app.router.add_get(API_PREFIX + "/gene/id/{gene_ids}/dataset_report",
                       gene_dataset_reports_by_id, name="gene_dataset_reports_by_id")
    app.router.add_post(API_PREFIX + "/gene", gene_dataset_report,  # deprecated by NCBI
                        name="gene_metadata_by_post")
    app.router.add_post(API_PREFIX + "/gene/dataset_report", gene_dataset_report,
                        name="gene_dataset_report")
    add_taxon_routes(app.router)
    app.router.add_get(HISTORY_PATH, gene_history)  # as NCBI's FTP host, at the root
    app.router.add_get("/redirect/{tail:.*}", redirect)
    app.router.add_get("/_emulator/arrivals", arrivals)
    app.router.add_post("/_emulator/reset", reset)
    app.router.add_post("/_emulator/outage", outage_on)
    app.router.add_delete("/_emulator/outage", outage_off)
    app.router.add_post("/_emulator/path", path_knobs)
    app.router.add_route("*", "/{tail:.*}", not_found)
    app.cleanup_ctx.append(_measure_own_lag)
    return app


async def _measure_own_lag(app: web.Application) -> AsyncIterator[None]:
    """Tick for as long as the emulator serves: how late its loop runs (testing/lag.py)."""
    ticker = asyncio.create_task(app[STATE_KEY].lag.run())
    yield
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
