"""The emulator's taxon routes: a taxon's genes page by page, and its gene counts by type.

``GET /gene/taxon/{taxon}/dataset_report``, the deprecated ``GET /gene/taxon/{taxon}`` and
``POST /gene/dataset_report`` with ``taxon`` in the body page the genes annotated at the
taxon (with ``tax_search_subtree``, at every taxon below it too) in GeneID order, as
``IDS_ONLY``, ``COUNTS_ONLY`` or ``COMPLETE`` reports, filtered by ``types``; ``GET
/gene/taxon/{taxon}/counts`` and ``POST /gene/taxon/counts`` count them by type. ``taxon``
is a tax ID or any of the taxon's names. Behaviour as recorded for ``/gene/id``
(docs/ncbi-gene-taxon.md): ``total_count`` on page 1 only, an opaque token bound to the
query, 500 for a token that is not one, ``{}`` for nothing. Where NCBI is silent the
emulator chooses: an unknown taxon is ``{}``; above species without the subtree, a page
with an ``ABOVE_SPECIES_TAXON`` warning and no reports; a species whose genes all sit at a
strain, a ``NO_GENE_ANNOTATION_FOUND`` warning.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from bulkgene.testing.admission import admit, answer
from bulkgene.testing.state import (
    API_PREFIX,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PHID_KEY,
    STATE_KEY,
    EmulatorState,
    error_response,
    json_response,
    mirror_headers,
    page_body,
)
from bulkgene.testing.taxa import Taxon
from bulkgene.testing.universe import Content


def _warning(code: str, taxon: Taxon) -> dict[str, Any]:
    if code == "ABOVE_SPECIES_TAXON":
        message = (f"The taxon '{taxon.name}' (taxid: {taxon.tax_id}) is above the species "
                   "level: genes are annotated at species or below; use tax_search_subtree "
                   "to include them.")
    else:
        message = (f"There are no genes annotated at the {taxon.rank.lower()} level for "
                   f"'{taxon.name}' (taxid: {taxon.tax_id}).")
    return {"warning": {"gene_warning_code": code, "reason": message, "message": message}}


def _listing(state: EmulatorState, taxon: Taxon, subtree: bool, types: tuple[str, ...]
             ) -> list[int]:
    return state.universe.taxon_genes(taxon, subtree, types)


def _signature(taxon: Taxon, subtree: bool, content: str, types: tuple[str, ...]) -> bytes:
    material = orjson.dumps(["taxon", taxon.tax_id, subtree, content, sorted(types)])
    return hashlib.blake2b(material, digest_size=16).digest()


async def _serve_taxon(request: web.Request, taxon_query: str, *, page_size_text: str,
                       content_text: str, token: str | None, types: tuple[str, ...],
                       subtree: bool, logged: str) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    config = state.config
    log, refusal = await admit(request, logged, None, token is not None)
    if refusal is not None:
        return refusal
    try:
        page_size = int(page_size_text)
        content = Content(content_text)
    except ValueError:
        log(400)
        return error_response(400, "Bad Request", "Invalid argument provided: page_size or "
                              "returned_content.")
    if not 1 <= page_size <= MAX_PAGE_SIZE or not taxon_query.strip():
        log(400)
        return error_response(400, "Bad Request", "Invalid argument provided: taxon or "
                              f"page_size (1..{MAX_PAGE_SIZE}).")
    taxon = state.universe.taxa.find(taxon_query)
    fault = state.draw_fault()
    if taxon is None:
        return await answer(request, state, b"{}", "application/json", 0, fault, log, [1])
    offset = 0
    signature = _signature(taxon, subtree, content.value, types)
    if token is not None:
        found = state.offset_of(token, signature)
        if found is None or fault == "bad_token":
            log(config.bad_token_status, "bad_token" if found is not None else None)
            if config.bad_token_status == 500:
                return error_response(500, "Internal Server Error", "Internal server error.",
                                      request[PHID_KEY])
            return error_response(config.bad_token_status, "Bad Request",
                                  "Invalid argument provided: invalid page token.")
        offset = found
    genes = _listing(state, taxon, subtree, types)
    messages = []
    if taxon.above_species:
        messages.append(_warning("ABOVE_SPECIES_TAXON", taxon))
        if not subtree:
            genes = []
    elif not genes and not types and not subtree and _listing(state, taxon, True, ()):
        messages.append(_warning("NO_GENE_ANNOTATION_FOUND", taxon))
    if not genes and not messages:
        return await answer(request, state, b"{}", "application/json", 0, fault, log, [1])
    page_ids = genes[offset: offset + page_size]
    overlap = min(config.taxon_page_overlap, page_size - 1)
    next_offset = offset + page_size - overlap
    token_out = state.token(next_offset, signature) if offset + page_size < len(genes) else None
    repeated = fault == "repeat_token" and token is not None and token_out is not None
    if repeated:
        token_out = token  # a server bug: the chain loops
    universe = state.universe
    if content is Content.IDS_ONLY:
        reports = [b'{"gene":{"gene_id":"%d"}}' % gene_id for gene_id in page_ids]
    else:
        reports = [b'{"gene":' + universe.gene_bytes(gene_id, content) + b"}"
                   for gene_id in page_ids]
    first = offset == 0 and token is None
    total = len(genes) if first or config.total_count_on_every_page else 0
    body = page_body(reports, total, token_out, messages if first else [])
    mirrors = mirror_headers(config, total, token_out)
    return await answer(request, state, body, "application/json", len(page_ids), fault, log,
                        page_ids or [1], "repeat_token" if repeated else None, mirrors)


def _logged(request: web.Request) -> str:
    """The query string as sent, less the key (as for the GeneID routes)."""
    return "&".join(part for part in request.query_string.split("&")
                    if not part.startswith("api_key="))


async def gene_dataset_reports_by_taxon(request: web.Request) -> web.StreamResponse:
    """``GET /gene/taxon/{taxon}/dataset_report`` and the deprecated ``GET /gene/taxon/{taxon}``."""
    query = request.query
    return await _serve_taxon(
        request, request.match_info["taxon"],
        page_size_text=query.get("page_size", str(DEFAULT_PAGE_SIZE)),
        content_text=query.get("returned_content", "COMPLETE"),
        token=query.get("page_token") or None, types=tuple(query.getall("types", [])),
        subtree=query.get("tax_search_subtree", "false") == "true", logged=_logged(request))


async def taxon_by_body(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """``POST /gene/dataset_report`` whose body names a ``taxon`` instead of GeneIDs."""
    raw_types = body.get("types") or []
    types = tuple(str(t) for t in raw_types) if isinstance(raw_types, list) else ()
    token = body.get("page_token")
    return await _serve_taxon(
        request, str(body.get("taxon") or ""),
        page_size_text=str(body.get("page_size", DEFAULT_PAGE_SIZE)),
        content_text=str(body.get("returned_content", "COMPLETE")),
        token=str(token) if token else None, types=types,
        subtree=body.get("tax_search_subtree") is True,
        logged=orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode())


async def _counts(request: web.Request, taxon_query: str, logged: str) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    log, refusal = await admit(request, logged, None, False)
    if refusal is not None:
        return refusal
    taxon = state.universe.taxa.find(taxon_query)
    fault = state.draw_fault()
    if taxon is None:
        return await answer(request, state, b"{}", "application/json", 0, fault, log, [1])
    counts = Counter(state.universe.gene_type(gene_id)
                     for gene_id in _listing(state, taxon, True, ()))
    report = [{"gene_type": gene_type, "count": count}
              for gene_type, count in sorted(counts.items(), key=lambda item: -item[1])]
    body = orjson.dumps({"report": report}) if report else b"{}"
    return await answer(request, state, body, "application/json", 0, fault, log, [1])


async def gene_counts_for_taxon(request: web.Request) -> web.StreamResponse:
    """``GET /gene/taxon/{taxon}/counts``."""
    return await _counts(request, request.match_info["taxon"], _logged(request))


async def gene_counts_for_taxon_by_post(request: web.Request) -> web.StreamResponse:
    """``POST /gene/taxon/counts`` with ``{"taxon": ...}``."""
    try:
        body = await request.json(loads=orjson.loads)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("taxon"), str):
        return json_response(400, {"error": "Bad Request", "code": 400,
                                   "message": "Invalid argument provided: taxon."})
    return await _counts(request, body["taxon"],
                         orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode())


def add_taxon_routes(router: web.UrlDispatcher) -> None:
    """Register the taxon routes (names are NCBI's operationIds, as ``retired_endpoints``
    names them); the POST by body is dispatched from ``/gene/dataset_report``."""
    router.add_get(API_PREFIX + "/gene/taxon/{taxon}/dataset_report",
                   gene_dataset_reports_by_taxon, name="gene_dataset_reports_by_taxon")
    router.add_get(API_PREFIX + "/gene/taxon/{taxon}/counts", gene_counts_for_taxon,
                   name="gene_counts_for_taxon")
    router.add_post(API_PREFIX + "/gene/taxon/counts", gene_counts_for_taxon_by_post,
                    name="gene_counts_for_taxon_by_post")
    router.add_get(API_PREFIX + "/gene/taxon/{taxon}", gene_dataset_reports_by_taxon,
                   name="gene_reports_by_taxon")  # deprecated by NCBI
