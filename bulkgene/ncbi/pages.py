"""Validating NCBI's answers: a JSON or JSON-lines page of gene reports into a batch's answer.

A page is checked completely before anything from it is kept: it parses, has the
``v2reportsGeneDataReportPage`` shape (decoded with msgspec: see ``parse_page``), every
report answers an ID this batch asked for (by ``query``, since replaced genes come back
under their new GeneID), and no gene arrives twice for the same query. A batch's pages
accumulate in a BatchAnswer, which turns into the lines to write and the accounting
(found, missing with NCBI's reason, replaced).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import orjson

from bulkgene.model import Record

_T = TypeVar("_T")

NOT_RETURNED = "NOT_RETURNED"
REPLACED_GENE_ID = "REPLACED_GENE_ID"


class InvalidPage(Exception):
    """A 200 response whose body can't be used; the page is fetched again."""


class BrokenChain(InvalidPage):
    """The page chain itself is wrong (a token came back twice); start the batch over."""


class _ReplacedId(msgspec.Struct):
    requested: str = ""
    returned: str = ""


class _Warning(msgspec.Struct):
    gene_warning_code: str = ""
    unrecognized_identifier: str = ""
    replaced_id: _ReplacedId | None = None


class _Error(msgspec.Struct):
    gene_error_code: str = ""
    invalid_identifiers: list[str] = []


class _Message(msgspec.Struct):
    warning: _Warning | None = None
    error: _Error | None = None


class _GeneRef(msgspec.Struct):
    gene_id: str


_NO_GENE = msgspec.Raw(b"null")


class _ReportFields(msgspec.Struct):
    """The few fields of a report match that bulkgene checks; the rest stays raw bytes."""

    query: list[str] = []
    gene: msgspec.Raw = _NO_GENE  # kept as bytes: written as is with --record gene
    warnings: list[_Warning] = []
    warning: _Warning | None = None


class Page(msgspec.Struct):
    """One page (``v2reportsGeneDataReportPage``); each report kept as the bytes received."""

    reports: list[msgspec.Raw] | msgspec.UnsetType = msgspec.UNSET
    messages: list[_Message] = []
    total_count: int | None = 0  # None: a JSON-lines answer, which has no count
    next_page_token: str | None = None
    # NCBI's error envelope ({"error", "code", "message"}): never a page, whatever the status
    error: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    message: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET

    @property
    def report_list(self) -> list[msgspec.Raw]:
        return [] if self.reports is msgspec.UNSET else self.reports


_PAGE_DECODER = msgspec.json.Decoder(Page)
_REPORT_DECODER = msgspec.json.Decoder(_ReportFields)
_GENE_DECODER = msgspec.json.Decoder(_GeneRef)



def decode_json(body: bytes, decoder: msgspec.json.Decoder[_T], what: str) -> _T:
    """``body`` decoded by ``decoder``; InvalidPage (the page is fetched again) for an HTML
    page or a body that is not ``what``."""
    if body.lstrip()[:1] == b"<":
        raise InvalidPage("an HTML page came back instead of JSON")
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidPage(f"the body is not {what} ({exc})") from None


def parse_page(body: bytes) -> Page:
    """Parse and shape-check a JSON page; raises InvalidPage.

    msgspec validates the whole body but builds Python objects only for the fields checked
    here: ten times cheaper than a full parse of a 5 MB page, which keeps the event loop
    (and so the request pacing) on time. Reports are written as the bytes the server sent.
    """
    page = decode_json(body, _PAGE_DECODER, "a valid report page")
    if page.error is not msgspec.UNSET:
        raise InvalidPage(f"the server sent an error instead of a page: "
                          f"{bytes(page.error)[:200].decode('utf-8', 'replace')}")
    if page.total_count is None or page.total_count < 0:
        raise InvalidPage("'total_count' is not a count")
    if page.reports is msgspec.UNSET and page.total_count:
        raise InvalidPage(f"the page claims {page.total_count} reports but has no 'reports'")
    return page


def parse_ndjson(body: bytes) -> Page:
    """An ``application/x-ndjson`` answer (every match of the batch, one per line) as a Page.

    NDJSON has no ``total_count`` to check against: completeness rests on the HTTP framing
    (a cut body is an error) and on the last line ending in a newline.
    """
    if body.lstrip()[:1] == b"<":
        raise InvalidPage("an HTML page came back instead of JSON lines")
    if body and not body.endswith(b"\n"):
        raise InvalidPage("the JSON lines end in a torn line")
    lines = [msgspec.Raw(line) for line in body.splitlines() if line.strip()]
    return Page(reports=lines, total_count=None)  # BatchAnswer.add checks every line


def _message_codes(messages: list[_Message]) -> dict[int, str]:
    """GeneID -> warning/error code, from page-level ``messages``."""
    codes: dict[int, str] = {}
    for message in messages:
        if message.warning is not None and _is_decimal(
                message.warning.unrecognized_identifier):
            codes[int(message.warning.unrecognized_identifier)] = (
                message.warning.gene_warning_code or "WARNING")
        if message.error is not None:
            for identifier in message.error.invalid_identifiers:
                if _is_decimal(identifier):
                    codes[int(identifier)] = message.error.gene_error_code or "ERROR"
    return codes


def _warning_code(report: _ReportFields) -> str | None:
    warnings = report.warnings or ([report.warning] if report.warning else [])
    return next((w.gene_warning_code for w in warnings if w.gene_warning_code), None)


def _marks_replacement(report: _ReportFields, query: int, gene_id: int) -> bool:
    """Whether ``report`` says that ``query`` was replaced by ``gene_id``.

    NCBI marks every replacement with a ``REPLACED_GENE_ID`` warning naming the requested
    and returned GeneIDs (docs/ncbi-api.md §3): a
    report answering one GeneID with another gene and no such warning is a server answering
    wrongly, not a merged gene, and must not be recorded as "replaced".
    """
    for warning in report.warnings or ([report.warning] if report.warning else []):
        if warning.gene_warning_code != REPLACED_GENE_ID:
            continue
        named = warning.replaced_id
        if named is None or (_names(named.requested, query) and _names(named.returned, gene_id)):
            return True
    return False


def _names(field: str, gene_id: int) -> bool:
    """An optional GeneID field of a warning: absent, or naming ``gene_id``."""
    return not field or (_is_decimal(field) and int(field) == gene_id)


def _line(raw: msgspec.Raw | bytes) -> bytes:
    """A JSON value as one NDJSON line: the server's bytes, re-encoded only if they span lines."""
    data = bytes(raw)
    try:  # JSON is UTF-8: bytes that aren't would make the shard unreadable to every tool
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPage(f"a report is not valid UTF-8 ({exc.reason} at byte {exc.start})"
                          ) from None
    if b"\n" in data or b"\r" in data:
        data = orjson.dumps(orjson.loads(data))
    return data + b"\n"


@dataclass
class BatchAnswer:
    """The pages of one batch so far; ``add`` validates a page before keeping any of it."""

    gene_ids: tuple[int, ...]
    gene_only: bool = False  # --record gene: write the descriptor, not the report match
    records: list[Record] = field(default_factory=list)
    answered: set[int] = field(default_factory=set)
    reasons: dict[int, str] = field(default_factory=dict)
    total_count: int | None = None
    pages: int = 0
    reports: int = 0  # gene reports received (a gene under two query lists counts twice)
    _gene_index: dict[int, int] = field(default_factory=dict)  # gene -> its place in records
    _gene_of: dict[int, int] = field(default_factory=dict)  # query -> the gene answering it
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
        reports = 0
        for raw in page.report_list:
            try:
                report = _REPORT_DECODER.decode(raw)
            except msgspec.DecodeError as exc:
                raise InvalidPage(f"a report has the wrong shape ({exc})") from None
            if not report.query:
                raise InvalidPage("a report has no 'query' list")
            queries = tuple(_as_gene_id(q) for q in report.query)
            strangers = [q for q in queries if q not in self._requested]
            if strangers:
                raise InvalidPage(f"a report answers GeneID {strangers[0]}, which this batch "
                                  "did not ask for")
            gene = report.gene
            if gene == _NO_GENE:  # absent or null: a query-only match
                code = _warning_code(report) or NOT_RETURNED
                new_reasons.update((q, code) for q in queries)
                continue
            try:
                gene_id = _as_gene_id(_GENE_DECODER.decode(gene).gene_id)
            except msgspec.DecodeError as exc:
                raise InvalidPage(f"a report's gene has the wrong shape ({exc})") from None
            for query in queries:
                if query != gene_id and not _marks_replacement(report, query, gene_id):
                    raise InvalidPage(
                        f"a report answers GeneID {query} with gene {gene_id} without the "
                        "REPLACED_GENE_ID warning NCBI gives every replacement")
            identity = (gene_id, queries)
            if identity in self._seen or identity in seen_here:
                raise InvalidPage(f"GeneID {gene_id} arrived twice for the same query")
            seen_here.add(identity)
            for query in queries:  # a GeneID names one gene: two genes for it is a lie
                other = self._gene_of.get(query, gene_id)
                if other != gene_id:
                    raise InvalidPage(f"GeneID {query} is answered by two genes, {other} and "
                                      f"{gene_id}")
                self._gene_of[query] = gene_id
            new_answered.update(queries)
            reports += 1
            new_records.append(Record(gene_id, queries, _line(gene if self.gene_only else raw)))
        if page.next_page_token is not None and page.next_page_token in self._tokens:
            raise BrokenChain("the server sent the same next_page_token twice")
        if self.total_count is None:
            if page.total_count is not None and page.total_count > len(self.gene_ids):
                raise InvalidPage(f"total_count {page.total_count} is more than the "
                                  f"{len(self.gene_ids)} GeneIDs asked for")
            self.total_count = page.total_count
        self.pages += 1
        self.reports += reports
        for record in new_records:
            self._keep(record)
        self.answered.update(new_answered)
        for gene_id, code in _message_codes(page.messages).items():
            new_reasons.setdefault(gene_id, code)
        self.reasons.update(new_reasons)
        self._seen.update(seen_here)
        if page.next_page_token is not None:
            self._tokens.add(page.next_page_token)

    @classmethod
    def merged(cls, gene_ids: tuple[int, ...], gene_only: bool,
               parts: Sequence[BatchAnswer]) -> BatchAnswer:
        """One answer for ``gene_ids`` out of the answers for its parts; each gene once."""
        whole = cls(gene_ids, gene_only)
        for part in parts:
            for record in part.records:
                whole._keep(record)
            whole.answered.update(part.answered)
            whole.reasons.update(part.reasons)
        return whole

    def _keep(self, record: Record) -> None:
        """Add ``record``; a gene already kept (under other queries) gains those queries
        instead of a second line: each gene is written once per batch."""
        index = None if record.gene_id is None else self._gene_index.get(record.gene_id)
        if index is None:
            if record.gene_id is not None:
                self._gene_index[record.gene_id] = len(self.records)
            self.records.append(record)
            return
        kept = self.records[index]
        queries = kept.queries + tuple(q for q in record.queries if q not in kept.queries)
        self.records[index] = Record(kept.gene_id, queries, kept.line)

    def check_complete(self) -> None:
        """After the last page: the reports add up to what the first page promised."""
        if self.total_count is not None and self.reports != self.total_count:
            raise InvalidPage(f"the pages held {self.reports} reports, but total_count "
                              f"said {self.total_count}")

    def missing(self) -> list[tuple[int, str]]:
        """Requested IDs no report answered, with NCBI's reason code where it gave one."""
        return [(gene_id, self.reasons.get(gene_id, NOT_RETURNED))
                for gene_id in self.gene_ids if gene_id not in self.answered]


def _is_decimal(value: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts '²' and other characters int() refuses."""
    return 0 < len(value) <= 20 and value.isascii() and value.isdigit()


def _as_gene_id(value: str) -> int:
    """A GeneID field (a decimal string in the API: uint64 travels as text) as an int."""
    if _is_decimal(value):
        return int(value)
    raise InvalidPage(f"{value!r} is not a GeneID")
