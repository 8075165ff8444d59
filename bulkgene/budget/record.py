"""Lease files: the budget's name and directory, the record each process writes, a one-look listing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

# the timings are justified in the package docstring
HEARTBEAT_S = 1.0
DEAD_AFTER_S = 5.0
FENCE_AFTER_S = 3.0
SERVER_WINDOW_S = 1.0  # NCBI counts requests per second
MARGIN_S = 0.25  # scheduling and NFS visibility jitter
GC_AFTER_S = 60.0  # seen unchanged this long (our clock): its owner has long fenced itself
SKEW_TOLERANCE_S = 10.0  # for list_leases only, which must judge from one look
LEASE_SUFFIX = ".lease"
_NAME_SALT = b"bulkgene-budget-v1\0"


class LeaseRecord(msgspec.Struct, frozen=True):
    """The content of one lease file (times are the writer's wall clock, for display only)."""

    lease_id: str
    host: str
    pid: int
    out_dir: str
    started_at: float
    heartbeat_at: float
    seq: int  # heartbeat counter: liveness is judged by seeing it change
    state: str  # "joining" (sends nothing yet) or "active"
    share_rps: float  # the most this process may use: budget ÷ the leases it counts
    rate_rps: float  # what its pacer currently uses (≤ share_rps)
    total_rps: float  # the budget it believes the key has


_decoder = msgspec.json.Decoder(LeaseRecord)


def budget_name(api_key: str | None) -> str:
    """The budget's name: ``anonymous`` without a key, else a salted hash that hides the key."""
    if not api_key:
        return "anonymous"
    return "key-" + hashlib.sha256(_NAME_SALT + api_key.encode()).hexdigest()[:16]


def default_budget_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bulkgene" / "budget"


def budget_path(api_key: str | None, root: Path | None = None) -> Path:
    """The directory holding the leases of every process that uses ``api_key``."""
    return (root if root is not None else default_budget_root()) / budget_name(api_key)


_MAX_LEASE_BYTES = 4096  # a lease is a few hundred bytes: anything bigger is not one


def read_small_file(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; None if it is
    gone or anything else (a FIFO, a link, a huge file): a shared directory is not trusted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except (FileNotFoundError, OSError):
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return None
        return os.read(fd, max_bytes + 1)
    finally:
        os.close(fd)


def read_record(path: Path) -> LeaseRecord | None:
    """The lease in ``path``; None if it is gone or not a lease (garbage included)."""
    raw = read_small_file(path, _MAX_LEASE_BYTES)
    if raw is None:
        return None
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        return None


@dataclass(frozen=True, slots=True)
class LeaseView:
    """One lease as ``bulkgene status`` shows it."""

    record: LeaseRecord
    heartbeat_age_s: float  # by this host's clock against the writer's: skew shows here
    alive: bool


def list_leases(directory: Path, *, dead_after_s: float = DEAD_AFTER_S,
                skew_tolerance_s: float = SKEW_TOLERANCE_S,
                now_wall: float | None = None) -> list[LeaseView]:
    """The leases in a budget directory, oldest first, from one look.

    One look can't watch a counter change, so liveness here compares the written heartbeat
    time with this host's clock and forgives ``skew_tolerance_s`` of clock skew: a killed
    process shows as alive for that long. The leases themselves never judge this way.
    """
    now = time.time() if now_wall is None else now_wall
    views = []
    with contextlib.suppress(FileNotFoundError):
        for path in directory.glob("*" + LEASE_SUFFIX):
            try:
                record = read_record(path)
            except OSError:
                continue
            if record is not None:
                age_s = now - record.heartbeat_at
                views.append(LeaseView(record, age_s, age_s <= dead_after_s + skew_tolerance_s))
    return sorted(views, key=lambda view: (view.record.started_at, view.record.lease_id))
