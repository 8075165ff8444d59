"""What every emulated API request goes through, whatever its route: admission and the answer.

Admission holds the request for its arrival jitter, then checks, in NCBI's order as the
emulator models it: a retired route, an over-long request line (414), an outage, a bad key
(401), the per-key rate window (429 with ``Retry-After``); it sets the rate headers the
gateway middleware adds. The answer waits the configured latency and sends the body, or the
fault the request drew instead; both are logged in the arrival log (never the key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from bulkgene.testing.faults import faulty
from bulkgene.testing.state import (
    RATE_CLIENT_KEY,
    RATE_HEADERS_KEY,
    RETIRED_MESSAGE,
    STATE_KEY,
    Arrival,
    EmulatorState,
    error_response,
    json_response,
)

Log = Callable[..., None]  # log(status, fault=None)


async def admit(request: web.Request, logged: str, ids: list[int] | None, has_token: bool
                ) -> tuple[Log, web.Response | None]:
    """The request's logger, and the refusal it gets before its route sees it (or None)."""
    state = request.app[STATE_KEY]
    config = state.config
    if (delay_s := state.arrival_delay_s()) > 0:
        # the server counts arrivals, not sends: a request held here is judged when it lands
        await asyncio.sleep(delay_s)
    now = state.clock()
    key = request.headers.get("api-key") or request.query.get("api_key")
    limit = config.keyed_requests_per_second if key else config.anonymous_requests_per_second
    client = f"key:{key}" if key else f"ip:{request.remote}"

    def log(status: int, fault: str | None = None) -> None:
        state.log(Arrival(now, request.method, request.path, logged,
                          len(ids or ()), ids[0] if ids else None,
                          has_token, key is not None, status, fault,
                          request.headers.get("Accept", ""), state.lag.worst_in_window()))

    def rate_headers(remaining: int) -> None:
        # a server without a limit (rate_limit off) has none to name
        if config.rate_limit and config.rate_limit_headers and (
                not config.rate_limit_headers_only_on_429):
            request[RATE_HEADERS_KEY] = {"X-RateLimit-Limit": f"{limit:g}",
                                         "X-RateLimit-Remaining": str(remaining)}
            request[RATE_CLIENT_KEY] = (client, limit)  # to count again as the answer leaves

    rate_headers(state.remaining(client, limit, now))  # answers before the window counts it
    if request.match_info.route.name in config.retired_endpoints:
        log(config.retired_status, "retired")
        return log, json_response(config.retired_status, {"error": RETIRED_MESSAGE})
    if len(request.raw_path) > config.max_request_line_bytes:
        log(414)
        return log, error_response(414, "URI Too Long", "The request URI is too long.")
    if state.outage_status is not None:
        log(state.outage_status, "outage")
        return log, error_response(state.outage_status, "Service Unavailable",
                                   "The service is down.")
    if key is not None and config.valid_keys is not None and key not in config.valid_keys:
        log(401, "bad_key")
        return log, error_response(401, "Unauthorized", "Invalid API key.")
    admitted, remaining = state.admit(client, limit, now) if config.rate_limit else (True, 0)
    if not admitted:
        log(429, "rate_limit")
        headers = {"Retry-After": str(config.retry_after_s)}
        if config.rate_limit_headers:
            headers.update({"X-RateLimit-Limit": f"{limit:g}", "X-RateLimit-Remaining": "0"})
        return log, json_response(429, {"error": "Too Many Requests", "code": 429,
                                        "message": "API rate limit exceeded"}, headers)
    rate_headers(remaining)
    return log, None


async def answer(request: web.Request, state: EmulatorState, body: bytes, content_type: str,
                 genes: int, fault: str | None, log: Log, ids: list[int],
                 logged_fault: str | None = None,
                 headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Send ``body`` after the configured latency, or the drawn fault instead."""
    config = state.config
    delay = (config.latency_s + config.latency_per_gene_s * genes) * state.jitter()
    if delay > 0:
        await asyncio.sleep(delay)
    if fault is not None and fault not in ("bad_token", "repeat_token"):
        response = await faulty(request, state, fault, ids, body)
        log(response.status if fault not in ("truncate", "reset", "stall") else 0, fault)
        return response
    log(200, logged_fault)
    return web.Response(body=body, content_type=content_type, headers=headers)
