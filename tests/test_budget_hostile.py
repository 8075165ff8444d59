"""A shared budget directory turned against its users: planted links, FIFOs, leases and deletions."""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import subprocess
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from bulkgene.budget import (
    ACK_TIMEOUT_S,
    MAX_PEERS,
    BudgetLease,
    LeaseRecord,
    list_leases,
)
from bulkgene.budget.record import LEASE_SUFFIX
from bulkgene.errors import BudgetError, ConfigError

VICTIM_BYTES = b"a file the attacker wants overwritten\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_lease(directory: Path, clock: FakeClock, **settings: object) -> BudgetLease:
    real_start = time.time()
    return BudgetLease(directory, 10.0, clock=clock,
                       wall_clock=lambda: real_start + clock.now, **settings)  # type: ignore[arg-type]  # settings are BudgetLease's keyword options


def admitted(directory: Path, clock: FakeClock) -> BudgetLease:
    lease = make_lease(directory, clock)
    lease.open()
    for _ in range(3):
        lease.step()
        clock.now += 1.0
    assert lease.share_rps == 10.0
    return lease


class Planted:
    """A lease written by hand: an attacker's, or a peer that misbehaves on cue."""

    def __init__(self, directory: Path, lease_id: str, *, host: str = "node9", pid: int = 99,
                 out_dir: str = "/elsewhere", state: str = "active", share_rps: float = 10.0,
                 heartbeat_at: float = 0.0) -> None:
        self.path = directory / (lease_id + LEASE_SUFFIX)
        self.fields = dict(lease_id=lease_id, host=host, pid=pid, out_dir=out_dir,
                           started_at=0.0, heartbeat_at=heartbeat_at, state=state,
                           share_rps=share_rps, rate_rps=share_rps, total_rps=10.0)
        self.seq = 0

    def beat(self, **changes: object) -> None:
        self.seq += 1
        self.fields.update(changes)
        record = LeaseRecord(seq=self.seq, **self.fields)  # type: ignore[arg-type]  # the fields are LeaseRecord's
        temp = self.path.with_name(self.path.name + ".planting")
        temp.write_bytes(msgspec.json.encode(record))
        os.replace(temp, self.path)


# -- 6. links -------------------------------------------------------------------------------


def test_a_link_planted_at_a_lease_or_temp_name_is_never_followed(tmp_path: Path) -> None:
    budget, victim = tmp_path / "budget", tmp_path / "victim.txt"
    budget.mkdir()
    victim.write_bytes(VICTIM_BYTES)
    clock = FakeClock()
    lease = admitted(budget, clock)
    # the attacker sees the lease's name, and plants links at every name it can guess
    (budget / f".{lease.lease_id}.tmp").symlink_to(victim)
    os.unlink(lease.path)
    lease.path.symlink_to(victim)
    for _ in range(3):
        lease.step()
        clock.now += 1.0
    assert victim.read_bytes() == VICTIM_BYTES
    assert not lease.path.is_symlink() and lease.path.is_file()  # the link was replaced
    lease.close()
    assert victim.read_bytes() == VICTIM_BYTES


def test_a_link_below_the_chosen_budget_directory_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "lab-budget", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "api.ncbi.nlm.nih.gov").symlink_to(elsewhere)
    lease = make_lease(root / "api.ncbi.nlm.nih.gov" / "key-0123", FakeClock(), root=root)
    with pytest.raises(ConfigError, match=r"api\.ncbi\.nlm\.nih\.gov.* symbolic link"):
        lease.open()
    assert list(elsewhere.iterdir()) == []


def test_a_budget_directory_swapped_for_a_link_mid_run_is_not_followed(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "lab-budget", tmp_path / "elsewhere"
    elsewhere.mkdir()
    clock = FakeClock()
    lease = make_lease(root / "api.ncbi.nlm.nih.gov" / "key-0123", clock, root=root)
    lease.open()
    for _ in range(3):
        lease.step()
        clock.now += 1.0
    lease.directory.rename(tmp_path / "moved-away")
    lease.directory.symlink_to(elsewhere)
    for _ in range(5):
        lease.step()
        clock.now += 1.0
    assert list(elsewhere.iterdir()) == []
    assert lease.share_rps == 0.0  # it can't renew its lease: fenced, as on a hung mount
    lease.close()
    assert list(elsewhere.iterdir()) == []


# -- 7. hangs -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_fifo_at_a_temp_or_lease_name_hangs_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    lease = admitted(tmp_path, clock)
    os.mkfifo(tmp_path / f".{lease.lease_id}.tmp")  # opening it for writing blocks for ever
    for _ in range(3):
        assert lease.step() == 10.0
        clock.now += 1.0
    os.unlink(lease.path)
    os.mkfifo(lease.path)
    assert lease.step() == 10.0 and stat.S_ISREG(lease.path.lstat().st_mode)
    lease.close()


def test_a_lease_that_cannot_be_renewed_stops_the_run_naming_the_path_and_errno(
        tmp_path: Path) -> None:
    clock = FakeClock()
    lease = make_lease(tmp_path, clock, give_up_after_s=120.0)
    lease.open()
    for _ in range(3):
        lease.step()
        clock.now += 1.0
    os.unlink(lease.path)
    lease.path.mkdir()  # a rename onto it fails: EISDIR
    while clock.now < 1003 + 119:
        lease.step()
        assert lease.failure is None
        clock.now += 1.0
    assert lease.share_rps == 0.0  # fenced meanwhile
    clock.now += 2.0
    lease.step()
    assert isinstance(lease.failure, BudgetError)
    message = str(lease.failure)
    assert str(lease.path) in message and "Is a directory" in message
    assert f"[Errno {errno.EISDIR}]" in message and "--budget-dir" in message


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root and mount): the budget filesystem that fills mid-run."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                              str(mount_point)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"can't mount a small filesystem here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_budget_filesystem_that_fills_mid_run_stops_the_run_with_enospc(
        tiny_filesystem: Path) -> None:
    clock = FakeClock()
    lease = make_lease(tiny_filesystem / "budget", clock, give_up_after_s=60.0)
    lease.open()
    for _ in range(3):
        lease.step()
        clock.now += 1.0
    filler = os.open(tiny_filesystem / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="No space left"):
            while True:
                os.write(filler, b"x" * 4096)
    finally:
        os.close(filler)
    while lease.failure is None and clock.now < 2000:
        lease.step()
        clock.now += 1.0
    assert isinstance(lease.failure, BudgetError)
    assert f"[Errno {errno.ENOSPC}]" in str(lease.failure) and str(lease.path) in str(lease.failure)


# -- 8. planted leases -----------------------------------------------------------------------


def test_a_planted_lease_that_never_makes_room_delays_a_newcomer_by_a_minute_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bulkgene")
    clock = FakeClock()
    planted = Planted(tmp_path, "feedfacefeedface", host="evil-node", share_rps=10.0)
    planted.beat()
    lease = make_lease(tmp_path, clock)
    lease.open()
    shares = []
    while clock.now < 1000 + 2 * ACK_TIMEOUT_S:
        planted.beat()  # it heartbeats, but never lowers its share
        shares.append((clock.now - 1000, lease.step()))
        clock.now += 1.0
    started = next(t for t, share in shares if share > 0)
    assert ACK_TIMEOUT_S <= started <= ACK_TIMEOUT_S + 5
    # still counted, in case it is a real run: together within the budget
    assert shares[-1][1] == 5.0
    text = caplog.text
    waiting = [r.getMessage() for r in caplog.records
               if r.levelno >= logging.INFO and "evil-node" in r.getMessage()]
    assert any("waiting" in message for message in waiting), text  # says why, at once-ish
    assert any(r.levelno == logging.WARNING and "evil-node" in r.getMessage()
               and "60 s" in r.getMessage() for r in caplog.records), text


@pytest.mark.slow
def test_two_hundred_planted_leases_cannot_starve_a_running_job(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    lease = admitted(tmp_path, clock)
    planted = [Planted(tmp_path, f"{n:016x}", state="joining", share_rps=0.0)
               for n in range(200)]
    for _ in range(20):  # they heartbeat, and make room for everyone: the perfect peers
        for peer in planted:
            peer.beat()
        lease.step()
        clock.now += 1.0
    assert lease.share_rps == pytest.approx(10.0 / (1 + MAX_PEERS))
    assert MAX_PEERS >= 16  # a real array of 16 tasks on one key is still shared exactly
    assert any("200" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records), caplog.text


def test_a_planted_lease_claiming_a_tiny_budget_does_not_starve_the_key(tmp_path: Path) -> None:
    clock = FakeClock()
    lease = admitted(tmp_path, clock)
    planted = Planted(tmp_path, "feedfacefeedface", state="joining", share_rps=0.0)
    planted.fields["total_rps"] = 1.0  # NCBI's smallest budget is 5/s
    for _ in range(10):
        planted.beat()
        lease.step()
        clock.now += 1.0
    assert lease.share_rps >= 2.5


# -- 10. deleted leases ----------------------------------------------------------------------


def in_force_check(leases: list[BudgetLease], clock: FakeClock, seconds: float,
                   delete_every_s: float | None, tmp_path: Path) -> list[float]:
    """Step the leases on their heartbeats while a cleaner deletes every ``*.lease``; assert
    that the shares in force over the last server window never add up to more than 10."""
    tick_s, window_s = 0.05, 1.0
    samples: list[deque[tuple[float, float]]] = [deque() for _ in leases]
    next_beat = [clock.now + 0.3 * i for i in range(len(leases))]
    next_delete = clock.now
    end = clock.now + seconds
    totals = []
    while clock.now < end:
        if delete_every_s is not None and clock.now >= next_delete:
            for path in tmp_path.glob("*" + LEASE_SUFFIX):
                path.unlink()
            next_delete += delete_every_s
        for i, lease in enumerate(leases):
            if clock.now >= next_beat[i]:
                lease.step()
                next_beat[i] += 1.0
        in_force = 0.0
        for lease, history in zip(leases, samples, strict=True):
            history.append((clock.now, lease.share_rps))
            while history and history[0][0] < clock.now - window_s:
                history.popleft()
            in_force += max(share for _, share in history)
        assert in_force <= 10.0 + 1e-9, f"{in_force} in force at t={clock.now - 1000:.2f}"
        totals.append(in_force)
        clock.now = round(clock.now + tick_s, 6)
    return totals


def test_a_lease_deleted_by_a_cleaner_never_lets_two_runs_exceed_the_budget(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    leases = [make_lease(tmp_path, clock) for _ in range(2)]
    for lease in leases:
        lease.open()
    in_force_check(leases, clock, 8, None, tmp_path)
    assert [lease.share_rps for lease in leases] == [5.0, 5.0]
    for path in tmp_path.glob("*" + LEASE_SUFFIX):  # a cache cleaner passes once
        path.unlink()
    in_force_check(leases, clock, 20, None, tmp_path)
    assert [lease.share_rps for lease in leases] == [5.0, 5.0]  # and they recover
    assert any("deleted" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records), caplog.text


@pytest.mark.parametrize("every_s", [0.1, 0.7, 1.3, 2.9])
def test_a_cleaner_deleting_leases_over_and_over_never_lets_runs_exceed_the_budget(
        tmp_path: Path, every_s: float) -> None:
    clock = FakeClock()
    leases = [make_lease(tmp_path, clock) for _ in range(2)]
    for lease in leases:
        lease.open()
    in_force_check(leases, clock, 8, None, tmp_path)
    in_force_check(leases, clock, 40, every_s, tmp_path)


def test_a_budget_directory_removed_by_a_cleaner_is_made_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    clock = FakeClock()
    lease = admitted(tmp_path / "budget", clock)
    shutil.rmtree(lease.directory)
    shares = []
    for _ in range(5):
        shares.append(lease.step())
        clock.now += 1.0
    # the others' scans failed meanwhile: none of them can have counted it gone
    assert shares == [10.0] * 5 and lease.path.is_file()
    assert "was removed by another process" in caplog.text


# -- 11. status, from one look ----------------------------------------------------------------


def test_status_does_not_list_a_skewed_or_dead_lease_as_live(tmp_path: Path) -> None:
    ahead = Planted(tmp_path, "aaaaaaaaaaaaaaaa", host="skewed-node",
                    heartbeat_at=time.time() + 3600)  # its clock runs an hour ahead
    ahead.beat()
    dead = Planted(tmp_path, "bbbbbbbbbbbbbbbb", host=socket.gethostname(), pid=1 << 30,
                   heartbeat_at=time.time())
    dead.beat()
    assert [view.alive for view in list_leases(tmp_path, watch_s=0.5)] == [False, False]


def test_status_sees_a_lease_of_another_host_heartbeat_whatever_its_clock(
        tmp_path: Path) -> None:
    behind = Planted(tmp_path, "cccccccccccccccc", host="slow-clock-node",
                     heartbeat_at=time.time() - 3600)
    behind.beat()
    # list_leases watches for a change in its counter: let it change while it watches
    import threading

    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(0.05):
            behind.beat()

    beating = threading.Thread(target=heartbeat)
    beating.start()
    try:
        [view] = list_leases(tmp_path, watch_s=30.0)
    finally:
        stop.set()
        beating.join()
    assert view.alive


# -- 9. a directory shared by a group -----------------------------------------------------------


def test_budget_subdirectories_take_the_group_bits_of_the_shared_directory(
        tmp_path: Path) -> None:
    root = tmp_path / "lab-budget"
    root.mkdir()
    os.chmod(root, 0o2770)  # what a lab sets up: setgid, group-writable
    old_umask = os.umask(0o022)
    try:
        lease = make_lease(root / "api.ncbi.nlm.nih.gov" / "key-0123", FakeClock(), root=root)
        lease.open()
    finally:
        os.umask(old_umask)
    for directory in (root / "api.ncbi.nlm.nih.gov", lease.directory):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o2770, directory
    # readable by the group whatever the umask: a lease nobody can read counts for nothing
    assert stat.S_IMODE(lease.path.stat().st_mode) & 0o044 == 0o044
    lease.close()


def test_permission_denied_names_the_owner_and_the_mode(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root is never denied: the two-user test covers this as root")
    budget = tmp_path / "budget"
    budget.mkdir()
    os.chmod(budget, 0o555)
    try:
        with pytest.raises(ConfigError) as caught:
            make_lease(budget, FakeClock()).open()
    finally:
        os.chmod(budget, 0o755)
    message = str(caught.value)
    assert "Permission denied" in message and "dr-xr-xr-x" in message
    assert f"uid {os.getuid()}" in message or os.environ.get("USER", "?") in message


# started as root (the interpreter lives under /root), it becomes the user once imported
TWO_USERS_CHILD = """
import os, sys
from pathlib import Path
from bulkgene.budget import BudgetLease
from bulkgene.errors import ConfigError
uid, gid, root = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
os.setgroups([gid])
os.setgid(gid)
os.setuid(uid)
os.umask(0o022)
lease = BudgetLease(root / "api.ncbi.nlm.nih.gov" / "key-0123", 10.0, root=root)
try:
    lease.open()
except ConfigError as exc:
    print(exc)
    sys.exit(2)
lease.step()
print("joined", oct(os.stat(lease.directory).st_mode))
"""


def run_as(uid: int, gid: int, root: Path) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-c", TWO_USERS_CHILD, str(uid), str(gid), str(root)],
                          capture_output=True, text=True, check=False, cwd="/",
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


@pytest.fixture
def shared_by_a_group() -> Iterator[Path]:
    """A budget directory set up as the README says (root's, group 4242, mode 2770), in a
    place two other uids of that group can reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run children as two other users")
    import shutil
    import tempfile

    place = Path(tempfile.mkdtemp(prefix="bulkgene-two-users-"))
    try:
        os.chmod(place, 0o755)
        root = place / "lab-budget"
        root.mkdir()
        os.chown(root, 0, 4242)
        os.chmod(root, 0o2770)
        yield root
    finally:
        shutil.rmtree(place)


def test_a_second_user_of_the_group_can_join_the_budget(shared_by_a_group: Path) -> None:
    first = run_as(5101, 4242, shared_by_a_group)
    if first.returncode != 0 and "Operation not permitted" in first.stderr:
        pytest.skip("this machine does not let root change uid")
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_as(5102, 4242, shared_by_a_group)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "joined" in second.stdout


def test_a_directory_made_without_group_bits_is_named_with_its_owner_and_mode(
        shared_by_a_group: Path) -> None:
    # made by an older bulkgene, or by hand, under umask 022
    below = shared_by_a_group / "api.ncbi.nlm.nih.gov"
    below.mkdir()
    os.chown(below, 5101, 4242)
    os.chmod(below, 0o2755)
    denied = run_as(5102, 4242, shared_by_a_group)
    if denied.returncode != 0 and "Operation not permitted" in denied.stderr:
        pytest.skip("this machine does not let root change uid")
    assert denied.returncode == 2, denied.stdout + denied.stderr
    assert "Permission denied" in denied.stdout and "uid 5101" in denied.stdout
    assert "drwxr-sr-x" in denied.stdout and "chmod" in denied.stdout
    # its owner's next run repairs it (adds the group bits of the directory above)
    assert run_as(5101, 4242, shared_by_a_group).returncode == 0
    assert stat.S_IMODE(below.stat().st_mode) == 0o2775  # bits added, none taken away
    assert run_as(5102, 4242, shared_by_a_group).returncode == 0


def test_a_cleaner_in_a_loop_is_named_as_the_reason_runs_wait_and_stop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Deleting *.lease every 0.3 s: both runs waited for 600 s, repeating "not waited for
    after 60 s (60 s from now)" all along, since each deletion began the wait anew."""
    caplog.set_level(logging.INFO, logger="bulkgene")
    clock = FakeClock()
    leases = [make_lease(tmp_path, clock, give_up_after_s=100.0) for _ in range(2)]
    for lease in leases:
        lease.open()
    in_force_check(leases, clock, 8, None, tmp_path)
    caplog.clear()
    in_force_check(leases, clock, 2 * ACK_TIMEOUT_S + 10, 0.3, tmp_path)
    waiting = [r.getMessage() for r in caplog.records if "waiting to share" in r.getMessage()]
    assert waiting, caplog.text
    for message in waiting:  # what it waits for is what keeps it waiting
        assert "deleted" in message and "another process" in message, message
        assert "s from now" not in message or "deleted" in message
    promised = [int(m.split("(")[-1].split(" s from now")[0]) for m in waiting
                if " s from now)" in m]
    assert promised == sorted(promised, reverse=True), "a countdown that never restarts"
    failures = [lease.failure for lease in leases]
    assert all(failures), "they stop, rather than wait for ever"
    assert all("deleted" in str(failure) for failure in failures), failures
