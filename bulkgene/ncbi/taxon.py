"""The taxon routes: the request for a page of a taxon's GeneIDs or its counts, and their answers.

Enumeration asks ``POST /gene/dataset_report`` with ``{"taxon": T, "returned_content":
"IDS_ONLY", "page_size": 1000, ...}``, as NCBI's own CLI does: the body carries any name as
it is, where a GET would put spaces and ``/`` into the URL path (docs/ncbi-gene-taxon.md).
An answer is checked whole before anything in it is kept: it parses, has the page shape,
every report names a GeneID, and ``total_count`` is a count. GeneIDs that are not integers in
1..2**31-1 are counted and skipped, as NCBI's CLI skips what does not parse as int32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from bulkgene.config import GENE_TYPES
from bulkgene.ncbi.pages import InvalidPage, decode_json
from bulkgene.ncbi.requests import PageRequest

TAXON_PAGE_SIZE = 1000
MAX_GENE_ID = 2**31 - 1
__all__ = ["GENE_TYPES", "NOTHING_FOUND", "TAXON_PAGE_SIZE", "Notice", "TaxonPage",
           "parse_taxon_counts", "parse_taxon_page", "taxon_counts_request",
           "taxon_page_request", "types_had_instead"]
NOTHING_FOUND = "NOTHING_FOUND"  # the reason for a taxon answered by {} or no reports


def taxon_page_request(taxon: str, *, gene_types: tuple[str, ...] = (),
                       include_subtree: bool = False, page_token: str | None = None,
                       page_size: int = TAXON_PAGE_SIZE) -> PageRequest:
    """One IDS_ONLY page of ``taxon``'s genes (``page_token`` None for page 1)."""
    body: dict[str, Any] = {"taxon": taxon, "returned_content": "IDS_ONLY",
                            "page_size": page_size}
    if gene_types:
        body["types"] = list(gene_types)
    if include_subtree:
        body["tax_search_subtree"] = True
    if page_token is not None:
        body["page_token"] = page_token
    return PageRequest("POST", "/gene/dataset_report", [], body, "application/json")


def taxon_counts_request(taxon: str) -> PageRequest:
    """``POST /gene/taxon/counts``: the taxon's genes counted by type (the body form, for the
    same reason as the pages: a name travels as it is)."""
    return PageRequest("POST", "/gene/taxon/counts", [], {"taxon": taxon}, "application/json")


class _Warning(msgspec.Struct):
    gene_warning_code: str = ""
    reason: str = ""
    message: str = ""


class _Error(msgspec.Struct):
    gene_error_code: str = ""
    taxonomy_error_code: str = ""
    reason: str = ""
    message: str = ""


class _Message(msgspec.Struct):
    warning: _Warning | None = None
    error: _Error | None = None


class _Gene(msgspec.Struct):
    gene_id: str = ""


class _Report(msgspec.Struct):
    gene: _Gene | None = None


class _Page(msgspec.Struct):
    reports: list[_Report] = []
    messages: list[_Message] = []
    total_count: int | None = None
    next_page_token: str | None = None
    # NCBI's error envelope ({"error", "code", "message"}): never a page, whatever the status
    error: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    code: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_PAGE = msgspec.json.Decoder(_Page)


@dataclass(frozen=True)
class Notice:
    """A warning or error NCBI attached to the page: its code and its words."""

    code: str
    text: str


@dataclass
class TaxonPage:
    """One page of a taxon's GeneIDs, validated."""

    gene_ids: list[int]
    total_count: int | None  # None: the page has no count (NCBI sends it on page 1 only)
    next_page_token: str | None
    notices: list[Notice] = field(default_factory=list)
    unusable: int = 0  # reports whose gene_id is not a GeneID bulkgene can ask for


def _gene_id(value: str) -> int | None:
    if 0 < len(value) <= 10 and value.isascii() and value.isdigit():
        number = int(value)
        if 1 <= number <= MAX_GENE_ID:
            return number
    return None


def _notices(messages: list[_Message]) -> list[Notice]:
    notices = []
    for message in messages:
        if (warning := message.warning) is not None:
            notices.append(Notice(warning.gene_warning_code or "WARNING",
                                  (warning.message or warning.reason)[:300]))
        if (error := message.error) is not None:
            notices.append(Notice(error.gene_error_code or error.taxonomy_error_code or "ERROR",
                                  (error.message or error.reason)[:300]))
    return notices


def parse_taxon_page(body: bytes) -> TaxonPage:
    """Parse and check one IDS_ONLY page; raises InvalidPage (the page is fetched again)."""
    page = decode_json(body, _PAGE, "a gene report page")
    if page.error is not msgspec.UNSET or page.code is not msgspec.UNSET:
        raise InvalidPage("the server sent an error instead of a page")
    if page.total_count is not None and page.total_count < 0:
        raise InvalidPage("'total_count' is not a count")
    if page.next_page_token == "":
        page.next_page_token = None  # "When page_token is empty, all results have been retrieved"
    if len(page.reports) > TAXON_PAGE_SIZE:
        # asked for pages of 1000: a bigger one would let a server grow a listing unbounded
        raise InvalidPage(f"the page holds {len(page.reports)} reports, more than the "
                          f"{TAXON_PAGE_SIZE} a page was asked for")
    gene_ids: list[int] = []
    unusable = 0
    for report in page.reports:
        if report.gene is None or not report.gene.gene_id:
            raise InvalidPage("a report of the taxon's page names no GeneID")
        gene_id = _gene_id(report.gene.gene_id)
        if gene_id is None:
            unusable += 1
        else:
            gene_ids.append(gene_id)
    return TaxonPage(gene_ids, page.total_count, page.next_page_token, _notices(page.messages),
                     unusable)


class _TypeCount(msgspec.Struct):
    gene_type: str = ""
    count: int = 0


class _Counts(msgspec.Struct):
    report: list[_TypeCount] = []
    error: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_COUNTS = msgspec.json.Decoder(_Counts)


def parse_taxon_counts(body: bytes) -> list[tuple[str, int]]:
    """``v2GeneCountsByTaxonReply`` as (gene type as NCBI spells it, count) pairs; ``{}``
    (an unknown taxon) is an empty list."""
    counts = decode_json(body, _COUNTS, "a gene count reply")
    if counts.error is not msgspec.UNSET:
        raise InvalidPage("the server sent an error instead of counts")
    if any(item.count < 0 for item in counts.report):
        raise InvalidPage("a gene count is negative")
    return [(item.gene_type[:60] or "UNSPECIFIED", item.count) for item in counts.report]


def _type_key(gene_type: str) -> str:
    """A gene type however NCBI spells it: ``PROTEIN_CODING``, ``protein-coding``."""
    return gene_type.replace("-", "").replace("_", "").lower()


def types_had_instead(by_type: list[tuple[str, int]], asked: tuple[str, ...]
                      ) -> list[tuple[str, int]] | None:
    """The types a taxon has genes of (its counts), when it has genes but none of the
    ``asked`` types; None otherwise (no filter, no genes at all: an unknown taxon, or some
    of the types asked)."""
    had = [(gene_type, count) for gene_type, count in by_type if count > 0]
    wanted = {_type_key(gene_type) for gene_type in asked}
    if not asked or not had or any(_type_key(gene_type) in wanted for gene_type, _ in had):
        return None
    return had
