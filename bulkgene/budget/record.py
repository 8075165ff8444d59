"""Lease files: the budget's name and directory, the record each process writes and how it is read."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import msgspec

# the timings are justified in the package docstring
HEARTBEAT_S = 1.0
DEAD_AFTER_S = 5.0
FENCE_AFTER_S = 3.0
SERVER_WINDOW_S = 1.0  # NCBI counts requests per second
MARGIN_S = 0.25  # scheduling and NFS visibility jitter
GC_AFTER_S = 60.0  # seen unchanged this long (our clock): its owner has long fenced itself
ACK_TIMEOUT_S = 60.0  # a live peer that makes no room for a newcomer this long is not waited for
MAX_PEERS = 31  # more live leases than this on one key is not plausible: a share is ≥ 1/32
WAIT_REPORT_S = 10.0  # a join longer than this says what it waits for (normal: ~2-3 s)
LEASE_SUFFIX = ".lease"
TEMP_SUFFIX = ".tmp"
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


def read_small_file(path: Path | str, max_bytes: int, *, denied: bool = False,
                    dir_fd: int | None = None) -> bytes | None:
    """The bytes of ``path`` (relative to ``dir_fd`` if given) if it is a regular file of at
    most ``max_bytes``; None if it is gone or anything else (a FIFO, a link, a huge file): a
    shared directory is not trusted. With ``denied``, PermissionError is raised rather than
    taken for "not there"."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except PermissionError:
        if denied:
            raise
        return None
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return None
        return os.read(fd, max_bytes + 1)
    finally:
        os.close(fd)


def read_record(path: Path | str, *, denied: bool = False,
                dir_fd: int | None = None) -> LeaseRecord | None:
    """The lease in ``path``; None if it is gone or not a lease (garbage included)."""
    raw = read_small_file(path, _MAX_LEASE_BYTES, denied=denied, dir_fd=dir_fd)
    if raw is None:
        return None
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        return None


def shown(text: str, max_chars: int = 160) -> str:
    """Text from a file another user may have written, safe to print: one line, no terminal
    escapes (control and format characters are shown escaped), and not too long."""
    if len(text) > max_chars:
        text = text[:max_chars] + "..."
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                   for char in text)


def describe(record: LeaseRecord) -> str:
    """Who holds a lease, in words safe to print: pid, host and output directory."""
    return f"pid {record.pid} on {shown(record.host, 64)} -> {shown(record.out_dir)}"
