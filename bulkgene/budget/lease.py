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
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import msgspec

from bulkgene.budget.files import (
    denied_advice,
    ensure_directory,
    is_temp_of,
    open_directory,
    remove,
    write_atomically,
)
from bulkgene.budget.io_thread import IOThread
from bulkgene.budget.record import (
    DEAD_AFTER_S,
    FENCE_AFTER_S,
    HEARTBEAT_S,
    LEASE_SUFFIX,
    MARGIN_S,
    SERVER_WINDOW_S,
    LeaseRecord,
    read_record,
    shown,
)
from bulkgene.budget.share import Scan, ShareDecider, Timings
from bulkgene.durable import owner_and_mode
from bulkgene.errors import BudgetError, ConfigError

_T = TypeVar("_T")
GIVE_UP_AFTER_S = 600.0  # unrenewed this long, the run stops (the CLI passes --outage-after)
_CLOSE_WAIT_S = 3.0  # a hung filesystem must not hold an exit: the others see us dead anyway
log = logging.getLogger("bulkgene")


class BudgetLease:
    """This process's lease on a key's budget; ``share_rps`` is what its pacer may use.

    ``async with BudgetLease(budget_path(key), 10.0, out_dir=...) as lease:`` takes the lease and
    heartbeats in the background; the share is 0 until the lease is admitted (the pacer must
    not send then) and changes as processes join and leave: read ``share_rps`` before each
    request, or follow ``on_share`` / ``watch()``. ``failure`` is set when the lease could not
    be kept for ``give_up_after_s``: the run must stop. ``open()``, ``step()`` and ``close()``
    are the same steps run synchronously, for tests with a fake clock. ``root`` is the
    directory the user chose: below it no link is followed and new directories take its bits.
    """

    def __init__(self, directory: Path, total_rps: float, *, out_dir: str | Path = "",
                 root: Path | None = None,
                 heartbeat_s: float = HEARTBEAT_S, dead_after_s: float = DEAD_AFTER_S,
                 fence_after_s: float = FENCE_AFTER_S, window_s: float = SERVER_WINDOW_S,
                 margin_s: float = MARGIN_S, give_up_after_s: float = GIVE_UP_AFTER_S,
                 on_share: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if not 0 < heartbeat_s <= fence_after_s < dead_after_s:
            raise ValueError("budget timings must satisfy 0 < heartbeat ≤ fence < dead")
        self.directory = directory
        self.root = root if root is not None else directory
        self.total_rps = total_rps
        self.lease_id = secrets.token_hex(8)
        self.path = directory / (self.lease_id + LEASE_SUFFIX)
        self.out_dir = str(out_dir)
        self.heartbeat_s, self.dead_after_s, self.fence_after_s = heartbeat_s, dead_after_s, fence_after_s
        self._on_share = on_share
        self._clock, self._wall_clock = clock, wall_clock
        self._host = socket.gethostname()
        self._decider = ShareDecider(self.path, total_rps, self._host, Timings(
            heartbeat_s=heartbeat_s, dead_after_s=dead_after_s, fence_after_s=fence_after_s,
            settle_s=window_s + margin_s, give_up_after_s=give_up_after_s))
        self._rate_rps: float | None = None
        self._seq = 0
        self._started_at = wall_clock()
        self._renewed_at = float("-inf")  # our clock, when the last successful write began
        self._beat_at: float | None = None  # our clock, when the heartbeat last judged
        # guards only the flag, never I/O: close() must not wait on a write a hung (or
        # FIFO-planted) filesystem blocks
        self._flag_lock = threading.Lock()
        self._closed = False
        self._write_error: OSError | None = None
        self._notified_rps: float | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._io = IOThread(f"bulkgene-lease-{self.lease_id}")
        self._unreadable_seen: set[str] = set()  # warned about once (the I/O thread's own)

    # -- what the pacer reads -------------------------------------------------------------

    @property
    def share_rps(self) -> float:
        """Requests per second this process may send now; 0 while joining or fenced."""
        if self._clock() - self._renewed_at > self.fence_after_s:
            return 0.0
        return self._decider.share_rps

    @property
    def peers(self) -> int:
        """Other live leases, as this process last counted them."""
        return len(self._decider.live(self._clock()))

    @property
    def failure(self) -> BudgetError | None:
        """Why the run must stop: the lease could not be kept for ``give_up_after_s``."""
        return self._decider.failure

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
        ensure_directory(self.directory, self.root)
        self._renewed_at = self._clock()
        if not self._write(self._record()):
            error = self._write_error
            advice = (denied_advice(self.directory) if isinstance(error, PermissionError)
                      else "point --budget-dir or BULKGENE_BUDGET_DIR to a writable directory "
                           "that all the jobs sharing the API key can reach")
            raise ConfigError(f"could not write the budget lease {self.path} ({error}): {advice}")

    def step(self) -> float:
        """One heartbeat: scan the others, recompute the share, renew the lease."""
        self._apply(self._scan(list(self._take_litter())))
        started = self._clock()
        if self._write(self._record()):
            self._renewed_at = started
        self._notify()
        return self.share_rps

    def close(self) -> None:
        """Remove the lease: the others may rise one server window after they see it gone."""
        with self._flag_lock:
            self._closed = True
        self._decider.share_rps = 0.0
        self._remove_own()

    # -- async use -------------------------------------------------------------------------

    async def __aenter__(self) -> BudgetLease:
        await self._io.run(self.open)
        self._task = asyncio.create_task(self._heartbeat_loop(), name="bulkgene-budget-lease")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with self._flag_lock:
            self._closed = True  # a write still under way removes what it wrote
        self._decider.share_rps = 0.0
        self._notify()
        removal = self._io.run(self._remove_own)
        try:
            await asyncio.wait_for(removal, _CLOSE_WAIT_S)
        except TimeoutError:
            log.warning("could not remove the budget lease %s within %.0f s (the filesystem "
                        "does not answer): the other processes count this run gone %.0f s "
                        "after its last heartbeat anyway", self.path, _CLOSE_WAIT_S,
                        self.dead_after_s)
        self._io.stop()

    async def _heartbeat_loop(self) -> None:
        while True:
            started = self._clock()
            try:
                scan = await self._in_thread(self._scan, self._take_litter())
                self._judge(scan)
                write_started = self._clock()
                if await self._in_thread(self._write, self._record()):
                    self._renewed_at = write_started
            except Exception:
                # fencing stops the requests meanwhile; the next heartbeat tries again
                log.exception("the budget lease heartbeat failed; retrying")
            self._notify()
            wake_at = started + self.heartbeat_s
            settle_until = self._decider.settle_until
            if not self._decider.active and settle_until is not None and settle_until > started:
                wake_at = min(wake_at, settle_until)  # start as soon as we may
            await asyncio.sleep(max(0.0, wake_at - self._clock()))

    async def _in_thread(self, function: Callable[..., _T], *args: object) -> _T:
        """Run file I/O off the event loop; while a hung NFS holds it, keep fencing on time."""
        future = self._io.run(function, *args)
        while not (await asyncio.wait({future}, timeout=self.heartbeat_s / 4))[0]:
            self._judge(None)  # fencing, and giving up, go on while the filesystem hangs
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

    def _judge(self, scan: Scan | None) -> None:
        """The heartbeat's ``_apply``: it judges at least every heartbeat, so a gap longer
        than the fence means the process did not run meanwhile (SIGSTOP, Ctrl-Z, a suspended
        machine), which, not the filesystem, is why the lease went unrenewed; the stop may
        have come while the heartbeat waited for its I/O or while it slept."""
        now = self._clock()
        if self._beat_at is not None and now - self._beat_at > self.fence_after_s:
            self._decider.note_stalled(now - self._beat_at)
        self._beat_at = now
        self._apply(scan)

    def _apply(self, scan: Scan | None) -> None:
        self._decider.apply(scan, self._clock(), self._renewed_at, self._write_error)

    def _take_litter(self) -> list[str]:
        litter, self._decider.litter = self._decider.litter, []
        return litter

    # -- file I/O (runs in the I/O thread) ------------------------------------------------

    def _record(self) -> LeaseRecord:
        self._seq += 1
        active = self._decider.active
        share_rps = self._decider.share_rps if active else 0.0
        rate_rps = share_rps if self._rate_rps is None else min(share_rps, self._rate_rps)
        return LeaseRecord(self.lease_id, self._host, os.getpid(), self.out_dir,
                           self._started_at, self._wall_clock(), self._seq,
                           "active" if active else "joining", share_rps, rate_rps,
                           self.total_rps)

    def _write(self, record: LeaseRecord) -> bool:
        """Replace our lease atomically; False (and fencing later) if the filesystem fails."""
        if self._closed:
            return False
        data = msgspec.json.encode(record)
        try:
            try:
                dir_fd = open_directory(self.directory, self.root)
            except FileNotFoundError:  # a cleaner removed the directory: make it again
                log.warning("the budget directory %s was removed by another process (a cache "
                            "or tmp cleaner?): making it again; keep cleaners away from it",
                            self.directory)
                try:
                    ensure_directory(self.directory, self.root)
                except ConfigError as refused:
                    raise FileNotFoundError(str(refused)) from None
                dir_fd = open_directory(self.directory, self.root)
            try:
                write_atomically(dir_fd, self.path.name, data)
            finally:
                os.close(dir_fd)
        except OSError as error:
            if self._write_error is None or str(error) != str(self._write_error):
                log.debug("could not write the budget lease %s: %s", self.path, error)
            self._write_error = error
            return False
        with self._flag_lock:
            closed = self._closed
        if closed:  # close() came while we wrote: what we wrote must not outlive us
            self._remove_own()
            return False
        self._write_error = None
        return True

    def _remove_own(self) -> None:
        with contextlib.suppress(OSError):
            dir_fd = open_directory(self.directory, self.root)
            try:
                remove(dir_fd, [self.path.name])
            finally:
                os.close(dir_fd)

    def _scan(self, litter: list[str]) -> Scan | None:
        """Every other lease by id (None: present but unreadable now); None if the scan failed."""
        try:
            dir_fd = open_directory(self.directory, self.root)
        except OSError:
            return None
        try:
            return self._scan_in(dir_fd, litter)
        finally:
            os.close(dir_fd)

    def _scan_in(self, dir_fd: int, litter: list[str]) -> Scan | None:
        try:
            names = os.listdir(dir_fd)
        except OSError:
            return None
        remove(dir_fd, [name for name in names for lease_id in litter
                        if name == lease_id + LEASE_SUFFIX or is_temp_of(name, lease_id)])
        found: dict[str, LeaseRecord | None] = {}
        for name in names:
            lease_id = name.removesuffix(LEASE_SUFFIX)
            if not name.endswith(LEASE_SUFFIX) or lease_id == self.lease_id or lease_id in litter:
                continue
            try:
                record = read_record(name, denied=True, dir_fd=dir_fd)
            except PermissionError:
                found[lease_id] = None
                self._unreadable(name)
                continue
            except OSError:  # ESTALE while it is being replaced: keep what we knew
                found[lease_id] = None
                continue
            if record is None:
                continue
            found[lease_id] = record
        return Scan(found, self.path.name in names)

    def _unreadable(self, name: str) -> None:
        if name in self._unreadable_seen:
            return
        self._unreadable_seen.add(name)
        path = self.directory / name
        log.warning("can't read the budget lease %s (%s; written by an older bulkgene under a "
                    "strict umask?): its process can't be counted, so together you may exceed "
                    "the key's budget; its owner can run `chmod a+r` on it", shown(str(path)),
                    owner_and_mode(path))
