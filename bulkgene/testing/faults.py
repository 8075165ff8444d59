"""The emulator's injected faults: what a request that drew one gets instead of its page."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import orjson
from aiohttp import web

from bulkgene.testing.state import (
    DOCS,
    FRONT_END_KEY,
    MAX_GENE_ID,
    PHID_KEY,
    EmulatorState,
    error_response,
    json_response,
    page_body,
)
from bulkgene.testing.universe import Content

_HTML_403 = (b"<!DOCTYPE html><html><head><title>403 Error - NCBI</title></head><body>"
             b"<h1>Access Denied</h1><p>Your access to NCBI has been blocked.</p></body></html>")
_HTML_200 = (b"<!DOCTYPE html><html><head><title>NCBI</title></head><body>"
             b"<p>Service temporarily unavailable. Please try again later.</p></body></html>")


async def faulty(request: web.Request, state: EmulatorState, fault: str, ids: list[int],
                  body: bytes) -> web.StreamResponse:
    """Answer with the drawn fault instead of the page."""
    if fault in ("http_500", "http_502", "http_503"):
        status = int(fault[-3:])
        return error_response(status, "Internal Server Error" if status == 500 else "Bad Gateway"
                      if status == 502 else "Service Unavailable", "Upstream error.",
                      request[PHID_KEY] if status == 500 else None)
    if fault == "apache_404":
        # recorded once: an Apache front end's 404, labelled HTML, with NCBI's JSON inside
        request[FRONT_END_KEY] = True
        return web.Response(status=404, body=orjson.dumps(
            {"error": "Not Found", "code": 404, "message": f"Your request is invalid. {DOCS}"})
            + b"\n", content_type="text/html", charset="iso-8859-1",
            headers={"Server": "Apache"})
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
        return json_response(429, {"error": "Too Many Requests", "code": 429,
                           "message": "API rate limit exceeded"}, headers)
    if fault == "missing_reports":
        return json_response(200, {"total_count": len(ids)})
    if fault == "foreign_gene":
        stranger = max(ids) + 1 if max(ids) < MAX_GENE_ID else 1
        match = (b'{"gene":' + state.universe.gene_bytes(stranger, Content.IDS_ONLY)
                 + b',"query":["%d"]}' % stranger)
        return web.Response(body=page_body([match], 1, None, []),
                            content_type="application/json")
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    if fault == "stall":
        await response.prepare(request)
        await response.write(body[:1])
        await asyncio.sleep(state.config.stall_s)
        return response
    if fault == "truncate":
        response.content_length = len(body)
        try:
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
        except ConnectionError:
            return response  # the client left first: what the fault does anyway
        if request.transport is not None:  # None: the client has gone already
            request.transport.close()
        return response
    # reset: no response at all
    if request.transport is not None:
        request.transport.abort()
    return response
