"""One API key, many processes: the key's budget is shared live through leases (issue 11)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    EmulatorFactory,
    cli_command,
    cli_env,
    invoke_cli,
    make_config,
    served,
    wait_for_commits,
    write_ids,
)

from bulkgene.budget.record import LEASE_SUFFIX
from bulkgene.config import Secret, TaskSpec
from bulkgene.run.sharing import budget_directory, lease_directories
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
    assert not [a for a in arrivals if a.status == 429], "no request over the key's budget"
    times = [a.t for a in arrivals]
    assert max_in_window(times) <= 10
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
    assert not [a for a in arrivals if a.status == 429]
    assert max_in_window([a.t for a in arrivals]) <= 10, "first second included"


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
    assert not [a for a in arrivals if a.status == 429], "together within the key's budget"
    assert max_in_window([a.t for a in arrivals]) <= 10
