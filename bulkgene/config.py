"""Frozen settings of a download, in three groups, and their validation; no I/O.

    DownloadConfig     inputs, output directory, task, restart
    ├── ApiQuery       what to ask the API: endpoint, format and every request parameter
    ├── OutputSpec     how to write: batch size, shards, record shape, compression
    └── NetworkSpec    how to talk to the server: URL, key, rate, retries, timeouts, size cap

The groups are the single source of truth: the CLI takes its defaults and choices from
them, and the checkpoint's fingerprint is derived from their fields (a field marked
``_NOT_IN_FINGERPRINT`` doesn't change what lands in the directory).
"""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from bulkgene.errors import ConfigError
from bulkgene.layout import task_dir_name

DEFAULT_BASE_URL = "https://api.ncbi.nlm.nih.gov/datasets/v2"
MAX_IDS_PER_REQUEST = 1000
ANONYMOUS_REQUESTS_PER_SECOND = 5.0
KEYED_REQUESTS_PER_SECOND = 10.0
# a COMPLETE page of 1000 reports is ~5 MB; 128 MiB leaves room for genes with huge
# annotations while a hostile body can't take the machine's memory
DEFAULT_MAX_RESPONSE_BYTES = 128 << 20
MIN_API_KEY_CHARS = 8  # NCBI's keys have 36
# fetched results held before the writer has them on disk: 80 MiB keeps 16 POST batches in
# flight at full rate (64 cost 8 % of genes/s) and a stalled writer's run under 150 MB
DEFAULT_MEMORY_BUDGET_BYTES = 80 << 20

Endpoint = Literal["gene-id", "gene-id-report", "dataset-report"]
Format = Literal["json", "ndjson", "tsv"]
ReturnedContent = Literal["COMPLETE", "IDS_ONLY", "COUNTS_ONLY"]
SortDirection = Literal["SORT_DIRECTION_UNSPECIFIED", "SORT_DIRECTION_ASCENDING",
                        "SORT_DIRECTION_DESCENDING"]
TabularHeader = Literal["INCLUDE_TABULAR_HEADER_FIRST_PAGE_ONLY", "INCLUDE_TABULAR_HEADER_ALWAYS",
                        "INCLUDE_TABULAR_HEADER_NEVER"]
RecordShape = Literal["report", "gene"]
Compression = Literal["none", "gzip"]

ENDPOINTS: tuple[str, ...] = get_args(Endpoint)
FORMATS: tuple[str, ...] = get_args(Format)
RETURNED_CONTENTS: tuple[str, ...] = get_args(ReturnedContent)
SORT_DIRECTIONS: tuple[str, ...] = get_args(SortDirection)
TABULAR_HEADERS: tuple[str, ...] = get_args(TabularHeader)
RECORDS: tuple[str, ...] = get_args(RecordShape)
COMPRESSIONS: tuple[str, ...] = get_args(Compression)
# the API's v2GeneType, for the taxon routes' ``types`` filter (docs/ncbi-gene-taxon.md)
GENE_TYPES = ("UNKNOWN", "tRNA", "rRNA", "snRNA", "scRNA", "snoRNA", "PROTEIN_CODING", "PSEUDO",
              "TRANSPOSON", "miscRNA", "ncRNA", "BIOLOGICAL_REGION", "OTHER")
MAX_TAXON_CHARS = 300

# the three endpoints give the same records, so a run may resume on another one
_NOT_IN_FINGERPRINT = {"fingerprint": False}


def default_of(group: type[Any], name: str) -> Any:
    """The default of field ``name`` of a config group (for the CLI's option defaults)."""
    for item in fields(group):
        if item.name == name:
            if item.default is not MISSING:
                return item.default
            if item.default_factory is not MISSING:
                return item.default_factory()
    raise KeyError(name)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} {value!r} is not one of {', '.join(allowed)}")


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


def _check_base_url(base_url: str) -> None:
    """A URL that aiohttp can connect to, or a ConfigError naming what is wrong with it."""
    def refused(why: str) -> ConfigError:
        return ConfigError(f"base URL {base_url!r} (--base-url or BULKGENE_BASE_URL) {why}, "
                           f"e.g. {DEFAULT_BASE_URL}")

    try:
        url = urlsplit(base_url)
        url.port  # noqa: B018 - parsed on access: "Port out of range 0-65535"
    except ValueError as exc:
        raise refused(f"is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise refused("must start with http:// or https:// and name a host")
    host = url.hostname
    if ":" in host:  # an IPv6 address in brackets
        return
    try:
        labels = host.encode("idna").split(b".")
    except UnicodeError:
        raise refused("names a host that is no host name (each dot-separated part of it may "
                      "have 1 to 63 letters, digits or hyphens)") from None
    if len(host) > 253 or any(not 0 < len(label) <= 63 for label in labels if label != b""):
        raise refused("names a host that is no host name (at most 253 characters, each "
                      "dot-separated part 1 to 63)")


@dataclass(frozen=True)
class ApiQuery:
    """What to ask the API: the endpoint, the answer format and every request parameter."""

    endpoint: Endpoint = field(default="gene-id", metadata=_NOT_IN_FINGERPRINT)
    format: Format = "json"
    returned_content: ReturnedContent = "COMPLETE"
    page_size: int = field(default=MAX_IDS_PER_REQUEST, metadata=_NOT_IN_FINGERPRINT)
    locus_tags: tuple[str, ...] = ()
    table_fields: tuple[str, ...] = ()
    accession_filter: tuple[str, ...] = ()
    include_tabular_header: TabularHeader | None = None
    sort_field: str | None = None
    sort_direction: SortDirection | None = None
    tax_search_subtree: bool = False

    def __post_init__(self) -> None:
        _check_choice("endpoint", self.endpoint, ENDPOINTS)
        _check_choice("format", self.format, FORMATS)
        _check_choice("returned content", self.returned_content, RETURNED_CONTENTS)
        if self.include_tabular_header is not None:
            _check_choice("include_tabular_header", self.include_tabular_header, TABULAR_HEADERS)
        if self.sort_direction is not None:
            _check_choice("sort direction", self.sort_direction, SORT_DIRECTIONS)
            if self.sort_field is None:
                raise ConfigError("a sort direction needs a field to sort by: add --sort-field")
        if not 1 <= self.page_size <= MAX_IDS_PER_REQUEST:
            raise ConfigError(
                f"page size {self.page_size} (--page-size) is out of range: use 1..{MAX_IDS_PER_REQUEST}")
        tsv_only = [name for name, value in (("--table-field", self.table_fields),
                                             ("--accession-filter", self.accession_filter),
                                             ("--include-tabular-header",
                                              self.include_tabular_header)) if value]
        if tsv_only and self.format != "tsv":
            raise ConfigError(f"{', '.join(tsv_only)} only apply to TSV answers, as the API "
                              "defines them: add --format tsv, or leave them out")
        if self.format == "tsv" and "gene-id" not in self.table_fields:
            # without it no row says which GeneID it answers: found, missing and replaced
            # can't be told apart, so neither a resume nor verify could be trusted
            raise ConfigError(
                "--format tsv needs the gene-id column so that bulkgene can tell which GeneIDs "
                "were answered (found, missing, exactly once): add --table-field gene-id to "
                "the --table-field columns you want (e.g. --table-field gene-id --table-field "
                "symbol), and drop it afterwards with `cut -f2-` if unwanted")
        if self.endpoint == "gene-id-report" and (unsupported := self.unsupported_by(
                "gene-id-report")):
            raise ConfigError(
                f"GET /gene/id/{{ids}}/dataset_report has no {', '.join(unsupported)}: use "
                "--endpoint gene-id or dataset-report for them, or leave them out")

    def unsupported_by(self, endpoint: str) -> list[str]:
        """Options this query uses that ``endpoint`` can't express (docs/ncbi-api.md §1)."""
        if endpoint != "gene-id-report":
            return []
        return [name for name, value in (("--locus-tag", self.locus_tags),
                                         ("--accession-filter", self.accession_filter),
                                         ("--tax-search-subtree", self.tax_search_subtree))
                if value]


@dataclass(frozen=True)
class OutputSpec:
    """How to write: IDs per batch (the unit of commit), shards, record shape, compression,
    and how many bytes of fetched results may wait for the writer."""

    batch_size: int = MAX_IDS_PER_REQUEST
    shards: int = 4
    record: RecordShape = "report"
    compress: Compression = "none"
    # memory, not content: a resume may change it
    memory_budget_bytes: int = field(default=DEFAULT_MEMORY_BUDGET_BYTES,
                                     metadata={"fingerprint": False})

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_IDS_PER_REQUEST:
            raise ConfigError(
                f"batch size {self.batch_size} (--batch-size) is out of range: use 1..{MAX_IDS_PER_REQUEST}")
        if not 1 <= self.shards <= 4096:
            raise ConfigError(f"shard count {self.shards} (--shards) is out of range: use 1..4096")
        _check_choice("record", self.record, RECORDS)
        _check_choice("compress", self.compress, COMPRESSIONS)
        if self.memory_budget_bytes < 1:
            raise ConfigError("the memory budget (--memory-budget-mb) must be positive")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing request is retried."""

    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    retry_after_cap_s: float = 120.0
    outage_s: float = 600.0
    # before anything has answered, a host that can't be reached (refused, no route, proxy,
    # a connection or an answer that never comes) is a setup problem, not an outage: stop
    # after this long; a host name that does not resolve, after unresolved_s
    unreachable_s: float = 15.0
    unresolved_s: float = 2.0
    # a next-page request failing this often restarts its batch from page 1 (a token the
    # server no longer takes answers 500 every time); restarts are bounded by max_attempts
    token_attempts: int = 2

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.token_attempts < 1:
            raise ConfigError("RetryPolicy attempts must be at least 1")
        delays = (self.backoff_base_s, self.backoff_cap_s, self.retry_after_cap_s, self.outage_s,
                  self.unreachable_s)
        if not all(delay >= 0 and math.isfinite(delay) for delay in delays):
            raise ConfigError("RetryPolicy delays must be finite numbers of seconds, not negative")


@dataclass(frozen=True)
class Timeouts:
    """Per-attempt limits: connect, a read that stalls, and the whole attempt (None: none)."""

    connect_s: float = 20.0
    read_stall_s: float = 60.0
    attempt_s: float | None = 300.0
    # NCBI closes a kept-alive connection idle for 4 s: drop ours before it does
    keepalive_s: float = 3.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_stall_s", "keepalive_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"timeout {name} must be a positive number of seconds")
        if self.attempt_s is not None and not self.attempt_s > 0:
            raise ConfigError("timeout attempt_s must be positive (or None for no limit)")


@dataclass(frozen=True)
class NetworkSpec:
    """How to talk to the server: where, with which key, how fast, how patiently."""

    base_url: str = DEFAULT_BASE_URL
    api_key: Secret | None = None
    requests_per_second: float | None = None
    concurrency: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    # where the leases on the key's rate budget live (None: see run/sharing.py)
    budget_dir: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):  # a key given as text: held as a Secret from here
            object.__setattr__(self, "api_key", Secret(self.api_key))
        if isinstance(self.budget_dir, str):
            if not self.budget_dir.strip():  # Path("") is the current directory
                raise ConfigError("the budget directory is empty: name one, or leave it out "
                                  "(None: ~/.cache/bulkgene/budget)")
            object.__setattr__(self, "budget_dir", Path(self.budget_dir))
        if self.requests_per_second is not None and not (
            0 < self.requests_per_second <= 1000 and math.isfinite(self.requests_per_second)
        ):
            raise ConfigError(
                f"rate {self.requests_per_second} (--rate) is out of range: use a number of requests "
                "per second above 0 (NCBI allows 5 without a key, 10 with one)")
        if self.concurrency is not None and not 1 <= self.concurrency <= 256:
            raise ConfigError(f"concurrency {self.concurrency} (--concurrency) is out of range: use 1..256")
        _check_base_url(self.base_url)
        if self.api_key is not None and not self.api_key.reveal().strip():
            raise ConfigError("the API key is empty: pass a real key or none at all")
        if self.api_key is not None and not all(
                char.isprintable() and not char.isspace() for char in self.api_key.reveal()):
            raise ConfigError("the API key holds spaces, line breaks or control characters: "
                              "an NCBI key is one word (check NCBI_API_KEY or the key file)")
        if self.api_key is not None and len(self.api_key.reveal()) < MIN_API_KEY_CHARS:
            # an echo of the key is masked in every answer and message: a one-letter "key"
            # would be masked inside the data itself
            raise ConfigError(
                f"the API key is {len(self.api_key.reveal())} characters long, too short to be "
                "an NCBI key (those have 36): check NCBI_API_KEY or the key file, or run "
                "without a key (5 requests/s)")
        if self.max_response_bytes < 1 << 20:
            raise ConfigError("the response size cap must be at least 1 MiB")

    @property
    def secret(self) -> str | None:
        """The key's text, for masking it wherever an input or answer might repeat it."""
        return self.api_key.reveal() if self.api_key is not None else None

    @property
    def server(self) -> str:
        """The origin of the base URL, which server filled a directory: scheme, host and
        port, a scheme's default port left out (as an origin is written, and as directories
        filled before the port counted recorded NCBI's)."""
        url = urlsplit(self.base_url)
        host = url.hostname or ""
        shown = f"[{host}]" if ":" in host else host
        port = url.port
        default = 443 if url.scheme == "https" else 80
        return f"{url.scheme}://{shown}" + (f":{port}" if port not in (None, default) else "")

    @property
    def api_root(self) -> str:
        """The base URL without user, password, query or fragment: safe to record and show."""
        url = urlsplit(self.base_url)
        host = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname
        port = f":{url.port}" if url.port is not None else ""
        return f"{url.scheme}://{host}{port}{url.path}"


# SLURM's largest possible array (MaxArraySize is at most 4 000 001): anything above is a
# mistake, and numbers past 64 bits can't even be written to the checkpoint
MAX_TASK_COUNT = 4_000_001


@dataclass(frozen=True)
class TaskSpec:
    """This process's share of the batches."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count > MAX_TASK_COUNT:
            raise ConfigError(f"task count {self.count} is more tasks than any array has: use "
                              f"1..{MAX_TASK_COUNT}")
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"task index {self.index} of {self.count} is out of range: "
                              "--task-index must be 0..--task-count - 1")

    def takes(self, batch_index: int) -> bool:
        return batch_index % self.count == self.index

    def share(self, requested: int, batch_size: int) -> tuple[int, int]:
        """How many batches and IDs this task takes of ``requested`` unique IDs."""
        all_batches = -(-requested // batch_size)
        batches = range(self.index, all_batches, self.count)
        last_size = requested - batch_size * (all_batches - 1) if all_batches else 0
        ids = sum(last_size if b == all_batches - 1 else batch_size for b in batches)
        return len(batches), ids

    def directory(self, out_dir: Path) -> Path:
        """Where this task writes: DIR itself alone, DIR/task-000i/ in an array."""
        return out_dir if self.count == 1 else out_dir / task_dir_name(self.index)


@dataclass(frozen=True)
class TaxonSelection:
    """Whole organisms: the taxa whose GeneIDs NCBI lists for the run (``fetch --taxon``).

    Each taxon is a tax ID or a name, as the API's ``taxon`` takes them; ``gene_types``
    become its ``types`` filter and ``include_subtree`` its ``tax_search_subtree``.
    ``refresh`` lists the taxa again although the run's list is complete.
    """

    taxa: tuple[str, ...]
    gene_types: tuple[str, ...] = ()
    include_subtree: bool = False
    refresh: bool = field(default=False, metadata=_NOT_IN_FINGERPRINT)

    def __post_init__(self) -> None:
        if not self.taxa:
            raise ConfigError("no taxon given: name one with --taxon (a tax ID such as 9606, or "
                              "a name such as 'Homo sapiens') or list them in --taxa-file")
        for taxon in self.taxa:
            if not taxon.strip() or taxon != taxon.strip():
                raise ConfigError(f"taxon {taxon!r} is empty or has surrounding spaces: give a "
                                  "tax ID (9606) or a name (human, 'Homo sapiens')")
            if len(taxon) > MAX_TAXON_CHARS or not taxon.isprintable():
                raise ConfigError(f"taxon {taxon[:40]!r}... is not a tax ID or a name: names "
                                  f"are printable and at most {MAX_TAXON_CHARS} characters")
        # any case is taken (PROTEIN_CODING, protein_coding), as the API spells them
        spelled = {gene_type.lower(): gene_type for gene_type in GENE_TYPES}
        gene_types = tuple(dict.fromkeys(
            spelled.get(gene_type.lower(), gene_type) if isinstance(gene_type, str)
            else gene_type for gene_type in self.gene_types))
        for gene_type in gene_types:
            _check_choice("gene type (--gene-type)", gene_type, GENE_TYPES)
        object.__setattr__(self, "gene_types", gene_types)  # frozen: set once, here

    def params(self) -> dict[str, Any]:
        """What decides the list (``refresh`` does not): part of the run's fingerprint."""
        return {"taxa": list(self.taxa), "gene_types": sorted(self.gene_types),
                "include_subtree": self.include_subtree}


@dataclass(frozen=True)
class DownloadConfig:
    """Everything one `bulkgene fetch` run needs to know."""

    inputs: tuple[str, ...]
    out_dir: Path
    query: ApiQuery = field(default_factory=ApiQuery)
    output: OutputSpec = field(default_factory=OutputSpec)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    task: TaskSpec = field(default_factory=TaskSpec)
    restart: bool = False
    shutdown_grace_s: float = 10.0
    progress_interval_s: float = 30.0
    column: str | None = None  # --column: 1-based number or header name; None finds GeneID
    # a fresh run into an --out that holds files of someone else's: only when asked for
    allow_other_files: bool = False
    # growing a finished run (run/growth.py): the inputs are IDs to add to it (--add), or
    # there are none and the run goes on from its own plan (retry, --follow-replaced)
    add: bool = False
    from_directory: bool = False
    taxa: TaxonSelection | None = None  # --taxon: NCBI lists these taxa's GeneIDs first

    def __post_init__(self) -> None:
        if self.add and (self.restart or self.from_directory):
            raise ConfigError("--add grows the run in --out: it can't go with --restart")
        if self.add and self.taxa is not None:
            raise ConfigError("--add grows a run by ID files; a run's taxa grow with "
                              "--refresh-list: use one or the other")
        # easy mistakes in library code, read as meant: one path for a tuple of them, a str
        # for a Path (a str as ``inputs`` was read letter by letter: "cannot read input 'i'")
        if isinstance(self.inputs, (str, os.PathLike)):
            object.__setattr__(self, "inputs", (os.fspath(self.inputs),))
        elif not isinstance(self.inputs, tuple) or not all(isinstance(i, str) for i in self.inputs):
            try:
                object.__setattr__(self, "inputs", tuple(os.fspath(i) for i in self.inputs))
            except TypeError:
                raise ConfigError(f"inputs must be paths of GeneID files (str or Path), not "
                                  f"{self.inputs!r}: for GeneIDs in memory use "
                                  "bulkgene.fetch(ids)") from None
        if isinstance(self.out_dir, str):
            object.__setattr__(self, "out_dir", Path(self.out_dir))
        elif not isinstance(self.out_dir, Path):
            if not isinstance(self.out_dir, os.PathLike):
                raise ConfigError(f"out_dir must be a directory path, not {self.out_dir!r}")
            object.__setattr__(self, "out_dir", Path(os.fspath(self.out_dir)))
        if not self.inputs and not self.from_directory and self.taxa is None:
            raise ConfigError("no input given: name at least one GeneID file, or - for stdin, "
                              "or a whole organism with --taxon")
        if self.out_dir.resolve() == Path(self.out_dir.resolve().anchor):
            raise ConfigError(f"the output directory {str(self.out_dir)!r} is the root "
                              "directory: name a directory to create or to resume in")
        if not (self.progress_interval_s >= 0 and math.isfinite(self.progress_interval_s)):
            raise ConfigError("the progress interval must be a finite number of seconds")
        if self.column is not None and (not self.column.strip() or self.column.strip() == "0"
                                        or self.column.strip().startswith("-")):
            raise ConfigError(f"--column {self.column!r} is not a column: give its number "
                              "counted from 1, or its name in the header line (e.g. GeneID)")
        if self.query.format == "tsv" and self.output.record == "gene":
            raise ConfigError("--record gene picks a JSON object; with --format tsv every "
                              "line is already a table row: leave --record out")

    @property
    def effective_requests_per_second(self) -> float:
        """The rate ceiling: explicit, else NCBI's whole budget (per key, per IP), of which
        a budget lease then gives this process its live share."""
        if self.network.requests_per_second is not None:
            return self.network.requests_per_second
        return (KEYED_REQUESTS_PER_SECOND if self.network.api_key
                else ANONYMOUS_REQUESTS_PER_SECOND)

    @property
    def work_dir(self) -> Path:
        """The directory this process writes: ``out_dir``, or its task's subdirectory."""
        return self.task.directory(self.out_dir)

    @property
    def effective_concurrency(self) -> int:
        """Requests in flight: enough to keep the rate busy at ~1.5 s per 1000-gene page."""
        if self.network.concurrency is not None:
            return self.network.concurrency
        return max(2, min(64, math.ceil(self.effective_requests_per_second * 1.6)))

    def fingerprint_params(self) -> dict[str, Any]:
        """The parameters that decide what lands in the directory, derived from the groups."""
        params: dict[str, Any] = {}
        for group in (self.query, self.output):
            for item in fields(group):
                if item.metadata.get("fingerprint", True):
                    value = getattr(group, item.name)
                    params[item.name] = list(value) if isinstance(value, tuple) else value
        if self.column is not None:  # only when given: older checkpoints still match
            params["column"] = self.column
        if self.taxa is not None:  # ditto; the list itself is an input, bound by its digest
            params["taxa"] = self.taxa.params()
        params["server"] = self.network.server
        params["task_index"] = self.task.index
        params["task_count"] = self.task.count
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any], out_dir: Path, network: NetworkSpec,
                    **settings: Any) -> DownloadConfig:
        """The config that goes on with a run whose checkpoint holds ``params`` (what
        ``fingerprint_params`` gave), from its own plan: ``retry``, ``--follow-replaced``.
        ``network`` says how to reach the server (which must be the run's)."""
        groups: list[Any] = []
        for group in (ApiQuery, OutputSpec):
            values: dict[str, Any] = {
                item.name: (tuple(params[item.name]) if isinstance(params[item.name], list)
                            else params[item.name])
                for item in fields(group)
                if item.metadata.get("fingerprint", True) and item.name in params}
            groups.append(group(**values))
        task = TaskSpec(int(params.get("task_index", 0)), int(params.get("task_count", 1)))
        return cls(inputs=(), out_dir=out_dir, query=groups[0], output=groups[1],
                   network=network, task=task, column=params.get("column"),
                   from_directory=True, **settings)
