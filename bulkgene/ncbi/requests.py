"""The HTTP request for one page of gene reports, for each endpoint, built from one field table.

    gene-id          GET  /gene/id/{ids}                  (deprecated by NCBI)
    gene-id-report   GET  /gene/id/{ids}/dataset_report   (its current twin; fewer parameters)
    dataset-report   POST /gene/dataset_report            (JSON body; what NCBI's CLI uses)

Arrays travel as repeated query keys (GET) or JSON arrays (POST), booleans lowercase, the
sort as the literal ``sort.field``/``sort.direction`` in a GET and as an array of objects
in a body. API defaults are left out, in the order of NCBI's generated client. GET puts
the IDs in the path with raw commas, so a GET request holds as many IDs as fit the URL
budget (``pack``); a POST takes a whole batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from bulkgene.config import ApiQuery

# gateways commonly refuse request lines over 8 KB (nginx's default): stay below it
MAX_PATH_BYTES = 7800
ACCEPT = {"json": "application/json", "ndjson": "application/x-ndjson",
          "tsv": "text/tab-separated-values"}
GET_ENDPOINTS = frozenset({"gene-id", "gene-id-report"})
# where to go when NCBI retires the chosen endpoint: current ones first, the same records
FALLBACK_ENDPOINTS = ("gene-id-report", "dataset-report", "gene-id")


@dataclass(frozen=True)
class _Param:
    """One API parameter: the ApiQuery field it comes from and its name on the wire."""

    field: str
    key: str
    omit: object = None  # the API's default: not sent
    get_only: bool = False  # POST carries it differently (the sort)
    not_on: frozenset[str] = frozenset()


# NCBI's generated client's order; gene-id-report drops three parameters (docs/ncbi-api.md §1)
_PARAMS = (
    _Param("returned_content", "returned_content", omit="COMPLETE"),
    _Param("locus_tags", "locus_tags", omit=(), not_on=frozenset({"gene-id-report"})),
    _Param("table_fields", "table_fields", omit=()),
    _Param("include_tabular_header", "include_tabular_header"),
    _Param("page_size", "page_size"),
    _Param("page_token", "page_token"),
    _Param("accession_filter", "accession_filter", omit=(),
           not_on=frozenset({"gene-id-report"})),
    _Param("tax_search_subtree", "tax_search_subtree", omit=False,
           not_on=frozenset({"gene-id-report"})),
    _Param("sort_field", "sort.field", get_only=True),
    _Param("sort_direction", "sort.direction", get_only=True),
)


@dataclass(frozen=True)
class PageRequest:
    """One page's HTTP request: method, path under the base URL, query, JSON body."""

    method: str
    path: str
    params: list[tuple[str, str]]
    json_body: dict[str, Any] | None = None
    accept: str = "application/json"


def _values(query: ApiQuery, page_token: str | None, endpoint: str
            ) -> Iterator[tuple[_Param, Any]]:
    for param in _PARAMS:
        value = page_token if param.field == "page_token" else getattr(query, param.field)
        if value is None or value == param.omit or endpoint in param.not_on:
            continue
        yield param, value


def ids_path(endpoint: str, gene_ids: tuple[int, ...]) -> str:
    """The path of a GET request for ``gene_ids``."""
    suffix = "/dataset_report" if endpoint == "gene-id-report" else ""
    return "/gene/id/" + ",".join(map(str, gene_ids)) + suffix


def page_request(query: ApiQuery, endpoint: str, gene_ids: tuple[int, ...],
                 page_token: str | None) -> PageRequest:
    """The request for one page on ``endpoint``, encoded exactly as the API defines it."""
    accept = ACCEPT[query.format]
    if endpoint == "dataset-report":
        body: dict[str, Any] = {"gene_ids": list(gene_ids)}
        for param, value in _values(query, page_token, endpoint):
            if not param.get_only:
                body[param.key] = list(value) if isinstance(value, tuple) else value
        if query.sort_field:
            sort = {"field": query.sort_field}
            if query.sort_direction:
                sort["direction"] = query.sort_direction
            body["sort"] = [sort]
        return PageRequest("POST", "/gene/dataset_report", [], body, accept)
    params: list[tuple[str, str]] = []
    for param, value in _values(query, page_token, endpoint):
        if isinstance(value, tuple):
            params.extend((param.key, item) for item in value)
        elif isinstance(value, bool):
            params.append((param.key, "true" if value else "false"))
        else:
            params.append((param.key, str(value)))
    return PageRequest("GET", ids_path(endpoint, gene_ids), params, None, accept)


def id_path_budget(query: ApiQuery, endpoint: str, base_url: str) -> int:
    """Bytes the IDs' part of a GET path may take under ``base_url``: the base path and the
    query string take the rest of the request line's budget."""
    params = page_request(query, endpoint, (), None).params
    base_path = urlsplit(base_url).path.rstrip("/")
    return MAX_PATH_BYTES - len(base_path) - len(urlencode(params)) - 1


def pack(endpoint: str, gene_ids: tuple[int, ...], max_path_bytes: int = MAX_PATH_BYTES
         ) -> list[tuple[int, ...]]:
    """``gene_ids`` in as few requests as the endpoint allows: GET paths within the budget.

    Greedy in input order: each part holds as many IDs as fit (about 780 nine-digit IDs),
    so a 1000-ID batch of long IDs takes two requests, not one per half of 500.
    """
    if endpoint not in GET_ENDPOINTS or not gene_ids:
        return [gene_ids]
    fixed = len(ids_path(endpoint, ()))
    parts: list[tuple[int, ...]] = []
    current: list[int] = []
    length = fixed
    for gene_id in gene_ids:
        cost = len(str(gene_id)) + (1 if current else 0)
        if current and length + cost > max_path_bytes:
            parts.append(tuple(current))
            current, length = [], fixed
            cost = len(str(gene_id))
        current.append(gene_id)
        length += cost
    parts.append(tuple(current))
    return parts
