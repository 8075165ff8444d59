"""Frozen settings of a download (DownloadConfig, RetryPolicy, Timeouts) and their validation; no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from bulkgene.errors import ConfigError
from bulkgene.tasks import TaskSpec

DEFAULT_BASE_URL = "https://api.ncbi.nlm.nih.gov/datasets/v2"
MAX_IDS_PER_REQUEST = 1000
ANONYMOUS_REQUESTS_PER_SECOND = 5.0
KEYED_REQUESTS_PER_SECOND = 10.0
DEFAULT_SHARDS = 4
RETURNED_CONTENTS = ("COMPLETE", "IDS_ONLY", "COUNTS_ONLY")
SORT_DIRECTIONS = ("SORT_DIRECTION_UNSPECIFIED", "SORT_DIRECTION_ASCENDING",
                   "SORT_DIRECTION_DESCENDING")
ENDPOINTS = ("gene-id", "dataset-report")
RECORDS = ("report", "gene")
COMPRESSIONS = ("none", "gzip")
FORMATS = ("json", "ndjson", "tsv")
TABULAR_HEADERS = ("INCLUDE_TABULAR_HEADER_FIRST_PAGE_ONLY", "INCLUDE_TABULAR_HEADER_ALWAYS",
                   "INCLUDE_TABULAR_HEADER_NEVER")


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call only where it goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing request is retried."""

    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    retry_after_cap_s: float = 120.0
    outage_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("RetryPolicy.max_attempts must be at least 1")
        if self.backoff_base_s < 0 or self.backoff_cap_s < 0 or self.retry_after_cap_s < 0:
            raise ConfigError("RetryPolicy delays must not be negative")


@dataclass(frozen=True)
class Timeouts:
    """Per-attempt limits: connect, a read that stalls, and the whole attempt."""

    connect_s: float = 20.0
    read_stall_s: float = 60.0
    attempt_s: float = 300.0


@dataclass(frozen=True)
class DownloadConfig:
    """Everything one `bulkgene fetch` run needs to know."""

    inputs: tuple[str, ...]
    out_dir: Path
    base_url: str = DEFAULT_BASE_URL
    api_key: Secret | None = None
    batch_size: int = MAX_IDS_PER_REQUEST
    page_size: int = MAX_IDS_PER_REQUEST
    requests_per_second: float | None = None
    concurrency: int | None = None
    shards: int = DEFAULT_SHARDS
    returned_content: str = "COMPLETE"
    locus_tags: tuple[str, ...] = ()
    sort_field: str | None = None
    sort_direction: str | None = None
    tax_search_subtree: bool = False
    table_fields: tuple[str, ...] = ()
    accession_filter: tuple[str, ...] = ()
    include_tabular_header: str | None = None
    endpoint: str = "gene-id"
    format: str = "json"
    record: str = "report"
    compress: str = "none"
    restart: bool = False
    task: TaskSpec = field(default_factory=TaskSpec)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    shutdown_grace_s: float = 10.0
    progress_interval_s: float = 30.0
    column: str | None = None  # --column: 1-based number or header name; None finds GeneID

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("no input given: name at least one GeneID file, or - for stdin")
        if self.column is not None and (not self.column.strip() or self.column.strip() == "0"
                                        or self.column.strip().startswith("-")):
            raise ConfigError(f"--column {self.column!r} is not a column: give its number "
                              "counted from 1, or its name in the header line (e.g. GeneID)")
        if not 1 <= self.batch_size <= MAX_IDS_PER_REQUEST:
            raise ConfigError(
                f"batch size {self.batch_size} is out of range: use 1..{MAX_IDS_PER_REQUEST}"
            )
        if not 1 <= self.page_size <= MAX_IDS_PER_REQUEST:
            raise ConfigError(
                f"page size {self.page_size} is out of range: use 1..{MAX_IDS_PER_REQUEST}"
            )
        if self.requests_per_second is not None and not (
            0 < self.requests_per_second <= 1000 and math.isfinite(self.requests_per_second)
        ):
            raise ConfigError(
                f"rate {self.requests_per_second} is out of range: use a number of requests "
                "per second above 0 (NCBI allows 5 without a key, 10 with one)"
            )
        if self.concurrency is not None and not 1 <= self.concurrency <= 256:
            raise ConfigError(f"concurrency {self.concurrency} is out of range: use 1..256")
        for name, value, allowed in (("endpoint", self.endpoint, ENDPOINTS),
                                     ("format", self.format, FORMATS),
                                     ("record", self.record, RECORDS),
                                     ("compress", self.compress, COMPRESSIONS)):
            if value not in allowed:
                raise ConfigError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        tsv_only = [name for name, value in (("--table-field", self.table_fields),
                                             ("--accession-filter", self.accession_filter),
                                             ("--include-tabular-header",
                                              self.include_tabular_header)) if value]
        if tsv_only and self.format != "tsv":
            raise ConfigError(f"{', '.join(tsv_only)} only apply to TSV answers, as the API "
                              "defines them: add --format tsv, or leave them out")
        if self.format == "tsv" and self.record == "gene":
            raise ConfigError("--record gene picks a JSON object; with --format tsv every "
                              "line is already a table row: leave --record out")
        if (self.include_tabular_header is not None
                and self.include_tabular_header not in TABULAR_HEADERS):
            raise ConfigError(f"include_tabular_header {self.include_tabular_header!r} is not "
                              f"one of {', '.join(TABULAR_HEADERS)}")
        if self.sort_direction is not None and self.sort_direction not in SORT_DIRECTIONS:
            raise ConfigError(f"sort direction {self.sort_direction!r} is not one of "
                              f"{', '.join(SORT_DIRECTIONS)}")
        if self.sort_direction is not None and self.sort_field is None:
            raise ConfigError("a sort direction needs a field to sort by: add --sort-field")
        if self.returned_content not in RETURNED_CONTENTS:
            raise ConfigError(f"returned content {self.returned_content!r} is not one of "
                              f"{', '.join(RETURNED_CONTENTS)}")
        if not 1 <= self.shards <= 4096:
            raise ConfigError(f"shard count {self.shards} is out of range: use 1..4096")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base URL {self.base_url!r} must start with http:// or https://, "
                f"e.g. {DEFAULT_BASE_URL}"
            )
        if self.api_key is not None and not self.api_key.reveal().strip():
            raise ConfigError("the API key is empty: pass a real key or none at all")

    @property
    def effective_requests_per_second(self) -> float:
        """The rate ceiling: explicit, else NCBI's budget (per key, per IP) shared by all tasks."""
        if self.requests_per_second is not None:
            return self.requests_per_second
        budget = KEYED_REQUESTS_PER_SECOND if self.api_key else ANONYMOUS_REQUESTS_PER_SECOND
        return budget / self.task.count

    @property
    def work_dir(self) -> Path:
        """The directory this process writes: ``out_dir``, or its task's subdirectory."""
        return self.task.directory(self.out_dir)

    @property
    def effective_concurrency(self) -> int:
        """Requests in flight: enough to keep the rate busy at ~1.5 s per 1000-gene page."""
        if self.concurrency is not None:
            return self.concurrency
        return max(2, min(64, math.ceil(self.effective_requests_per_second * 1.6)))
