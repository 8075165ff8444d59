"""One API key, many processes: the key's budget is shared live through leases (issue 11)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import msgspec
import pytest
from helpers import (
    EmulatorFactory,
    assert_key_budget_kept,
    cli_command,
    cli_env,
    invoke_cli,
    make_config,
    read_summary,
    served,
    wait_for_commits,
    write_ids,
)

from bulkgene.budget.record import LEASE_SUFFIX, LeaseRecord, budget_name, read_record
from bulkgene.config import Secret, TaskSpec
from bulkgene.errors import EXIT_INTERRUPTED
from bulkgene.run.sharing import budget_directory, lease_directories
from bulkgene.testing import EmulatorThread
from bulkgene.testing.windows import max_in_window

KEY = "sharing-test-key"


def _start(source: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cli_command("fetch", str(source), "--out", str(out), "--batch-size",
                                        "10", "--no-progress"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_lease(budget_dir: Path, deadline_s: float = 60) -> None:
    """Return once a process has taken a lease in ``budget_dir`` (before it is admitted: the
    lease is what `status` shows, and admission waits out a server window)."""
    give_up = time.monotonic() + deadline_s
    while not any(budget_dir.rglob("*" + LEASE_SUFFIX)):
        assert time.monotonic() < give_up, f"no lease was taken in {budget_dir}"
        time.sleep(0.02)


def _rate(times: list[float], start: float, end: float) -> float:
    inside = [t for t in times if start <= t < end]
    return len(inside) / (end - start) if end > start else 0.0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_runs_on_one_key_share_its_budget_and_the_survivor_takes_it_all(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(rate_limit=True, latency_s=0.05)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    first_ids, second_ids = range(1, 1501), range(100_001, 101_001)
    first = _start(write_ids(tmp_path / "a.txt", first_ids), tmp_path / "a", env)
    wait_for_commits(tmp_path / "a", 3)
    second = _start(write_ids(tmp_path / "b.txt", second_ids), tmp_path / "b", env)
    wait_for_commits(tmp_path / "b", 15)
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=30)
    killed_at = emulator.state.clock()
    assert first.wait(timeout=180) == 0
    arrivals = served(emulator.state.arrivals())
    assert_key_budget_kept(arrivals, what=f"the kill at {killed_at - arrivals[0].t:.1f} s: ")
    times = [a.t for a in arrivals]
    a_times = [a.t for a in arrivals if a.first_id is not None and a.first_id < 100_000]
    b_times = [a.t for a in arrivals if a.first_id is not None and a.first_id >= 100_000]
    together = _rate(times, b_times[0] + 2.0, b_times[-1])
    alone_again = _rate(a_times, killed_at + 8.0, a_times[-1])
    print(f"measured: {together:.2f}/s together, {alone_again:.2f}/s for the survivor, "
          f"max {max_in_window(times)} in a second")
    assert together >= 7.5, f"{together:.2f} requests/s together while both ran"
    assert alone_again >= 7.5, f"{alone_again:.2f} requests/s for the survivor"


@pytest.mark.slow
def test_three_runs_started_at_the_same_instant_stay_within_the_budget(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(rate_limit=True)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    runs = [_start(write_ids(tmp_path / f"{n}.txt", range(n * 100_000 + 1, n * 100_000 + 201)),
                   tmp_path / f"out{n}", env) for n in range(3)]
    assert [run.wait(timeout=120) for run in runs] == [0, 0, 0]
    arrivals = served(emulator.state.arrivals())
    assert_key_budget_kept(arrivals)  # the first second included


def test_status_shows_who_shares_the_budget(make_emulator: EmulatorFactory,
                                            tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.2)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    out = tmp_path / "out"
    run = _start(write_ids(tmp_path / "ids.txt", range(1, 2001)), out, env)
    try:
        wait_for_lease(Path(env["BULKGENE_BUDGET_DIR"]))
        shown = invoke_cli("status", str(out), env=env)
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout.decode()
        assert "shared live by 1 process(es)" in text and f"pid {run.pid}" in text
        assert KEY not in text
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)


def test_an_array_task_also_leases_the_per_user_budget_that_a_plain_fetch_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BULKGENE_BUDGET_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plain = make_config(["ids.txt"], tmp_path / "plain", api_key=Secret("sharing-test-key"))
    task = make_config(["ids.txt"], tmp_path / "array", api_key=Secret("sharing-test-key"),
                       task=TaskSpec(0, 2))
    assert lease_directories(plain) == [budget_directory(plain)]
    own, per_user = lease_directories(task)
    assert own.is_relative_to(tmp_path / "array") and per_user == budget_directory(plain)
    chosen = make_config(["ids.txt"], tmp_path / "array", task=TaskSpec(0, 2),
                         budget_dir=tmp_path / "shared")
    assert lease_directories(chosen) == [budget_directory(chosen)]  # where the user said


@pytest.mark.slow
def test_a_split_array_task_and_a_plain_fetch_on_one_key_share_its_budget(
        make_emulator: EmulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BULKGENE_BUDGET_DIR")
    emulator = make_emulator(rate_limit=True, latency_s=0.05)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY, XDG_CACHE_HOME=str(tmp_path / "cache"))
    array = subprocess.Popen(cli_command(
        "fetch", str(write_ids(tmp_path / "a.txt", range(1, 601))), "--out", str(tmp_path / "a"),
        "--task-index", "0", "--task-count", "2", "--batch-size", "10", "--no-progress"),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plain = _start(write_ids(tmp_path / "b.txt", range(100_001, 100_301)), tmp_path / "b", env)
    assert array.wait(timeout=120) == 0 and plain.wait(timeout=120) == 0
    arrivals = served(emulator.state.arrivals())
    assert_key_budget_kept(arrivals, what="together within the key's budget: ")


def _lease_of(run_budget: Path) -> Path:
    wait_for_lease(run_budget)
    [lease] = sorted(run_budget.rglob("*" + LEASE_SUFFIX))
    return lease


def _seq(lease: Path) -> int:
    """The lease's heartbeat counter (-1 while it is being replaced, or not a lease now)."""
    record = read_record(lease)
    return -1 if record is None else record.seq


def wait_for_heartbeats(lease: Path, count: int, deadline_s: float = 60) -> None:
    give_up = time.monotonic() + deadline_s
    first = _seq(lease)
    while _seq(lease) < first + count or first < 0:
        assert time.monotonic() < give_up, f"{lease} was not renewed {count} times"
        first = first if first >= 0 else _seq(lease)
        time.sleep(0.02)


@pytest.mark.slow
def test_an_array_tasks_lease_follows_no_link_planted_in_dir_budget(
        make_emulator: EmulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BULKGENE_BUDGET_DIR")
    emulator = make_emulator(latency_s=0.2)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY, XDG_CACHE_HOME=str(tmp_path / "cache"))
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    out = tmp_path / "genes"
    run = subprocess.Popen(cli_command(
        "fetch", str(write_ids(tmp_path / "ids.txt", range(1, 4001))), "--out", str(out),
        "--task-index", "0", "--task-count", "2", "--batch-size", "10", "--no-progress"),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lease = _lease_of(out / ".budget")
        lease_id = lease.name.removesuffix(LEASE_SUFFIX)
        (lease.parent / f".{lease_id}.tmp").symlink_to(victim)  # the name it used to write
        wait_for_heartbeats(lease, 3)
        assert victim.read_bytes() == b"precious\n"
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_a_fifo_planted_in_the_budget_directory_neither_hangs_the_run_nor_its_sigterm(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.2)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    out = tmp_path / "out"
    run = _start(write_ids(tmp_path / "ids.txt", range(1, 4001)), out, env)
    try:
        lease = _lease_of(Path(env["BULKGENE_BUDGET_DIR"]))
        lease_id = lease.name.removesuffix(LEASE_SUFFIX)
        os.mkfifo(lease.parent / f".{lease_id}.tmp")  # writing it blocked for ever
        wait_for_heartbeats(lease, 3)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=90) == EXIT_INTERRUPTED  # the first SIGTERM is enough
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            run.wait(timeout=30)


@pytest.mark.slow
def test_a_lease_that_cannot_be_renewed_stops_the_run_with_exit_1_naming_path_and_errno(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.2)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    out = tmp_path / "out"
    ids = write_ids(tmp_path / "ids.txt", range(1, 4001))
    run = subprocess.Popen(cli_command("fetch", str(ids), "--out", str(out), "--batch-size", "10",
                                       "--no-progress", "--outage-after", "2"),
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lease = _lease_of(Path(env["BULKGENE_BUDGET_DIR"]))
        wait_for_commits(out, 1)
        while not lease.is_dir():  # a group member replaces it with a directory
            with contextlib.suppress(FileNotFoundError):
                lease.unlink()
            with contextlib.suppress(FileExistsError):
                lease.mkdir()
        _, stderr = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=30)
    text = stderr.decode()
    assert run.returncode == 1, text
    assert str(lease) in text and "[Errno 21] Is a directory" in text, text
    assert "Traceback" not in text
    assert read_summary(out)["error"], "the error is in summary.json"
@pytest.mark.slow
def test_status_prints_another_users_lease_escaped(emulator: EmulatorThread,
                                                   tmp_path: Path) -> None:
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    out = tmp_path / "out"
    ids = write_ids(tmp_path / "ids.txt", range(1, 21))
    assert invoke_cli("fetch", str(ids), "--out", str(out), env=env).returncode == 0
    budget = Path(env["BULKGENE_BUDGET_DIR"]) / "node" / "key-forged"
    budget.mkdir(parents=True)
    forged = LeaseRecord(
        "feedfacefeedface", socket.gethostname() + "\x1b]0;pwned\x07", os.getpid(),
        f"{out.resolve()}/\x1b[2J\ntask-0000  9/9  complete\r\u202e", time.time(), time.time(),
        1, "active\x1b[31m", 5.0, 5.0, 10.0)
    (budget / "feedfacefeedface.lease").write_bytes(msgspec.json.encode(forged))
    forged_here = msgspec.structs.replace(forged, lease_id="beefbeefbeefbeef",
                                          host=socket.gethostname())
    (budget / "beefbeefbeefbeef.lease").write_bytes(msgspec.json.encode(forged_here))
    shown = invoke_cli("status", str(out), env=env)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert "shared live by 1 process(es)" in text, text  # the one of this host, live pid
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text and "\x07" not in text
    assert not any(line.startswith("task-0000  9/9") for line in text.splitlines())
    assert "\\x1b[2J\\ntask-0000" in text
    as_json = invoke_cli("status", str(out), "--json", env=env).stdout.decode()
    assert "\u202e" not in as_json and "\x1b" not in as_json
    [lease] = json.loads(as_json)["budget_leases"]
    assert lease["out_dir"].endswith("\\r\\u202e")


@pytest.mark.slow
def test_status_finds_the_leases_of_a_fetch_given_budget_dir(
        make_emulator: EmulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BULKGENE_BUDGET_DIR")
    emulator = make_emulator(latency_s=0.2)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY, XDG_CACHE_HOME=str(tmp_path / "cache"))
    out, lab = tmp_path / "out", tmp_path / "lab-budget"
    run = subprocess.Popen(cli_command(
        "fetch", str(write_ids(tmp_path / "ids.txt", range(1, 2001))), "--out", str(out),
        "--batch-size", "10", "--no-progress", "--budget-dir", str(lab)),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_lease(lab)
        wait_for_commits(out, 1)
        shown = invoke_cli("status", str(out), "--budget-dir", str(lab), env=env)
        assert shown.returncode == 0, shown.stderr
        assert f"pid {run.pid}" in shown.stdout.decode()
        # without it, status says where it looked
        unaware = invoke_cli("status", str(out), env=env)
        assert f"pid {run.pid}" not in unaware.stdout.decode()
        assert "--budget-dir" in unaware.stdout.decode() + unaware.stderr.decode()
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_planted_lease_that_never_makes_room_is_named_then_not_waited_for(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.05)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    budget = Path(env["BULKGENE_BUDGET_DIR"]) / "127.0.0.1" / budget_name(KEY)
    budget.mkdir(parents=True)
    planted = LeaseRecord("feedfacefeedface", "rogue-node", 4242, "/elsewhere", 0.0, 0.0, 0,
                          "active", 10.0, 10.0, 10.0)
    stop = threading.Event()

    def beat(seq: int) -> None:
        temp = budget / "planting.tmp"
        temp.write_bytes(msgspec.json.encode(msgspec.structs.replace(planted, seq=seq)))
        os.replace(temp, budget / "feedfacefeedface.lease")

    def heartbeat() -> None:  # it heartbeats, but never makes room for anyone
        seq = 1
        while not stop.wait(0.3):
            seq += 1
            beat(seq)

    beat(1)  # there before the run looks
    beating = threading.Thread(target=heartbeat)
    beating.start()
    try:
        ids = write_ids(tmp_path / "ids.txt", range(1, 201))
        done = subprocess.run(cli_command("fetch", str(ids), "--out", str(tmp_path / "out"),
                                          "--batch-size", "10", "--no-progress"),
                              env=env, capture_output=True, timeout=240, check=False)
    finally:
        stop.set()
        beating.join()
    text = done.stderr.decode()
    assert done.returncode == 0, text
    # at default verbosity: why it waits (the holder, its host), then that it goes ahead
    assert "waiting to share the key's rate budget" in text and "rogue-node" in text, text
    assert "has made no room for this run in 60 s" in text, text


@pytest.mark.slow
def test_status_never_lists_a_lease_of_a_dead_process_on_this_host(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """A killed run's lease was listed as sharing the budget until its heartbeat aged out."""
    emulator = make_emulator(latency_s=0.2)
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    out = tmp_path / "out"
    run = _start(write_ids(tmp_path / "ids.txt", range(1, 2001)), out, env)
    try:
        wait_for_lease(Path(env["BULKGENE_BUDGET_DIR"]))
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    assert any(Path(env["BULKGENE_BUDGET_DIR"]).rglob("*" + LEASE_SUFFIX)), "left behind"
    shown = invoke_cli("status", str(out), "--json", env=env)
    assert b'"budget_leases": []' in shown.stdout, shown.stdout.decode()
    table = invoke_cli("status", str(out), env=env).stdout.decode()
    assert f"pid {run.pid}" not in table
