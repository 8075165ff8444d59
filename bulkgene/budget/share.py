"""How one lease decides its share from its scans of the others, on its own monotonic clock (no I/O).

The protocol is described in the package docstring; this module also defends it against a
directory that other users can write: a lease that vanishes counts as gone only once it has
been unseen over two scans and for as long as its owner takes to notice and stop (an owner
whose own lease vanished pauses and joins again); a peer that makes no room for a newcomer
for ``ack_timeout_s`` is not waited for any more (still counted: it may be a real run);
no more than ``max_peers`` others are counted, so the share never falls below budget ÷
(max_peers + 1); a peer's claim of a budget below half ours is not believed.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from bulkgene.budget.record import (
    ACK_TIMEOUT_S,
    GC_AFTER_S,
    MAX_PEERS,
    WAIT_REPORT_S,
    LeaseRecord,
    describe,
    shown,
)
from bulkgene.errors import BudgetError
from bulkgene.processes import process_alive

_EPSILON_RPS = 1e-9
_REPORT_EVERY_S = 30.0
_WARN_AGAIN_AFTER_S = 60.0
_DELETIONS_SHOWN_S = 60.0  # our lease deleted within this long: why we wait
log = logging.getLogger("bulkgene")


@dataclass(slots=True)
class Peer:
    record: LeaseRecord
    changed_at: float  # our clock, when we last saw its seq change (or first saw it)
    baseline_seq: int  # its seq when first seen after our lease was (re)written; -1: not yet
    low_since: float | None = None  # our clock, since when it has published a share ≤ ours
    missing_scans: int = 0  # consecutive scans that did not find its lease
    missing_since: float | None = None  # our clock, at the first of them
    ignored: bool = False  # made no room within ack_timeout_s of this join: not waited for

    def acknowledged(self) -> bool:
        """It wrote twice since we saw it (so it has scanned us) and its share makes room."""
        return (self.baseline_seq >= 0 and self.record.seq >= self.baseline_seq + 2
                and self.low_since is not None)


@dataclass(frozen=True, slots=True)
class Scan:
    """One look at the directory: every other lease by id (None: there but unreadable now),
    and whether our own lease was there."""

    leases: dict[str, LeaseRecord | None]
    own_present: bool


@dataclass(frozen=True, slots=True)
class Timings:
    heartbeat_s: float
    dead_after_s: float
    fence_after_s: float
    settle_s: float  # one server window and a margin
    give_up_after_s: float
    ack_timeout_s: float = ACK_TIMEOUT_S
    max_peers: int = MAX_PEERS


class ShareDecider:
    """The state of one lease's view of the others; ``apply`` each scan, read ``share_rps``."""

    def __init__(self, lease_path: Path, total_rps: float, host: str, timings: Timings) -> None:
        self.lease_path = lease_path
        self.total_rps = total_rps
        self.host = host
        self.timings = timings
        self.peers: dict[str, Peer] = {}
        self.litter: list[str] = []  # dead leases whose files the I/O side may remove
        self._buried: dict[str, int] = {}  # their seq, in case we may not unlink them (sticky dir)
        self._fair_history: deque[tuple[float, float]] = deque()
        self._joined = False  # acknowledged by every peer (or it timed out)
        self.active = False
        self.settle_until: float | None = None
        # since our first scan of this join, or the last departure we saw: a process that
        # left just before may still have requests in the server's window
        self._calm_since: float | None = None
        self._join_started_at: float | None = None
        self._inactive_since: float | None = None
        self._next_report_at = 0.0
        self._warned_at: dict[str, float] = {}
        self._own_deleted: deque[float] = deque()  # our clock, each time our lease was gone
        self._stalled_s = 0.0  # the process did not run this long before the last apply
        self.share_rps = 0.0
        self.failure: BudgetError | None = None

    def note_stalled(self, stalled_s: float) -> None:
        """The process did not run for ``stalled_s`` (stopped, or a suspended machine)."""
        self._stalled_s = stalled_s

    def live(self, now: float) -> list[Peer]:
        return [peer for peer in self.peers.values()
                if now - peer.changed_at < self.timings.dead_after_s]

    def apply(self, scan: Scan | None, now: float, renewed_at: float,
              write_error: OSError | None) -> None:
        fenced = now - renewed_at > self.timings.fence_after_s
        vanished = False
        if scan is not None:
            if self._calm_since is None:
                self._calm_since = now
            vanished = self._see(scan, now) and not fenced
        self._collect(now)
        live = self.live(now)
        # a crafted lease saying 1e-9 (or 1) must not freeze everyone: NCBI's budgets are 5
        # and 10, so a peer believing in less than half ours is not believed
        total_rps = min([self.total_rps] + [
            peer.record.total_rps for peer in live
            if math.isfinite(peer.record.total_rps)
            and peer.record.total_rps >= self.total_rps / 2])
        fair_rps = total_rps / (1 + min(len(live), self.timings.max_peers))
        self._warn_if_crowded(live, now, fair_rps)

        stalled_s, self._stalled_s = self._stalled_s, 0.0
        if fenced or vanished:
            # the others may soon count us dead (or already do): stop, and join again,
            # counting acknowledgements only from scans made after our lease is renewed
            if self._joined and fenced and stalled_s > 0 and write_error is None:
                log.warning("this process did not run for %.1f s (stopped with SIGSTOP or "
                            "Ctrl-Z, or a suspended machine), so its budget lease %s went "
                            "unrenewed and the other processes may have taken its share: "
                            "requests pause until it has renewed the lease and they have seen "
                            "it again", stalled_s, self.lease_path)
            elif self._joined and fenced:
                log.warning("could not renew the budget lease %s for %.1f s (%s): requests "
                            "pause until it is renewed and the other processes have seen it; "
                            "the run stops if that takes over %.0f s", self.lease_path,
                            now - renewed_at, write_error or "no error yet: the filesystem "
                            "does not answer", self._give_up_s())
            self._rejoin()
        for peer in live:
            if peer.record.share_rps > fair_rps + _EPSILON_RPS:
                peer.low_since = None
            elif peer.low_since is None:
                peer.low_since = now  # it lowered before it wrote this, so before now
        if not self._joined and self._calm_since is not None:
            self._join(live, now)
        if self._joined and not self.active and self.settle_until is not None \
                and now >= self.settle_until:
            self.active = True
            self._join_started_at = None  # the next join (after a fence) waits afresh

        # rise only once the lower head-count has held for a server window; lower at once
        self._fair_history.append((now, fair_rps))
        while len(self._fair_history) >= 2 and \
                self._fair_history[1][0] <= now - self.timings.settle_s:
            self._fair_history.popleft()
        self.share_rps = min(rate for _, rate in self._fair_history) if self.active else 0.0
        self._watch_inactivity(live, now, renewed_at, write_error)

    # -- what a scan shows -------------------------------------------------------------------

    def _see(self, scan: Scan, now: float) -> bool:
        """Update the peers from ``scan``; True if our own lease was deleted by someone."""
        for lease_id in [known for known in self.peers if known not in scan.leases]:
            self._missing(lease_id, self.peers[lease_id], now)
        for lease_id in [known for known in self._buried if known not in scan.leases]:
            del self._buried[lease_id]
        for lease_id, record in scan.leases.items():
            peer = self.peers.get(lease_id)
            if record is None or self._buried.get(lease_id) == record.seq:
                if peer is not None:
                    peer.missing_scans, peer.missing_since = 0, None
                continue
            if record.host == self.host and not process_alive(record.pid):
                # a killed process on this host: it sends nothing more, and its lease
                # need not wait out dead_after_s (its last requests: one settle below)
                self._bury(lease_id, record.seq, now)
                continue
            if peer is None:
                self.peers[lease_id] = Peer(record, now, record.seq)
                continue
            if peer.missing_scans:
                self._warn("vanished", "the budget lease of %s vanished from %s and came back: "
                           "something deletes lease files there (a cache or tmp cleaner?); keep "
                           "it away from the budget directory", describe(record),
                           self.lease_path.parent, now=now)
                peer.missing_scans, peer.missing_since = 0, None
            if record.seq != peer.record.seq:
                peer.record, peer.changed_at = record, now
            if peer.baseline_seq < 0:
                peer.baseline_seq = record.seq
        if not scan.own_present:
            self._own_deleted.append(now)
            while self._own_deleted[0] < now - _DELETIONS_SHOWN_S:
                self._own_deleted.popleft()
            self._warn("own", "the budget lease %s was deleted by another process (a cache or "
                       "tmp cleaner, a script?): requests pause and this run joins the budget "
                       "again, since the others may have counted it gone; keep cleaners away "
                       "from the budget directory", self.lease_path, now=now)
            return True
        return False

    def _missing(self, lease_id: str, peer: Peer, now: float) -> None:
        """A lease we knew is not in the directory: a clean exit, or a deletion. Its owner
        notices a deletion at its next scan and stops; until it must have, it counts."""
        if peer.missing_since is None:
            peer.missing_since = now
        peer.missing_scans += 1
        exited = peer.record.host == self.host and not process_alive(peer.record.pid)
        if not exited and (peer.missing_scans < 2
                           or now - peer.missing_since < self.timings.fence_after_s):
            return
        if not exited:
            log.debug("the budget lease of %s is gone without its process being seen to "
                      "exit (another host's clean exit, or a deletion): counted gone after "
                      "%.1f s", describe(peer.record), now - peer.missing_since)
        del self.peers[lease_id]
        self._calm_since = now

    def _bury(self, lease_id: str, seq: int, now: float) -> None:
        self.litter.append(lease_id)
        self._buried[lease_id] = seq
        if self.peers.pop(lease_id, None) is not None:
            self._calm_since = now

    def _collect(self, now: float) -> None:
        for lease_id, peer in list(self.peers.items()):
            if now - peer.changed_at > GC_AFTER_S:  # a crashed run's: removed at the next scan
                self._bury(lease_id, peer.record.seq, now)

    # -- joining -------------------------------------------------------------------------------

    def _rejoin(self) -> None:
        # a join that was under way keeps its place: its peers' minute to make room runs
        # on (a cleaner deleting our lease each second began it anew, for ever)
        self._joined, self.active, self.settle_until = False, False, None
        self._calm_since = None
        for peer in self.peers.values():
            peer.baseline_seq, peer.ignored = -1, False

    def _join(self, live: list[Peer], now: float) -> None:
        if self._join_started_at is None:
            self._join_started_at = now
        waited_s = now - self._join_started_at
        for peer in live:
            if not peer.ignored and not peer.acknowledged() \
                    and waited_s >= self.timings.ack_timeout_s:
                peer.ignored = True
                log.warning("the budget lease of %s has made no room for this run in %.0f s "
                            "(it does not follow bulkgene's protocol: planted, or a broken "
                            "client?): going ahead without waiting for it, still counting it "
                            "in case it sends", describe(peer.record), waited_s)
        if all(peer.ignored or peer.acknowledged() for peer in live):
            self._joined = True
            assert self._calm_since is not None
            # start once a server window has passed since the last one lowered or left
            self.settle_until = max([self._calm_since] + [
                peer.low_since for peer in live if peer.low_since is not None]) \
                + self.timings.settle_s

    # -- telling the user -----------------------------------------------------------------------

    def _give_up_s(self) -> float:
        return max(self.timings.give_up_after_s, self.timings.fence_after_s)

    def _watch_inactivity(self, live: list[Peer], now: float, renewed_at: float,
                          write_error: OSError | None) -> None:
        """Say why a run waits; stop it (``failure``) when it has waited too long."""
        if self.active:
            self._inactive_since = None
            return
        if self._inactive_since is None:
            self._inactive_since = now
            self._next_report_at = now + WAIT_REPORT_S
        unrenewed_s = now - renewed_at
        if self.failure is None and unrenewed_s > self._give_up_s():
            self.failure = BudgetError(
                f"could not renew the budget lease {self.lease_path} for {unrenewed_s:.0f} s "
                f"({write_error or 'the filesystem does not answer'}): the run stopped rather "
                "than risk exceeding the key's rate budget; what finished is committed. Free "
                "space there or fix the directory (or point --budget-dir to another one that "
                "every job on this key can reach), then run the same command again")
        elif self.failure is None and now - self._inactive_since > max(
                self._give_up_s(), 2 * self.timings.ack_timeout_s):
            self.failure = BudgetError(
                f"this run was not let into the key's rate budget for "
                f"{now - self._inactive_since:.0f} s ({self._why_waiting(live, now)}); what "
                "finished is committed: fix that, then run the same command again")
        if now >= self._next_report_at:
            self._next_report_at = now + _REPORT_EVERY_S
            log.info("waiting to share the key's rate budget (%.0f s so far): %s",
                     now - self._inactive_since, self._why_waiting(live, now, write_error,
                                                                   unrenewed_s))

    def _why_waiting(self, live: list[Peer], now: float, write_error: OSError | None = None,
                     unrenewed_s: float = 0.0) -> str:
        if unrenewed_s > self.timings.fence_after_s:
            return (f"the lease {self.lease_path} could not be renewed for {unrenewed_s:.0f} s "
                    f"({write_error or 'the filesystem does not answer'})")
        deletions = [at for at in self._own_deleted if at >= now - _DELETIONS_SHOWN_S]
        if deletions:
            return (f"its own lease {self.lease_path} was deleted by another process "
                    f"{len(deletions)} time{'s' if len(deletions) > 1 else ''} in the last "
                    f"{max(1.0, now - deletions[0]):.0f} s (a cache or tmp cleaner, a script?), "
                    "so the others may count it gone: it sends nothing until its lease stays "
                    "and they have seen it again. Keep whatever deletes files away from "
                    f"{self.lease_path.parent}")
        pending = [peer for peer in live if not peer.ignored and not peer.acknowledged()]
        if not pending:
            return f"letting the others' last requests leave the server's window ({self.lease_path.parent})"
        hosts = sorted({shown(peer.record.host, 64) for peer in pending})
        holders = "; ".join(describe(peer.record) for peer in pending[:3])
        waited_s = now - (self._join_started_at or now)
        return (f"{len(pending)} of the {len(live)} other lease holders in "
                f"{self.lease_path.parent} have not made room for it yet ({holders}"
                f"{'; ...' if len(pending) > 3 else ''}; on {', '.join(hosts[:5])}"
                f"{', ...' if len(hosts) > 5 else ''}); one that makes none is not waited for "
                f"after {self.timings.ack_timeout_s:.0f} s "
                f"({max(0.0, self.timings.ack_timeout_s - waited_s):.0f} s from now)")

    def _warn_if_crowded(self, live: list[Peer], now: float, fair_rps: float) -> None:
        if len(live) <= self.timings.max_peers:
            self._warned_at.pop("crowd", None)
            return
        if "crowd" in self._warned_at:
            return
        hosts = sorted({shown(peer.record.host, 64) for peer in live})
        self._warned_at["crowd"] = now
        log.warning("%d other processes hold live leases on this key's rate budget in %s (on "
                    "%d hosts: %s%s): more than %d at once is not plausible (planted leases?), "
                    "so this run counts %d and takes %.3g requests/s; if they are all real "
                    "runs, together they exceed the key's budget: run fewer at once",
                    len(live), self.lease_path.parent, len(hosts), ", ".join(hosts[:5]),
                    ", ..." if len(hosts) > 5 else "", self.timings.max_peers + 1,
                    self.timings.max_peers, fair_rps)

    def _warn(self, key: str, message: str, *args: object, now: float) -> None:
        """A warning, at most once a minute of each kind: a cleaner may run in a loop."""
        if now < self._warned_at.get(key, -math.inf) + _WARN_AGAIN_AFTER_S:
            return
        self._warned_at[key] = now
        log.warning(message, *args)
