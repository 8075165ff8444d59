"""The leases of budget directories as ``bulkgene status`` shows them, live or not without comparing clocks.

A lease of this host is live if its process runs and its heartbeat is recent by this host's
own clock (the one that wrote it). A lease of another host is live only if its heartbeat
counter is seen to change while we watch (up to ``watch_s``): its written time is another
clock, and a node running an hour ahead must not be listed live for an hour.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bulkgene.budget.record import DEAD_AFTER_S, HEARTBEAT_S, LEASE_SUFFIX, LeaseRecord, read_record
from bulkgene.processes import process_alive

WATCH_S = 2.5 * HEARTBEAT_S  # long enough to see a loaded host's next heartbeat
_LOCAL_SLACK_S = 10.0  # the same clock, but NTP may step it
_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class LeaseView:
    """One lease as ``bulkgene status`` shows it."""

    record: LeaseRecord
    directory: Path
    heartbeat_age_s: float  # by this host's clock against the writer's: skew shows here
    alive: bool


def _read_all(directories: Iterable[Path]) -> dict[Path, LeaseRecord]:
    found: dict[Path, LeaseRecord] = {}
    for directory in directories:
        try:
            paths = sorted(directory.glob("*" + LEASE_SUFFIX))
        except OSError:
            continue
        for path in paths:
            record = read_record(path)
            if record is not None:
                found[path] = record
    return found


def list_leases(directories: Path | Iterable[Path], *, watch_s: float = WATCH_S,
                dead_after_s: float = DEAD_AFTER_S, wall_clock: Callable[[], float] = time.time,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> list[LeaseView]:
    """The leases in budget directories, oldest first; waits up to ``watch_s`` only if a
    lease of another host is there, until each of those has been seen to heartbeat."""
    directories = [directories] if isinstance(directories, Path) else list(directories)
    host = socket.gethostname()
    first = _read_all(directories)
    remote = {path for path, record in first.items() if record.host != host}
    beating: set[Path] = set()
    give_up_at = clock() + watch_s
    while remote - beating and clock() < give_up_at:
        sleep(_POLL_S)
        for path, record in _read_all({path.parent for path in remote - beating}).items():
            if path in remote and record.seq != first[path].seq:
                beating.add(path)
                first[path] = record
    now = wall_clock()
    views = []
    for path, record in first.items():
        age_s = now - record.heartbeat_at
        if record.host == host:
            alive = (process_alive(record.pid)
                     and -_LOCAL_SLACK_S <= age_s <= dead_after_s + _LOCAL_SLACK_S)
        else:
            alive = path in beating
        views.append(LeaseView(record, path.parent, age_s, alive))
    return sorted(views, key=lambda view: (view.record.started_at, view.record.lease_id))
