"""One process's lease: heartbeats it, counts the live ones, and derives its share of the budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import msgspec

from bulkgene.budget.record import (
    DEAD_AFTER_S,
    FENCE_AFTER_S,
    GC_AFTER_S,
    HEARTBEAT_S,
    LEASE_SUFFIX,
    MARGIN_S,
    SERVER_WINDOW_S,
    LeaseRecord,
    read_record,
)
from bulkgene.errors import ConfigError
from bulkgene.processes import process_alive

_T = TypeVar("_T")
_EPSILON_RPS = 1e-9
_MIN_BUDGET_RPS = 1.0  # below this a lease's budget is not plausible (NCBI's is 5 or 10)
log = logging.getLogger("bulkgene")


@dataclass(slots=True)
class _Peer:
    record: LeaseRecord
    changed_at: float  # our clock, when we last saw its seq change (or first saw it)
    baseline_seq: int  # its seq when first seen after our lease was (re)written; -1: not yet
    low_since: float | None = None  # our clock, since when it has published a share ≤ ours


class BudgetLease:
    """This process's lease on a key's budget; ``share_rps`` is what its pacer may use.

    ``async with BudgetLease(budget_path(key), 10.0, out_dir=...) as lease:`` takes the lease and
    heartbeats in the background; the share is 0 until the lease is admitted (the pacer must
    not send then) and changes as processes join and leave: read ``share_rps`` before each
    request, or follow ``on_share`` / ``watch()``. ``open()``, ``step()`` and ``close()`` are the
    same steps run synchronously, for tests with a fake clock.
    """

    def __init__(self, directory: Path, total_rps: float, *, out_dir: str | Path = "",
                 heartbeat_s: float = HEARTBEAT_S, dead_after_s: float = DEAD_AFTER_S,
                 fence_after_s: float = FENCE_AFTER_S, window_s: float = SERVER_WINDOW_S,
                 margin_s: float = MARGIN_S, on_share: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if not 0 < heartbeat_s <= fence_after_s < dead_after_s:
            raise ValueError("budget timings must satisfy 0 < heartbeat ≤ fence < dead")
        self.directory = directory
        self.total_rps = total_rps
        self.lease_id = secrets.token_hex(8)
        self.path = directory / (self.lease_id + LEASE_SUFFIX)
        self._temp_path = directory / f".{self.lease_id}.tmp"
        self.out_dir = str(out_dir)
        self.heartbeat_s, self.dead_after_s, self.fence_after_s = heartbeat_s, dead_after_s, fence_after_s
        self.settle_s = window_s + margin_s
        self._on_share = on_share
        self._clock, self._wall_clock = clock, wall_clock
        self._peers: dict[str, _Peer] = {}
        self._litter: list[str] = []  # dead leases to remove (by the I/O thread, at the next scan)
        self._buried: dict[str, int] = {}  # their seq, in case we may not unlink them (sticky dir)
        self._fair_history: deque[tuple[float, float]] = deque()
        self._joined = False  # acknowledged by every peer
        self._settle_until: float | None = None
        # since our first scan of this join, or the last departure we saw: a process that
        # left just before may still have requests in the server's window
        self._calm_since: float | None = None
        self._active = False
        self._share_rps = 0.0
        self._rate_rps: float | None = None
        self._seq = 0
        self._started_at = wall_clock()
        self._renewed_at = float("-inf")  # our clock, when the last successful write began
        self._io_lock = threading.Lock()  # a late write from a worker thread must not follow close()
        self._closed = False
        self._write_error: OSError | None = None
        self._host = socket.gethostname()
        self._notified_rps: float | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what the pacer reads -------------------------------------------------------------

    @property
    def share_rps(self) -> float:
        """Requests per second this process may send now; 0 while joining or fenced."""
        if self._clock() - self._renewed_at > self.fence_after_s:
            return 0.0
        return self._share_rps

    @property
    def peers(self) -> int:
        """Other live leases, as this process last counted them."""
        now = self._clock()
        return sum(1 for peer in self._peers.values() if now - peer.changed_at < self.dead_after_s)

    def report_rate(self, rate_rps: float) -> None:
        """The pacer's current rate, published in the lease at the next heartbeat."""
        self._rate_rps = rate_rps

    async def watch(self) -> AsyncIterator[float]:
        """Yield the current share, then each new one."""
        while True:
            changed = self._changed
            yield self.share_rps
            await changed.wait()

    async def wait_admitted(self) -> float:
        async for share_rps in self.watch():
            if share_rps > 0:
                return share_rps
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the steps --------------------------------------------------------------------------

    def open(self) -> None:
        """Write the lease (joining); nothing may be sent until ``share_rps`` > 0."""
        with contextlib.suppress(OSError):  # if this fails, the write below says why
            self.directory.mkdir(parents=True, exist_ok=True)
        self._renewed_at = self._clock()
        if not self._write(self._record()):
            raise ConfigError(f"could not write the budget lease {self.path} ({self._write_error}): "
                              "point --budget-dir or BULKGENE_BUDGET_DIR to a writable directory "
                              "that all the jobs sharing the API key can reach")

    def step(self) -> float:
        """One heartbeat: scan the others, recompute the share, renew the lease."""
        self._apply(self._scan(), self._clock())
        started = self._clock()
        if self._write(self._record()):
            self._renewed_at = started
        self._notify()
        return self.share_rps

    def close(self) -> None:
        """Remove the lease: the others may rise one server window after they see it gone."""
        with self._io_lock:
            self._closed = True
            for path in (self.path, self._temp_path):
                with contextlib.suppress(OSError):
                    path.unlink()
        self._share_rps = 0.0

    # -- async use -------------------------------------------------------------------------

    async def __aenter__(self) -> BudgetLease:
        await asyncio.to_thread(self.open)
        self._task = asyncio.create_task(self._heartbeat_loop(), name="bulkgene-budget-lease")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.close)
        self._notify()

    async def _heartbeat_loop(self) -> None:
        while True:
            started = self._clock()
            try:
                scan = await self._in_thread(self._scan)
                self._apply(scan, self._clock())
                write_started = self._clock()
                if await self._in_thread(self._write, self._record()):
                    self._renewed_at = write_started
            except Exception:
                # fencing stops the requests meanwhile; the next heartbeat tries again
                log.exception("the budget lease heartbeat failed; retrying")
            self._notify()
            wake_at = started + self.heartbeat_s
            if not self._active and self._settle_until is not None \
                    and self._settle_until > started:
                wake_at = min(wake_at, self._settle_until)  # start as soon as we may
            await asyncio.sleep(max(0.0, wake_at - self._clock()))

    async def _in_thread(self, function: Callable[..., _T], *args: object) -> _T:
        """Run file I/O off the event loop; while a hung NFS holds it, keep fencing on time."""
        future = asyncio.get_running_loop().run_in_executor(None, function, *args)
        while not future.done():
            await asyncio.wait({future}, timeout=self.heartbeat_s / 4)
            self._notify()
        return future.result()

    def _notify(self) -> None:
        share_rps = self.share_rps
        if share_rps != self._notified_rps:
            self._notified_rps = share_rps
            self._changed.set()
            self._changed = asyncio.Event()
            if self._on_share is not None:
                self._on_share(share_rps)

    # -- file I/O (runs in a worker thread) ------------------------------------------------

    def _record(self) -> LeaseRecord:
        self._seq += 1
        share_rps = self._share_rps if self._active else 0.0
        rate_rps = share_rps if self._rate_rps is None else min(share_rps, self._rate_rps)
        return LeaseRecord(self.lease_id, self._host, os.getpid(), self.out_dir,
                           self._started_at, self._wall_clock(), self._seq,
                           "active" if self._active else "joining", share_rps, rate_rps,
                           self.total_rps)

    def _write(self, record: LeaseRecord) -> bool:
        """Replace our lease atomically; False (and fencing later) if the filesystem fails."""
        with self._io_lock:
            if self._closed:
                return False
            try:
                self._temp_path.write_bytes(msgspec.json.encode(record))
                os.replace(self._temp_path, self.path)
            except OSError as error:
                self._write_error = error
                return False
            return True

    def _scan(self) -> dict[str, LeaseRecord | None] | None:
        """Every other lease by id (None: present but unreadable now); None if the scan failed."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return None
        litter, self._litter = self._litter, []
        for lease_id in litter:
            for path in (self.directory / (lease_id + LEASE_SUFFIX), self.directory / f".{lease_id}.tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()
        found: dict[str, LeaseRecord | None] = {}
        for name in names:
            lease_id = name.removesuffix(LEASE_SUFFIX)
            if not name.endswith(LEASE_SUFFIX) or lease_id == self.lease_id or lease_id in litter:
                continue
            try:
                record = read_record(self.directory / name)
            except OSError:  # ESTALE while it is being replaced: keep what we knew
                found[lease_id] = None
                continue
            if record is None:
                continue
            found[lease_id] = record
        return found

    # -- the decision (pure, on our monotonic clock) ----------------------------------------

    def _apply(self, scan: dict[str, LeaseRecord | None] | None, now: float) -> None:
        if scan is not None:
            if self._calm_since is None:
                self._calm_since = now
            for lease_id in [known for known in self._peers if known not in scan]:
                del self._peers[lease_id]  # left cleanly (or collected)
                self._calm_since = now
            for lease_id in [known for known in self._buried if known not in scan]:
                del self._buried[lease_id]
            for lease_id, record in scan.items():
                peer = self._peers.get(lease_id)
                if record is None or self._buried.get(lease_id) == record.seq:
                    continue
                if record.host == self._host and not process_alive(record.pid):
                    # a killed process on this host: it sends nothing more, and its lease
                    # need not wait out dead_after_s (its last requests: one settle below)
                    self._litter.append(lease_id)
                    self._buried[lease_id] = record.seq
                    if self._peers.pop(lease_id, None) is not None:
                        self._calm_since = now
                    continue
                if peer is None:
                    self._peers[lease_id] = _Peer(record, now, record.seq)
                    continue
                if record.seq != peer.record.seq:
                    peer.record, peer.changed_at = record, now
                if peer.baseline_seq < 0:
                    peer.baseline_seq = record.seq
        for lease_id, peer in list(self._peers.items()):
            if now - peer.changed_at > GC_AFTER_S:  # a crashed run's: removed at the next scan
                self._litter.append(lease_id)
                self._buried[lease_id] = peer.record.seq
                del self._peers[lease_id]
        live = [peer for peer in self._peers.values() if now - peer.changed_at < self.dead_after_s]
        # the smallest budget any holder believes in wins, but not an absurd one: a crafted
        # lease saying 1e-9 must not freeze everyone
        total_rps = min([self.total_rps] + [peer.record.total_rps for peer in live
                                            if peer.record.total_rps >= _MIN_BUDGET_RPS])
        fair_rps = total_rps / (1 + len(live))

        if now - self._renewed_at > self.fence_after_s:
            # the others may soon count us dead and rise: stop, and join again, counting
            # acknowledgements only from scans made after our lease is renewed
            if self._joined:
                log.warning("could not renew the budget lease %s for %.1f s (is the filesystem "
                            "hung?): requests pause until it is renewed and the other processes "
                            "have seen it", self.path, now - self._renewed_at)
            self._joined, self._active, self._settle_until = False, False, None
            self._calm_since = None
            for peer in self._peers.values():
                peer.baseline_seq = -1
        for peer in live:
            if peer.record.share_rps > fair_rps + _EPSILON_RPS:
                peer.low_since = None
            elif peer.low_since is None:
                peer.low_since = now  # it lowered before it wrote this, so before now
        if not self._joined and self._calm_since is not None and all(
                peer.baseline_seq >= 0 and peer.record.seq >= peer.baseline_seq + 2
                and peer.low_since is not None for peer in live):
            self._joined = True
            # start once a server window has passed since the last one lowered or left
            self._settle_until = max([self._calm_since] + [
                peer.low_since for peer in live if peer.low_since is not None]) + self.settle_s
        if self._joined and not self._active and self._settle_until is not None \
                and now >= self._settle_until:
            self._active = True

        # rise only once the lower head-count has held for a server window; lower at once
        self._fair_history.append((now, fair_rps))
        while len(self._fair_history) >= 2 and self._fair_history[1][0] <= now - self.settle_s:
            self._fair_history.popleft()
        self._share_rps = min(rate for _, rate in self._fair_history) if self._active else 0.0
