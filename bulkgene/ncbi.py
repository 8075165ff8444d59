"""Everything specific to NCBI's gene report API: request URLs and validating pages into answers.

A page is checked completely before anything from it is kept: it parses, has the
``v2reportsGeneDataReportPage`` shape, every report answers an ID this batch asked for (by
``query``, since replaced genes come back under their new GeneID), and no gene arrives twice
for the same query. A batch's pages accumulate in a BatchAnswer, which turns into the lines
to write and the accounting (found, missing with NCBI's reason, replaced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

NOT_RETURNED = "NOT_RETURNED"


class InvalidPage(Exception):
    """A 200 response whose body can't be used; the page is fetched again."""


def gene_id_path(gene_ids: tuple[int, ...]) -> str:
    """The path of ``GET /gene/id/{gene_ids}``; raw commas keep 1000 IDs near 9 KB."""
    return "/gene/id/" + ",".join(map(str, gene_ids))


def page_query(page_size: int, page_token: str | None, returned_content: str = "COMPLETE"
               ) -> dict[str, str]:
    """Query parameters of one page request (the API's defaults are left out)."""
    query = {} if returned_content == "COMPLETE" else {"returned_content": returned_content}
    query["page_size"] = str(page_size)
    if page_token:
        query["page_token"] = page_token
    return query


@dataclass(frozen=True, slots=True)
class Page:
    """One validated page: its report matches and where to go next."""

    reports: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    total_count: int
    next_page_token: str | None


def parse_page(body: bytes) -> Page:
    """Parse and shape-check a JSON page; raises InvalidPage."""
    if body[:1] == b"<" or body.lstrip()[:1] == b"<":
        raise InvalidPage("an HTML page came back instead of JSON")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidPage(f"the body is not valid JSON ({exc.msg} at byte {exc.pos})") from None
    if not isinstance(data, dict):
        raise InvalidPage("the body is JSON but not an object")
    reports = data.get("reports", [])
    messages = data.get("messages", [])
    total_count = data.get("total_count", 0)
    token = data.get("next_page_token") or None
    if not isinstance(reports, list) or not isinstance(messages, list):
        raise InvalidPage("'reports' or 'messages' is not a list")
    if not isinstance(total_count, int) or total_count < 0:
        raise InvalidPage("'total_count' is not a non-negative integer")
    if token is not None and not isinstance(token, str):
        raise InvalidPage("'next_page_token' is not a string")
    if not reports and total_count and "reports" not in data:
        raise InvalidPage(f"the page claims {total_count} reports but has no 'reports'")
    return Page(reports, messages, total_count, token)


def _message_codes(messages: list[Any]) -> dict[int, str]:
    """GeneID -> warning/error code, from page-level ``messages``."""
    codes: dict[int, str] = {}
    for message in messages:
        if not isinstance(message, dict):
            continue
        for kind, code_key in (("warning", "gene_warning_code"), ("error", "gene_error_code")):
            detail = message.get(kind)
            if not isinstance(detail, dict):
                continue
            code = str(detail.get(code_key) or kind.upper())
            identifiers = detail.get("invalid_identifiers") or [detail.get("unrecognized_identifier")]
            for identifier in identifiers:
                if isinstance(identifier, str) and identifier.isdigit():
                    codes[int(identifier)] = code
    return codes


def _warning_code(report: dict[str, Any]) -> str | None:
    warnings = report.get("warnings") or ([report["warning"]] if "warning" in report else [])
    for warning in warnings:
        if isinstance(warning, dict) and warning.get("gene_warning_code"):
            return str(warning["gene_warning_code"])
    return None


@dataclass(frozen=True, slots=True)
class Record:
    """One report match to write: its GeneID, the IDs it answers, its NDJSON line."""

    gene_id: int
    queries: tuple[int, ...]
    line: bytes

    @property
    def is_replacement(self) -> bool:
        return self.gene_id not in self.queries


@dataclass
class BatchAnswer:
    """The pages of one batch so far; ``add`` validates a page before keeping any of it."""

    gene_ids: tuple[int, ...]
    records: list[Record] = field(default_factory=list)
    answered: set[int] = field(default_factory=set)
    reasons: dict[int, str] = field(default_factory=dict)
    total_count: int | None = None
    pages: int = 0
    _seen: set[tuple[int, tuple[int, ...]]] = field(default_factory=set)
    _tokens: set[str] = field(default_factory=set)
    _requested: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        self._requested = frozenset(self.gene_ids)

    def add(self, page: Page) -> None:
        """Validate ``page`` against this batch and keep it; raises InvalidPage."""
        new_records: list[Record] = []
        new_answered: set[int] = set()
        new_reasons: dict[int, str] = {}
        seen_here: set[tuple[int, tuple[int, ...]]] = set()
        for report in page.reports:
            if not isinstance(report, dict):
                raise InvalidPage("a report is not a JSON object")
            raw_queries = report.get("query")
            if not isinstance(raw_queries, list) or not raw_queries:
                raise InvalidPage("a report has no 'query' list")
            queries = tuple(_as_gene_id(q) for q in raw_queries)
            strangers = [q for q in queries if q not in self._requested]
            if strangers:
                raise InvalidPage(f"a report answers GeneID {strangers[0]}, which this batch "
                                  "did not ask for")
            gene = report.get("gene")
            if gene is None:
                code = _warning_code(report) or NOT_RETURNED
                new_reasons.update((q, code) for q in queries)
                continue
            if not isinstance(gene, dict):
                raise InvalidPage("a report's 'gene' is not an object")
            gene_id = _as_gene_id(gene.get("gene_id"))
            identity = (gene_id, queries)
            if identity in self._seen or identity in seen_here:
                raise InvalidPage(f"GeneID {gene_id} arrived twice for the same query")
            seen_here.add(identity)
            new_answered.update(queries)
            new_records.append(Record(gene_id, queries, orjson.dumps(report) + b"\n"))
        if page.next_page_token is not None and page.next_page_token in self._tokens:
            raise InvalidPage("the server sent the same next_page_token twice")
        if self.total_count is None:
            self.total_count = page.total_count
        self.pages += 1
        self.records.extend(new_records)
        self.answered.update(new_answered)
        for gene_id, code in _message_codes(page.messages).items():
            new_reasons.setdefault(gene_id, code)
        self.reasons.update(new_reasons)
        self._seen.update(seen_here)
        if page.next_page_token is not None:
            self._tokens.add(page.next_page_token)

    def check_complete(self) -> None:
        """After the last page: the reports add up to what the first page promised."""
        if self.total_count is not None and len(self.records) != self.total_count:
            raise InvalidPage(f"the pages held {len(self.records)} reports, but total_count "
                              f"said {self.total_count}")

    def missing(self) -> list[tuple[int, str]]:
        """Requested IDs no report answered, with NCBI's reason code where it gave one."""
        return [(gene_id, self.reasons.get(gene_id, NOT_RETURNED))
                for gene_id in self.gene_ids if gene_id not in self.answered]


def _as_gene_id(value: Any) -> int:
    """A GeneID field (a decimal string in the API, tolerated as an int) as an int."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise InvalidPage(f"{value!r} is not a GeneID")
