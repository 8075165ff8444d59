"""A live, key-wide request budget: every bulkgene process using one key runs at budget ÷ live leases.

NCBI's limit (10 req/s with a key, 5 without) is per key, or per IP without one, whatever
process, node or job sends. So every process using the key takes a *lease*: one file in the
budget's directory (``budget_path()``: per user under ``$XDG_CACHE_HOME``, or any directory all
the processes share), named by a random lease id and rewritten every heartbeat by create-temp +
rename of the process's *own* file. No other file is written (a crashed run's lease is removed,
see below), no file locks are taken, and others' files are only read: that is correct on NFS and
Lustre (rename is atomic, and close-to-open consistency gives fresh content to each new open();
a ``nocto`` mount breaks it). The key never appears anywhere: the directory is named by a
truncated salted sha256 of it. Processes share a budget only through a common directory: the
per-user default covers one user's jobs on every node that mounts their home; a lab sharing a
key across users must point all of them to one group-writable directory. Without a key every
process of the directory shares the anonymous budget, even on nodes with different IPs: too
cautious then, never too fast.

**A directory others can write** (files.py, share.py). Whoever shares the directory can plant
files in it. A temp file is created under a fresh random name with ``O_EXCL|O_NOFOLLOW|
O_NONBLOCK`` and renamed over one's own lease; leases are read as small regular files,
non-blocking, without following links; below the directory the user chose, no link is
followed and new directories take the group bits of the one above (a second user of the group
can join). File I/O runs in a daemon thread and no lock is held across it, so neither a FIFO
nor a hung mount holds a SIGTERM or the exit. A lease that makes no room for a newcomer for
60 s is not waited for (still counted); at most 31 others are counted (a share is never below
budget ÷ 32); a lease that vanishes while its process may live counts until it has been unseen
over two scans and ``fence_after_s``, and a process whose own lease vanished (a cleaner)
pauses and joins again: deleted files cannot let two runs exceed the budget.

**Liveness without comparing clocks.** A lease counts as dead when *this* process has not seen
its heartbeat counter change for ``dead_after_s`` of its own monotonic clock. Neither the
``heartbeat_at`` written inside (another client's clock) nor the mtime (the file server's
clock) is compared with ours: NFS clients can be seconds or minutes apart, and a skewed clock
would either kill live leases (budget overrun) or keep dead ones. The price: a stale lease seen
for the first time gets ``dead_after_s`` of benefit of the doubt, which only slows a newcomer.
A finished process deletes its lease; a lease seen unchanged for a minute (a crashed run's) is
deleted by whoever sees it, its owner having fenced itself long before (see below), so no wall
clock decides that either. ``bulkgene status`` (listing.py) judges the same way: a lease of
this host by its pid, one of another host by watching its counter change.

**Joining.** A newcomer writes its lease (state ``joining``, share 0) and sends nothing until
every live lease has (a) written twice since the newcomer first saw it, so it has scanned the
directory after the newcomer's lease existed, and (b) published a share ≤ budget ÷ N as the
newcomer counts N. It starts one server window (1 s + margin) after the last of them was seen
lowered, after its own first scan, and after the last departure it saw, so that no request sent
at an old, higher rate (or by a process that just left) is still in the server's window. The
others lower their share at once when they see it. Acknowledgements, not guessed delays, so a
slow NFS only slows the join. A join longer than 10 s says, at the default verbosity, whom it
waits for.

**Leaving.** Survivors rise only when the lower head-count has held for one server window
(``share = min`` of budget ÷ N over the last ``window_s + margin``), so the leaver's last
requests are out of the server's window first. A lease gone from the directory is gone at once
if its process is seen dead on this host, else (another host's clean exit looks like a
deletion) after two scans and ``fence_after_s``. A killed process stops counting after
``dead_after_s`` (at once on this host: its pid is dead).

**Fencing.** A process whose own lease write has not succeeded for ``fence_after_s`` (a hung NFS
mount, a stopped process, a full filesystem) must assume the others are about to declare it
dead: its share drops to 0 and it re-joins as a newcomer. ``fence_after_s < dead_after_s`` so it
stops before the others can rise. Unrenewed for ``give_up_after_s`` (the CLI's
``--outage-after``), the lease sets ``failure`` naming the path and errno, and the run stops.
A stopped process (SIGSTOP, Ctrl-Z, a suspended machine) wakes with every timer due at once:
its pacer asks the lease's clock before each request (``share_rps`` is 0 past the fence), so
nothing leaves before the heartbeat has re-joined it, and the lease says it was stopped
(its heartbeat woke that late), not that the filesystem does not answer.

**Timings** (defaults): heartbeat 1 s; dead after 5 s without a visible change; fence after
3 s without a successful write; server window 1 s + 0.25 s margin. A heartbeat is one listdir,
a few small reads and one rename: cheap even for dozens of processes. Five missed heartbeats
before a death leaves room for NFS metadata stalls of several seconds (false deaths would
overrun the budget; fencing covers the rest), while a SIGKILLed process costs the survivors
only ~6-8 s at a lower rate and a clean exit ~2-3 s on one host (~4-5 s from another host);
a newcomer starts ~2-3 s after its lease is written (~1.3 s when alone). Measured with real
processes on one (loaded) machine: alone, admitted 1.9 s after the interpreter started; a
second one sending 1.4 s after the first was seen lowered for it; the survivor back at full
rate 7.6 s after a SIGKILL, 2.7 s after a clean exit.
"""

from bulkgene.budget.lease import GIVE_UP_AFTER_S, BudgetLease
from bulkgene.budget.listing import LeaseView, list_leases
from bulkgene.budget.record import (
    ACK_TIMEOUT_S,
    DEAD_AFTER_S,
    FENCE_AFTER_S,
    GC_AFTER_S,
    HEARTBEAT_S,
    MARGIN_S,
    MAX_PEERS,
    SERVER_WINDOW_S,
    LeaseRecord,
    budget_name,
    budget_path,
    default_budget_root,
)

__all__ = [
    "ACK_TIMEOUT_S",
    "DEAD_AFTER_S",
    "FENCE_AFTER_S",
    "GC_AFTER_S",
    "GIVE_UP_AFTER_S",
    "HEARTBEAT_S",
    "MARGIN_S",
    "MAX_PEERS",
    "SERVER_WINDOW_S",
    "BudgetLease",
    "LeaseRecord",
    "LeaseView",
    "budget_name",
    "budget_path",
    "default_budget_root",
    "list_leases",
]
