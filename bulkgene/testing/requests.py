"""The emulator's view of a request: GET path and query, or POST JSON body, as one Query.

The two GETs differ as in NCBI's spec: ``/gene/id/{ids}/dataset_report`` has no
``locus_tags``, ``accession_filter`` or ``tax_search_subtree`` (ignored if sent) and adds
``table_format``, ``query`` (free text) and ``types`` (gene types).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from bulkgene.testing.state import DEFAULT_PAGE_SIZE, MAX_GENE_ID


def _parse_ids(raw: str) -> list[int] | None:
    """The path's GeneIDs (comma-separated, ``%2C`` already decoded), or None if invalid."""
    ids: list[int] = []
    for part in raw.split(","):
        token = part.strip()
        if not token.isdigit() or len(token) > 10 or not 1 <= int(token) <= MAX_GENE_ID:
            return None
        ids.append(int(token))
    return ids


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
    table_format: str | None = None
    text: str | None = None  # ``query``: free text the symbol or description must contain
    types: list[str] = field(default_factory=list)  # gene types to keep; empty keeps all
    logged: str = ""  # what the arrival log keeps of it (never the key)

    def signature(self) -> bytes:
        """What a page token is bound to: everything but the token itself."""
        bound = [self.ids, self.returned_content, self.locus_tags, self.sort_field,
                 self.sort_direction, self.tax_search_subtree, self.table_fields,
                 self.accession_filter, self.include_tabular_header, self.table_format,
                 self.text, self.types]
        return hashlib.blake2b(orjson.dumps(bound), digest_size=16).digest()


def query_from_get(request: web.Request, dataset_report: bool = False) -> Query:
    """The query of ``GET /gene/id/{ids}`` or, with ``dataset_report``, of its current twin."""
    query = request.query
    if dataset_report:
        return Query(
            ids=_parse_ids(request.match_info["gene_ids"]),
            page_size=query.get("page_size", str(DEFAULT_PAGE_SIZE)),
            returned_content=query.get("returned_content", "COMPLETE"),
            page_token=query.get("page_token") or None,
            sort_field=query.get("sort.field"),
            sort_direction=query.get("sort.direction"),
            table_fields=query.getall("table_fields", []),
            include_tabular_header=query.get("include_tabular_header",
                                             "INCLUDE_TABULAR_HEADER_FIRST_PAGE_ONLY"),
            table_format=query.get("table_format"),
            text=query.get("query") or None,
            types=query.getall("types", []),
            logged=_logged(request),
        )
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
        logged=_logged(request),
    )


def _logged(request: web.Request) -> str:
    """The query string exactly as sent, less the key."""
    return "&".join(part for part in request.query_string.split("&")
                    if not part.startswith("api_key="))


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
