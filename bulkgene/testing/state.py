"""The emulator's settings, its mutable state (arrival log, rate windows, outage) and error bodies.

Defaults follow NCBI as recorded (docs/ncbi-api.md); each older guess stays reachable by a knob.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from bulkgene.testing.lag import LoopLag
from bulkgene.testing.universe import GeneUniverse, mix

API_PREFIX = "/datasets/v2"
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 20
MAX_GENE_ID = 2**31 - 1
_TP53 = 7157
DOCS = "(For more help, see the NCBI Datasets Documentation at https://www.ncbi.nlm.nih.gov/datasets/docs/)"
FAULTS = (
    "http_500", "http_502", "http_503", "http_504", "truncate", "reset", "html", "stall",
    "missing_reports", "foreign_gene", "throttle_seconds", "throttle_date", "throttle_bare",
    "blocked", "bad_token", "repeat_token", "apache_404",
)
# NCBI's operationIds of the gene report endpoints the emulator serves (for ``retired_endpoints``)
ENDPOINTS = ("gene_reports_by_id", "gene_dataset_reports_by_id", "gene_metadata_by_post",
             "gene_dataset_report", "gene_reports_by_taxon", "gene_dataset_reports_by_taxon",
             "gene_counts_for_taxon", "gene_counts_for_taxon_by_post")
DATASETS_VERSION = "18.23.0"
REMAINING_COUNTED_AT = ("arrival", "answer")
RETIRED_MESSAGE = ("This version of the API has been retired. Please migrate to the latest version "
                   "of the NCBI Datasets API: https://www.ncbi.nlm.nih.gov/datasets/docs/v2/")


@dataclass
class EmulatorConfig:
    """Knobs of the emulator: limits, latency, faults. Probabilities are per request.

    The defaults are NCBI as recorded in 2026; the fields marked "old guess" bring back the
    emulator's earlier, unrecorded behaviour for tests of those client paths.
    """

    seed: int = 0
    anonymous_requests_per_second: float = 5.0
    keyed_requests_per_second: float = 10.0
    rate_limit: bool = True  # off: a server without a limit, so no 429s and no X-RateLimit-*
    retry_after_s: int = 1
    rate_limit_headers: bool = True  # X-RateLimit-Limit/-Remaining at all
    rate_limit_headers_only_on_429: bool = False  # old guess: not on other answers
    # when X-RateLimit-Remaining is counted: "arrival" (the request's own arrival) or "answer"
    # (when the answer leaves, so a slow answer counts the caller's later requests too);
    # unrecorded which NCBI does (docs/ncbi-api.md §6), so both readings are served
    remaining_counted_at: str = "arrival"
    ncbi_headers: bool = True  # Server, X-Datasets-Version, Ncbi-Phid, X-Ncbi-* paging mirrors
    keepalive_timeout_s: float | None = 4.0  # idle kept-alive connections close; None: 75 s, no header
    keepalive_max_requests: int | None = 40  # the Nth answer on a connection closes it; None: never
    total_count_on_every_page: bool = False  # old guess; NCBI sends it on the first page only
    unknown_id_messages: bool = False  # old guess: page messages for unknown/discontinued IDs
    bad_token_status: int = 500  # NCBI answers an invalid page token with 500 (old guess: 400)
    invalid_id_per_mille: float = 0.0  # this share of GeneIDs fails a whole request with 404 (18.23)
    invalid_ids: frozenset[int] = frozenset()  # and these, explicitly
    retired_endpoints: frozenset[str] = frozenset()  # operationIds (ENDPOINTS) that are retired
    retired_status: int = 404  # what a retired endpoint answers (404 or 410)
    arrival_jitter_ms: float = 0.0  # hold each request 0..this ms before counting it (seeded)
    valid_keys: frozenset[str] | None = None  # None: any key is accepted
    latency_s: float = 0.0
    latency_per_gene_s: float = 0.0
    latency_jitter: float = 0.0  # +- this fraction of the latency, uniformly
    stall_s: float = 30.0
    max_request_line_bytes: int = 16384  # longer request targets get 414, as a gateway does
    poison_ids: frozenset[int] = frozenset()  # any request naming one of these gets a 400
    # each taxon page after the first repeats this many GeneIDs of the page before (NCBI's CLI
    # de-duplicates because "client-side paged geneids can return duplicates")
    taxon_page_overlap: int = 0
    faults: dict[str, float] = field(default_factory=dict)
    # /gene/DATA/gene_history.gz (testing/history.py): which IDs it lists, what it honours
    history_max_id: int = 1_000_000
    history_ranges: bool = True  # Range and If-Range: 206 (off: always the whole file, 200)
    history_conditional: bool = True  # If-None-Match / If-Modified-Since: 304
    history_etag: bool = True  # an ETag beside Last-Modified
    history_fault: str | None = None  # cut, truncated_file or not_gzip (HISTORY_FAULTS)
    history_fault_answers: int | None = None  # the first N answers get it (None: all)
    history_chunk_bytes: int = 1 << 16  # the body is written in pieces of this size...
    history_chunk_delay_s: float = 0.0  # ...this far apart (a slow download, to kill)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
        if self.remaining_counted_at not in REMAINING_COUNTED_AT:
            raise ValueError(f"remaining_counted_at must be one of {REMAINING_COUNTED_AT}, "
                             f"not {self.remaining_counted_at!r}")
        if self.history_fault not in (None, "cut", "truncated_file", "not_gzip"):
            raise ValueError(f"unknown history fault {self.history_fault!r}; known: cut, "
                             "truncated_file, not_gzip")
        if unknown_endpoints := set(self.retired_endpoints) - set(ENDPOINTS):
            raise ValueError(f"unknown endpoint(s) {sorted(unknown_endpoints)}; known: "
                             f"{', '.join(ENDPOINTS)}")

    def is_invalid_id(self, gene_id: int) -> bool:
        """Whether naming ``gene_id`` makes NCBI 18.23 fail the whole request with 404.

        The share never takes TP53 (7157), which every release has: at 1000 per mille the
        emulator is a server that refuses every GeneID but the one a client probes with.
        """
        if gene_id in self.invalid_ids:
            return True
        return bool(self.invalid_id_per_mille) and gene_id != _TP53 and (
            mix(gene_id ^ self.seed ^ 0xBAD1D) % 1_000_000 < 1000 * self.invalid_id_per_mille)

    def keep_alive_header(self) -> str | None:
        parts = []
        if self.keepalive_timeout_s is not None:
            parts.append(f"timeout={self.keepalive_timeout_s:g}")
        if self.keepalive_max_requests is not None:
            parts.append(f"max={self.keepalive_max_requests}")
        return ", ".join(parts) or None


@dataclass(frozen=True)
class Arrival:
    """One request as the emulator saw it; the key itself is never kept."""

    t: float
    method: str
    path: str
    query: str
    n_ids: int
    first_id: int | None
    page_token: bool
    has_key: bool
    status: int
    fault: str | None
    accept: str = ""
    # how late the emulator's own loop woke in the second before (testing/lag.py): a 429
    # judged while it was late may be the emulator's doing, not the client's
    server_lag_s: float = 0.0


@dataclass(frozen=True)
class HistoryRequest:
    """One request for the history file, as the emulator saw and answered it."""

    range: str | None
    if_range: str | None
    if_none_match: str | None
    if_modified_since: str | None
    status: int
    body_bytes: int  # bytes of the body actually sent
    fault: str | None


class EmulatorState:
    """Mutable server state: the arrival log, rate windows, the outage switch."""

    def __init__(self, config: EmulatorConfig, universe: GeneUniverse) -> None:
        self.config = config
        self.universe = universe
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._windows: dict[str, deque[float]] = {}
        self._rng = random.Random(config.seed)
        # a separate stream, so that turning jitter on leaves the fault draws as they were
        self._arrival_rng = random.Random(config.seed ^ 0xA221)
        self._phids = 0
        self._answers: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._secret = hashlib.blake2b(str(config.seed).encode(), digest_size=16).digest()
        self.outage_status: int | None = None
        self.clock: Callable[[], float] = time.monotonic  # tests may freeze it
        self.lag = LoopLag()
        self.history_generation = 0  # a new day's gene_history: new validators, new bytes
        self._history_requests: list[HistoryRequest] = []
        self._history_faults = 0

    def log_history(self, entry: HistoryRequest) -> None:
        with self._lock:
            self._history_requests.append(entry)

    def history_requests(self) -> list[HistoryRequest]:
        """A copy of the history file's request log, safe to read from another thread."""
        with self._lock:
            return list(self._history_requests)

    def history_fault(self) -> str | None:
        """The fault this answer of the history file gets, if any."""
        fault = self.config.history_fault
        limit = self.config.history_fault_answers
        with self._lock:
            if fault is None or (limit is not None and self._history_faults >= limit):
                return None
            self._history_faults += 1
        return fault

    def log(self, arrival: Arrival) -> None:
        with self._lock:
            self._arrivals.append(arrival)

    def arrivals(self) -> list[Arrival]:
        """A copy of the arrival log, safe to read from another thread."""
        with self._lock:
            return list(self._arrivals)

    def reset(self) -> None:
        with self._lock:
            self._arrivals.clear()
            self._windows.clear()

    def admit(self, client: str, limit: float, now: float) -> tuple[bool, int]:
        """Sliding one-second window per client: admit unless ``limit`` already arrived.

        Returns (admitted, what is left of the window afterwards, never negative).
        """
        window = self._windows.setdefault(client, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= limit:
            return False, 0
        window.append(now)
        return True, max(0, int(limit) - len(window))

    def remaining(self, client: str, limit: float, now: float) -> int:
        """What is left of ``client``'s window now, without counting a request."""
        window = self._windows.get(client, deque())
        return max(0, int(limit) - sum(1 for t in window if t > now - 1.0))

    def arrival_delay_s(self) -> float:
        """How long to hold the next request before it counts as arrived."""
        spread_ms = self.config.arrival_jitter_ms
        return self._arrival_rng.uniform(0.0, spread_ms) / 1000 if spread_ms > 0 else 0.0

    def phid(self) -> str:
        """A fresh ``Ncbi-Phid``: NCBI's request id, as it also ends a 500's message."""
        self._phids += 1
        digest = hashlib.blake2b(self._phids.to_bytes(8, "big"), key=self._secret,
                                 digest_size=12).hexdigest().upper()
        return f"{digest}.1.1"

    def count_answer(self, transport: object) -> int:
        """How many answers this connection has had, this one included."""
        count = self._answers.get(transport, 0) + 1
        self._answers[transport] = count
        return count

    def draw_fault(self) -> str | None:
        """The fault this request suffers, if any (deterministic in arrival order)."""
        if not self.config.faults:
            return None
        roll = self._rng.random()
        for name, probability in self.config.faults.items():
            if roll < probability:
                return name
            roll -= probability
        return None

    def jitter(self) -> float:
        spread = self.config.latency_jitter
        return 1.0 + self._rng.uniform(-spread, spread) if spread else 1.0

    def token(self, offset: int, signature: bytes) -> str:
        """An opaque page token: the offset, sealed to this query by a keyed hash."""
        seal = hashlib.blake2b(signature + offset.to_bytes(4, "big"), key=self._secret,
                               digest_size=12).digest()
        return base64.urlsafe_b64encode(offset.to_bytes(4, "big") + seal).decode().rstrip("=")

    def offset_of(self, token: str, signature: bytes) -> int | None:
        """The offset inside a token, or None if it is not one of ours for this query."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        if len(raw) != 16:
            return None
        offset = int.from_bytes(raw[:4], "big")
        return offset if self.token(offset, signature) == token else None


STATE_KEY = web.AppKey("state", EmulatorState)


def _request_key(name: str, kind: type) -> Any:
    """A typed request-storage key where aiohttp has them (3.14+; plain strings warn there)."""
    request_key = getattr(web, "RequestKey", None)
    return request_key(name, kind) if request_key is not None else f"bulkgene.emulator.{name}"


# per-request notes from the handlers to the gateway middleware
PHID_KEY = _request_key("phid", str)
RATE_HEADERS_KEY = _request_key("rate_headers", dict)
RATE_CLIENT_KEY = _request_key("rate_client", tuple)  # (client, limit): to count at answer time
FRONT_END_KEY = _request_key("front_end", bool)  # answered by an Apache front end, not Finatra


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


def error_response(status: int, reason: str, message: str, phid: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """The error body NCBI actually sends: ``{error, code, message}`` and a newline; a 500's
    message ends with the request's Ncbi-Phid."""
    text = f"{message} {DOCS}" + (f" ({phid})" if phid else "")
    return web.Response(status=status, content_type="application/json", headers=headers,
                        body=orjson.dumps({"error": reason, "code": status, "message": text})
                        + b"\n")


def mirror_headers(config: EmulatorConfig, total: int, token: str | None) -> dict[str, str]:
    """The headers NCBI's gateway mirrors a page's ``total_count`` and token into (if on)."""
    mirrors: dict[str, str] = {}
    if config.ncbi_headers:
        if total:
            mirrors["X-Ncbi-Total-Count"] = str(total)
        if token:
            mirrors["X-Ncbi-Next-Page-Token"] = token
    return mirrors


def page_body(reports: list[bytes], total: int, token: str | None,
               messages: list[dict[str, Any]]) -> bytes:
    """The page as NCBI orders it; empty fields (no reports, no token) are omitted."""
    parts = []
    if reports:
        parts.append(b'"reports":[' + b",".join(reports) + b"]")
    if messages:
        parts.append(b'"messages":' + orjson.dumps(messages))
    if total:
        parts.append(b'"total_count":%d' % total)
    if token:
        parts.append(b'"next_page_token":' + orjson.dumps(token))
    return b"{" + b",".join(parts) + b"}"
