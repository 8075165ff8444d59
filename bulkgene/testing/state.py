"""The emulator's settings, its mutable state (arrival log, rate windows, outage) and error bodies."""

from __future__ import annotations

import base64
import hashlib
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from bulkgene.testing.universe import GeneUniverse

API_PREFIX = "/datasets/v2"
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 20
MAX_GENE_ID = 2**31 - 1
DOCS = "(For more help, see the NCBI Datasets Documentation at https://www.ncbi.nlm.nih.gov/datasets/docs/)"
FAULTS = (
    "http_500", "http_502", "http_503", "http_504", "truncate", "reset", "html", "stall",
    "missing_reports", "foreign_gene", "throttle_seconds", "throttle_date", "throttle_bare",
    "blocked", "bad_token", "repeat_token",
)


@dataclass
class EmulatorConfig:
    """Knobs of the emulator: limits, latency, faults. Probabilities are per request."""

    seed: int = 0
    anonymous_requests_per_second: float = 5.0
    keyed_requests_per_second: float = 10.0
    rate_limit: bool = True
    retry_after_s: int = 1
    rate_limit_headers: bool = True  # X-RateLimit-Limit/-Remaining on 429s
    valid_keys: frozenset[str] | None = None  # None: any key is accepted
    latency_s: float = 0.0
    latency_per_gene_s: float = 0.0
    latency_jitter: float = 0.0  # +- this fraction of the latency, uniformly
    stall_s: float = 30.0
    max_request_line_bytes: int = 16384  # longer request targets get 414, as a gateway does
    poison_ids: frozenset[int] = frozenset()  # any request naming one of these gets a 400
    faults: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")


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


class EmulatorState:
    """Mutable server state: the arrival log, rate windows, the outage switch."""

    def __init__(self, config: EmulatorConfig, universe: GeneUniverse) -> None:
        self.config = config
        self.universe = universe
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._windows: dict[str, deque[float]] = {}
        self._rng = random.Random(config.seed)
        self._secret = hashlib.blake2b(str(config.seed).encode(), digest_size=16).digest()
        self.outage_status: int | None = None

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

    def admit(self, client: str, limit: float, now: float) -> bool:
        """Sliding one-second window per client: admit unless ``limit`` already arrived."""
        window = self._windows.setdefault(client, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

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


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


def error_response(status: int, reason: str, message: str) -> web.Response:
    """The error body NCBI actually sends: ``{error, code, message}``."""
    return json_response(status, {"error": reason, "code": status, "message": f"{message} {DOCS}"})


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
