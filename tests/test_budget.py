"""Budget leases: join, leave, death, fencing and clock skew, on a fake clock and real files."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import msgspec
import pytest

from bulkgene.budget import (
    DEAD_AFTER_S,
    FENCE_AFTER_S,
    GC_AFTER_S,
    BudgetLease,
    LeaseRecord,
    budget_name,
    budget_path,
    list_leases,
)
from bulkgene.errors import ConfigError
from bulkgene.processes import process_alive

KEY = "0123456789abcdef0123456789abcdef0123"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_lease(directory: Path, clock: FakeClock, total_rps: float = 10.0,
               wall_offset_s: float = 0.0, out_dir: str | Path = "") -> BudgetLease:
    # the wall clock starts at the real time: `status` judges a lease of this host by it
    real_start, fake_start = time.time(), clock.now
    return BudgetLease(directory, total_rps, clock=clock, out_dir=out_dir,
                       wall_clock=lambda: real_start + clock.now - fake_start + wall_offset_s)


def run_together(clock: FakeClock, leases: tuple[BudgetLease, ...], seconds: int) -> None:
    """Open ``leases`` and let each heartbeat once a second for ``seconds`` (fake clock)."""
    for lease in leases:
        lease.open()
    for _ in range(seconds):
        for lease in leases:
            lease.step()
        clock.now += 1.0


def test_the_budget_name_hides_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = budget_name(KEY)
    assert KEY not in name and KEY[:8] not in name
    assert name == budget_name(KEY) != budget_name(KEY[:-1] + "4")
    assert budget_name(None) == budget_name("") == "anonymous"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert budget_path(KEY) == tmp_path / "bulkgene" / "budget" / name
    assert budget_path(None, tmp_path / "lab") == tmp_path / "lab" / "anonymous"


def test_the_lease_file_names_the_process_but_not_the_key(tmp_path: Path) -> None:
    clock = FakeClock()
    lease = make_lease(budget_path(KEY, tmp_path), clock, out_dir=tmp_path / "out")
    lease.open()
    lease.report_rate(4.0)
    lease.step()
    clock.now += 2.0
    assert lease.step() == 10.0
    [view] = list_leases(lease.directory)
    assert (view.record.pid, view.record.out_dir, view.record.state) == (
        os.getpid(), str(tmp_path / "out"), "active")
    assert (view.record.share_rps, view.record.rate_rps) == (10.0, 4.0)
    assert view.alive
    for path in tmp_path.rglob("*"):
        assert KEY not in str(path)
        if path.is_file():
            assert KEY.encode() not in path.read_bytes()
    lease.close()
    assert list_leases(lease.directory) == []
    assert list(lease.directory.iterdir()) == []


def test_an_unwritable_budget_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    lease = make_lease(tmp_path / "file" / "budget", FakeClock())
    with pytest.raises(ConfigError, match=r"could not create the budget directory .*--budget-dir"):
        lease.open()


def test_a_newcomer_waits_until_the_others_have_lowered(tmp_path: Path) -> None:
    clock = FakeClock()
    first, second = make_lease(tmp_path, clock), make_lease(tmp_path, clock)
    first.open()
    first.step()
    clock.now += 2.0
    assert first.step() == 10.0
    second.open()
    shares = []
    for _ in range(6):
        shares.append((first.step(), second.step()))
        clock.now += 1.0
    assert shares[0] == (5.0, 0.0)  # the old one lowers as soon as it sees the newcomer
    assert all(a + b <= 10.0 for a, b in shares)
    assert shares[-1] == (5.0, 5.0)
    # the newcomer started only once the other had heartbeated twice since seeing it, and one
    # server window after the other's lowered share was published
    first_sending = next(i for i, (_, b) in enumerate(shares) if b > 0)
    assert first_sending >= 2


def test_a_newcomer_alone_still_waits_out_one_who_just_left(tmp_path: Path) -> None:
    clock = FakeClock()
    leaver, newcomer = make_lease(tmp_path, clock), make_lease(tmp_path, clock)
    leaver.open()
    leaver.step()
    clock.now += 2.0
    assert leaver.step() == 10.0
    leaver.close()  # its last requests are still in the server's window
    newcomer.open()
    shares = []
    for _ in range(6):
        shares.append((clock.now, newcomer.step()))
        clock.now += 0.25
    assert next(t for t, share in shares if share == 10.0) >= shares[0][0] + 1.0


def write_peer(directory: Path, seq: int, state: str, share_rps: float) -> None:
    """Another process's lease, written by hand to play a peer that misbehaves on cue."""
    record = LeaseRecord("feedfacefeedface", "node9", 99, "/elsewhere", 0.0, 0.0, seq, state,
                         share_rps, share_rps, 10.0)
    (directory / "feedfacefeedface.lease").write_bytes(msgspec.json.encode(record))


def test_a_peer_that_has_not_heartbeated_since_we_came_has_not_seen_us(tmp_path: Path) -> None:
    clock = FakeClock()
    write_peer(tmp_path, 7, "active", 5.0)  # its share happens to fit, but it never looks again
    lease = make_lease(tmp_path, clock)
    lease.open()
    shares = []
    for _ in range(10):
        shares.append(lease.step())
        clock.now += 1.0
    assert shares[:int(DEAD_AFTER_S)] == [0.0] * int(DEAD_AFTER_S)  # waits for its death
    assert shares[-1] == 10.0


def test_a_joining_peer_that_starts_without_counting_us_is_not_an_acknowledgement(
        tmp_path: Path) -> None:
    clock = FakeClock()
    write_peer(tmp_path, 1, "joining", 0.0)
    lease = make_lease(tmp_path, clock)
    lease.open()
    lease.step()
    for seq in (2, 3, 4, 5, 6):  # admitted on its own, it takes the whole budget
        clock.now += 1.0
        write_peer(tmp_path, seq, "active" if seq > 2 else "joining", 0.0 if seq == 2 else 10.0)
        assert lease.step() == 0.0
    for seq in range(7, 10):  # now it counts us
        clock.now += 1.0
        write_peer(tmp_path, seq, "active", 5.0)
        lease.step()
    assert lease.share_rps == 5.0


@pytest.mark.parametrize("where", ["this host", "another host"])
def test_survivors_rise_one_window_after_a_clean_exit(tmp_path: Path, where: str) -> None:
    """A lease gone with its process (seen dead, here) is gone at once; one of another host
    may have been deleted under a live process, which stops when it notices (at its next
    scan): it counts until it must have, unseen over two scans and for fence_after_s."""
    clock = FakeClock()
    survivors = [make_lease(tmp_path, clock) for _ in range(2)]
    for lease in survivors:
        lease.open()
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                               stdin=subprocess.PIPE)
    host = socket.gethostname() if where == "this host" else "node9"
    leaver = LeaseRecord("feedfacefeedface", host, process.pid, "/elsewhere", 0.0, 0.0, 0,
                         "active", 10 / 3, 10 / 3, 10.0)
    leaver_path = tmp_path / "feedfacefeedface.lease"
    try:
        for seq in range(1, 9):  # it heartbeats beside them, at its third
            leaver_path.write_bytes(msgspec.json.encode(msgspec.structs.replace(leaver, seq=seq)))
            for lease in survivors:
                lease.step()
            clock.now += 1.0
        survivor = survivors[0]
        assert survivor.share_rps == pytest.approx(10 / 3)
        leaver_path.unlink()
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait()
    left_at, shares = clock.now, []
    while clock.now < left_at + 10:
        for lease in survivors:
            lease.step()
        shares.append((clock.now, survivor.share_rps))
        clock.now += 1.0
    rise_at = next(t for t, share in shares if share == pytest.approx(5.0))
    if where == "this host":
        assert rise_at == left_at + 2.0  # gone at its first scan, then one window
    else:
        assert rise_at >= left_at + FENCE_AFTER_S + 1.0


def test_a_killed_process_stops_counting_after_the_dead_timeout(tmp_path: Path) -> None:
    clock = FakeClock()
    survivor, killed = make_lease(tmp_path, clock), make_lease(tmp_path, clock)
    run_together(clock, (survivor, killed), 5)
    assert survivor.share_rps == killed.share_rps == 5.0
    seen = []
    while clock.now < 1020:  # the killed one never steps again
        seen.append((clock.now, survivor.step()))
        clock.now += 0.5
    rise_at = next(t for t, share in seen if share == 10.0)
    last_change = seen[0][0] - 0.5
    assert rise_at >= last_change + DEAD_AFTER_S + 1.0
    assert survivor.peers == 0


def test_a_stalled_process_fences_itself_before_the_others_rise(tmp_path: Path) -> None:
    clock = FakeClock()
    steady, stalled = make_lease(tmp_path, clock), make_lease(tmp_path, clock)
    run_together(clock, (steady, stalled), 5)
    history = []
    for _ in range(40):  # stalled stops renewing (a hung NFS write) but still reads its share
        history.append((clock.now, steady.step(), stalled.share_rps))
        clock.now += 0.25
    fenced_at = next(t for t, _, share in history if share == 0.0)
    rise_at = next(t for t, share, _ in history if share == 10.0)
    assert fenced_at + 1.0 < rise_at
    assert all(a + b <= 10.0 for _, a, b in history)
    # it comes back: a newcomer again, admitted only once the steady one lowered
    pairs = []
    for _ in range(10):
        pairs.append((steady.step(), stalled.step()))
        clock.now += 1.0
    assert pairs[0][1] == 0.0
    assert all(a + b <= 10.0 for a, b in pairs)
    assert pairs[-1] == (5.0, 5.0)


def test_liveness_ignores_clock_skew_between_hosts(tmp_path: Path) -> None:
    clock = FakeClock()
    here = make_lease(tmp_path, clock)
    behind = make_lease(tmp_path, clock, wall_offset_s=-2 * GC_AFTER_S)
    ahead = make_lease(tmp_path, clock, wall_offset_s=+2 * GC_AFTER_S)
    run_together(clock, (here, behind, ahead), 30)
    assert [lease.share_rps for lease in (here, behind, ahead)] == pytest.approx([10 / 3] * 3)
    assert len(list(tmp_path.glob("*.lease"))) == 3  # nothing collected for its odd clock


def test_a_lease_left_by_a_crashed_run_is_ignored_then_collected(tmp_path: Path) -> None:
    clock = FakeClock()
    old_path = tmp_path / "deadbeefdeadbeef.lease"
    old = LeaseRecord("deadbeefdeadbeef", "node7", 4242, "/out", 0.0, 0.0, 9, "active", 5.0, 5.0, 10.0)
    old_path.write_bytes(msgspec.json.encode(old))
    temp = tmp_path / ".deadbeefdeadbeef.tmp"
    temp.write_bytes(b"{")
    (tmp_path / "notes.txt").write_text("someone else's file")
    lease = make_lease(tmp_path, clock)
    lease.open()
    shares = []
    while clock.now < 1000 + GC_AFTER_S + 3:
        shares.append(lease.step())
        clock.now += 1.0
    # counted (as a possible live process) until the dead timeout, then ignored
    assert shares[0] == 0.0 and shares[-1] == 10.0
    assert DEAD_AFTER_S <= shares.index(10.0) <= DEAD_AFTER_S + 2  # + one server window
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", lease.path.name])
    # written again, it is a newcomer: counted at once
    old_path.write_bytes(msgspec.json.encode(old))
    assert lease.step() == 5.0


def test_the_smallest_budget_any_process_knows_wins(tmp_path: Path) -> None:
    clock = FakeClock()
    keyed, anonymous = make_lease(tmp_path, clock, 10.0), make_lease(tmp_path, clock, 5.0)
    run_together(clock, (keyed, anonymous), 6)
    assert keyed.share_rps == anonymous.share_rps == 2.5


def test_list_leases_judges_a_lease_of_this_host_by_its_pid_and_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    lease = make_lease(tmp_path, clock)
    lease.open()
    lease.step()
    [view] = list_leases(tmp_path, watch_s=0.0)  # this host's: no watching needed
    assert view.alive and view.directory == tmp_path
    [view] = list_leases(tmp_path, watch_s=0.0, wall_clock=lambda: time.time() + 60)
    assert not view.alive and view.heartbeat_age_s == pytest.approx(60, abs=5)
    assert list_leases(tmp_path / "missing") == []


# five seeds in the default run; all twenty, each ~0.2 s, with `slow` (as .ci/run does)
@pytest.mark.parametrize("seed", [*range(5), *(pytest.param(seed, marks=pytest.mark.slow)
                                               for seed in range(5, 20))])
@pytest.mark.parametrize("cleaner", [False, True], ids=["", "cleaner"])
@pytest.mark.slow
def test_random_joins_exits_kills_and_stalls_never_overrun_the_budget(
        tmp_path: Path, seed: int, cleaner: bool) -> None:
    """At every instant, the shares in force during the last server window sum to ≤ the budget
    (with ``cleaner``, lease files are also deleted under live processes at random)."""
    rng = random.Random(seed)
    cleaner_rng = random.Random(1000 + seed)
    clock = FakeClock()
    total_rps, window_s, tick_s = 10.0, 1.0, 0.05
    running: dict[int, BudgetLease] = {}
    next_beat: dict[int, float] = {}
    stalled_until: dict[int, float] = {}
    samples: dict[int, deque[tuple[float, float]]] = {}
    gone: set[int] = set()
    serial = 0

    def start() -> None:
        nonlocal serial
        serial += 1
        lease = make_lease(tmp_path, clock)
        lease.open()
        running[serial], next_beat[serial], samples[serial] = lease, clock.now, deque()

    for _ in range(2):
        start()
    end_events = clock.now + 60
    while clock.now < end_events + 15:
        if cleaner and clock.now < end_events and cleaner_rng.random() < 0.01:
            leases = sorted(tmp_path.glob("*.lease"))
            if leases:
                cleaner_rng.choice(leases).unlink()
        if clock.now < end_events and rng.random() < 0.01:
            event = rng.choice(["start", "start", "exit", "kill", "stall"])
            victims = [i for i in running if i not in stalled_until]
            if event == "start" or len(victims) < 2:  # keep someone running, to check the end
                start()
            else:
                victim = rng.choice(victims)
                if event == "stall":
                    stalled_until[victim] = clock.now + rng.uniform(1.0, 9.0)
                else:
                    if event == "exit":
                        running[victim].close()
                    del running[victim]
                    gone.add(victim)
        for ident, lease in running.items():
            if stalled_until.get(ident, 0.0) > clock.now:
                continue
            stalled_until.pop(ident, None)
            if clock.now >= next_beat[ident]:
                lease.step()
                next_beat[ident] = clock.now + rng.uniform(0.8, 1.2)
        in_force = 0.0
        for ident, history in samples.items():
            # a stalled process still sends at whatever its share says (its loop may run on)
            history.append((clock.now, 0.0 if ident in gone else running[ident].share_rps))
            while history and history[0][0] < clock.now - window_s:
                history.popleft()
            in_force += max(share for _, share in history)
        assert in_force <= total_rps + 1e-9, f"seed {seed} at t={clock.now - 1000:.2f}"
        clock.now = round(clock.now + tick_s, 6)
    live = list(running.values())
    assert live, "the scenario must leave someone running"
    assert [lease.share_rps for lease in live] == pytest.approx([total_rps / len(live)] * len(live))


class _Timings(TypedDict):
    heartbeat_s: float
    dead_after_s: float
    fence_after_s: float
    window_s: float
    margin_s: float


@pytest.mark.slow
async def test_async_leases_follow_joins_and_exits(tmp_path: Path) -> None:
    # generous dead/fence timeouts: a loaded test machine must not see false deaths here
    timings: _Timings = {"heartbeat_s": 0.05, "dead_after_s": 3.0, "fence_after_s": 2.0,
                         "window_s": 0.05, "margin_s": 0.05}
    reported: list[float] = []

    async def until(condition: Callable[[], bool], deadline_s: float = 30.0) -> None:
        give_up = time.monotonic() + deadline_s
        while not condition():
            assert time.monotonic() < give_up, "the leases never reached the expected shares"
            await asyncio.sleep(0.01)

    async with BudgetLease(tmp_path, 8.0, on_share=reported.append, **timings) as first:
        assert await first.wait_admitted() == 8.0
        changes = first.watch()
        assert await anext(changes) == 8.0
        async with BudgetLease(tmp_path, 8.0, **timings) as second:
            assert second.share_rps == 0.0
            await until(lambda: (first.share_rps, second.share_rps) == (4.0, 4.0))
            assert await anext(changes) == 4.0
        # on_share hears the new share at the lease's next step, which may come after
        # share_rps already reads it: wait for what is asserted, the notification
        await until(lambda: first.share_rps == 8.0 and reported[-1] == 8.0)
    assert reported[0] == 0.0 and reported[-1] == 0.0  # nothing before admission, nor after exit
    remaining = iter(reported)
    assert all(share in remaining for share in (8.0, 4.0, 8.0))  # in this order
    assert await asyncio.to_thread(os.listdir, tmp_path) == []


def test_files_in_a_shared_budget_directory_are_not_trusted(tmp_path: Path) -> None:
    from bulkgene.budget.record import LEASE_SUFFIX

    os.mkfifo(tmp_path / f"fifo{LEASE_SUFFIX}")  # reading it would block for ever
    (tmp_path / f"huge{LEASE_SUFFIX}").write_bytes(b" " * 100_000)
    (tmp_path / f"junk{LEASE_SUFFIX}").write_bytes(b"\\xff not a lease")
    assert list_leases(tmp_path) == []


@pytest.mark.parametrize("pid", [1 << 40, -5, 0, 1 << 31])
def test_a_lease_naming_an_impossible_pid_of_this_host_is_dead_at_once(
        tmp_path: Path, pid: int) -> None:
    """os.kill(2**40, 0) raises OverflowError: the heartbeat failed forever, no request left."""
    record = LeaseRecord("feedfacefeedface", socket.gethostname(), pid, "/elsewhere", 0.0, 0.0,
                         1, "active", 10.0, 10.0, 10.0)
    (tmp_path / "feedfacefeedface.lease").write_bytes(msgspec.json.encode(record))
    assert not process_alive(pid)
    clock = FakeClock()
    lease = make_lease(tmp_path, clock)
    lease.open()
    shares = []
    for _ in range(6):
        shares.append(lease.step())
        clock.now += 0.5
    assert shares[-1] == 10.0  # alone, long before a live peer could have been declared dead
