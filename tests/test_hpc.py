"""Array tasks, the shared rate budget, status, verify and the run lock (SLURM itself: test_slurm)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import (
    EmulatorFactory,
    assert_complete_output,
    assert_key_budget_kept,
    cli_command,
    cli_env,
    expected_for,
    gene_ids_written,
    invoke_cli,
    make_config,
    read_tsv,
    run_cli,
    served,
    shard_files,
    write_ids,
)

from bulkgene.config import NetworkSpec, TaskSpec
from bulkgene.errors import ConfigError
from bulkgene.input.lines import file_digest
from bulkgene.output import checkpoint
from bulkgene.output.claims import layout_key
from bulkgene.run.array import from_slurm, resolve, unsplit_array_note
from bulkgene.testing import EmulatorThread, GeneUniverse


def test_slurm_array_ids_map_to_task_indexes() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4",
           "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
           "SLURM_ARRAY_TASK_STEP": "2"}  # --array=1-7:2 -> 1, 3, 5, 7
    assert from_slurm(env) == TaskSpec(2, 4)
    assert from_slurm({**env, "SLURM_ARRAY_TASK_ID": "1"}) == TaskSpec(0, 4)
    assert from_slurm({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "3",
                       "SLURM_ARRAY_TASK_MIN": "10"}) == TaskSpec(2, 3)
    assert from_slurm({}) is None


def test_irregular_arrays_and_half_given_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="--task-index"):
        from_slurm({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3",
                    "SLURM_ARRAY_TASK_MIN": "1"})  # --array=1,4,9
    with pytest.raises(ConfigError, match="go together"):
        resolve(1, None, env={})
    array = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2",
             "SLURM_ARRAY_TASK_MIN": "0"}
    assert resolve(1, 3, env=array) == TaskSpec(1, 3)
    with pytest.raises(ConfigError, match="--split slurm needs a SLURM array task"):
        resolve(None, None, "slurm", env={})


def test_an_array_task_splits_its_input_only_when_asked() -> None:
    array = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3",
             "SLURM_ARRAY_TASK_MIN": "0"}
    assert resolve(None, None, env=array) == TaskSpec(0, 1), "the whole input by default"
    assert resolve(None, None, "slurm", env=array) == TaskSpec(1, 3)
    note = unsplit_array_note(array)
    assert note is not None and "--split slurm" in note
    assert unsplit_array_note({}) is None


def test_the_default_ceiling_is_the_keys_whole_budget_for_leases_to_share(tmp_path: Path) -> None:
    from bulkgene import Secret

    def rate(**kwargs: object) -> float:
        return make_config(["x"], tmp_path, **kwargs).effective_requests_per_second

    # not budget / task count: live leases divide it among the processes that really run
    assert rate(task=TaskSpec(0, 4)) == 5
    assert rate(task=TaskSpec(1, 4), api_key=Secret("hpc-test-key")) == 10
    assert rate(task=TaskSpec(1, 4), requests_per_second=7.0) == 7.0


@pytest.mark.slow
def test_three_tasks_together_stay_within_one_keys_budget(make_emulator: EmulatorFactory,
                                                          tmp_path: Path) -> None:
    emulator: EmulatorThread = make_emulator(rate_limit=True)
    ids = range(1, 3001)
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    env = cli_env(emulator.base_url, NCBI_API_KEY="shared-key")
    processes = [subprocess.Popen(cli_command("fetch", str(source), "--out", str(out),
                                              "--batch-size", "50", "--task-index", str(i),
                                              "--task-count", "3"),
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i in range(3)]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    names = {p.name for p in out.iterdir()}
    assert {n for n in names if n.startswith("task-")} == {"task-0000", "task-0001", "task-0002"}
    # beside the tasks only what they share (one plan of the list, its rejects, the claims)
    # and the merged reports the task that completed the array wrote
    merged_files = {"missing.tsv", "replaced.tsv", "summary.json"}
    assert merged_files <= names
    assert names - {"task-0000", "task-0001", "task-0002"} - merged_files <= {
        "plan.json", "plan.ids", "plan.bitmap", "rejects.tsv", ".claims", ".budget"}
    merged = json.loads((out / "summary.json").read_text())
    assert merged["complete"] and merged["requested"] == len(ids)
    written = gene_ids_written_all(out)
    expected = expected_for(emulator.state.universe, ids)
    assert sorted(written) == sorted(expected.genes), "the union is exact, with no overlap"
    arrivals = served(emulator.state.arrivals())
    assert_key_budget_kept(arrivals)


def gene_ids_written_all(out: Path) -> list[int]:
    ids: list[int] = []
    for task_dir in sorted(out.glob("task-*")):
        ids.extend(gene_ids_written(task_dir).elements())
    return ids


def _fetch(emulator: EmulatorThread, tmp_path: Path, *extra: str) -> tuple[Path, list[str]]:
    source = write_ids(tmp_path / "ids.txt", range(1, 401))
    out = tmp_path / "out"
    args = ["fetch", str(source), "--out", str(out), "--batch-size", "50", "--rate", "1000",
            *extra]
    result = invoke_cli(*args, env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    return out, args


def test_status_json_matches_the_checkpoints(emulator: EmulatorThread, tmp_path: Path) -> None:
    out, _ = _fetch(emulator, tmp_path, "--task-index", "1", "--task-count", "2")
    _fetch(emulator, tmp_path, "--task-index", "0", "--task-count", "2")
    result = invoke_cli("status", str(out), "--json")
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    for task in data["tasks"]:
        state = checkpoint.load(Path(task["directory"]))
        assert state is not None
        assert task["batches_committed"] == state.committed_batches == 4
        assert task["found"] == state.totals.found and task["records"] == state.totals.records
        assert task["batches_pending"] == 0 and task["complete"] and not task["running"]
        assert task["latest_run_elapsed_s"] > 0 and task["latest_run_ids_per_s"] > 0
        assert task["latest_run_elapsed_s"] == round(state.updated_at - state.run_started_at, 3)
        assert task["requests_all_runs"] == state.totals.requests
    assert data["total"]["found"] == sum(t["found"] for t in data["tasks"])
    assert data["total"]["batches_total"] == 8 and data["total"]["complete"]
    table = invoke_cli("status", str(out))
    assert b"task-0001" in table.stdout and b"complete" in table.stdout and b"total" in table.stdout
    assert b"IDs/s" in table.stdout and b"last run" in table.stdout


def test_verify_passes_on_a_clean_run(emulator: EmulatorThread, tmp_path: Path) -> None:
    out, _ = _fetch(emulator, tmp_path)
    result = invoke_cli("verify", str(out))
    assert result.returncode == 0, result.stderr.decode()
    assert b"ok:" in result.stdout


@pytest.mark.parametrize("damage", ["duplicated line", "torn line", "longer than checkpoint"])
def test_verify_catches_damage(emulator: EmulatorThread, tmp_path: Path, damage: str) -> None:
    out, _ = _fetch(emulator, tmp_path)
    shard = shard_files(out)[0]
    data = shard.read_bytes()
    first_line = data.split(b"\n")[0] + b"\n"
    state = checkpoint.load(out)
    assert state is not None
    if damage == "duplicated line":
        shard.write_bytes(data + first_line)
        state.file_lengths[shard.name] += len(first_line)  # even a "committed" duplicate
        checkpoint.save(out, state)
        expected = b"already written"
    elif damage == "torn line":
        shard.write_bytes(data[:-10])
        state.file_lengths[shard.name] -= 10
        checkpoint.save(out, state)
        expected = b"torn"
    else:
        shard.write_bytes(data + b'{"gene": {"gene_id": "999999"}}\n')
        expected = b"bytes on disk, the checkpoint committed"
    result = invoke_cli("verify", str(out))
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr.decode()


@pytest.mark.slow
def test_a_second_run_on_the_same_directory_refuses(make_emulator: EmulatorFactory,
                                                    tmp_path: Path) -> None:
    # a slow server: the first run holds its lock for seconds after taking it (until killed)
    emulator = make_emulator(latency_s=3.0)
    source = write_ids(tmp_path / "ids.txt", range(1, 401))
    out = tmp_path / "out"
    args = cli_command("fetch", str(source), "--out", str(out), "--batch-size", "50")
    first = subprocess.Popen(args, env=cli_env(emulator.base_url), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60  # a hang guard: the lock file is what is waited for
        while not (out / "bulkgene.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        second = invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "50",
                            env=cli_env(emulator.base_url))
        assert second.returncode == 1
        assert f"pid {first.pid} on {socket.gethostname()}".encode() in second.stderr
    finally:
        first.kill()
        first.wait()


def test_a_stale_lock_is_taken_over_with_a_warning(emulator: EmulatorThread,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    no_such_pid = 2**22 + 1  # above Linux's largest pid_max
    (out / "bulkgene.lock").write_text(json.dumps({"host": socket.gethostname(),
                                                   "pid": no_such_pid}))
    source = write_ids(tmp_path / "ids.txt", [7157, 672])
    result = invoke_cli("fetch", str(source), "--out", str(out), env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    assert b"stale lock" in result.stderr
    assert not (out / "bulkgene.lock").exists()
    assert_complete_output(out, expected_for(emulator.state.universe, [7157, 672]))


def test_a_gene_merged_from_ids_of_two_tasks_is_written_once_in_the_union(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    # 21 (task 0's batch) and 22 (task 1's) were both merged into a gene nobody asked for
    emulator = make_emulator(GeneUniverse(replaced={21: 1_700_000_000, 22: 1_700_000_000}))
    source = write_ids(tmp_path / "ids.txt", [21, 22, 7157, 672])
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    for index in (0, 1):
        result = invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "1",
                            "--task-index", str(index), "--task-count", "2", "--rate", "1000",
                            env=env)
        assert result.returncode == 0, result.stderr.decode()
    union: Counter[int] = Counter()
    for task in ("task-0000", "task-0001"):
        union.update(gene_ids_written(out / task))
    assert union == Counter({1_700_000_000: 1, 7157: 1, 672: 1})
    replaced = [row for task in ("task-0000", "task-0001")
                for row in read_tsv(out / task / "replaced.tsv")]
    assert sorted(replaced) == [["21", "1700000000"], ["22", "1700000000"]]
    assert invoke_cli("verify", str(out)).returncode == 0


def test_array_tasks_share_one_plan_of_the_list(make_emulator: EmulatorFactory,
                                                 tmp_path: Path) -> None:
    emulator = make_emulator()
    source = write_ids(tmp_path / "ids.txt", [*range(1, 301), 5, 6, 7])
    out = tmp_path / "out"
    for index in (0, 1, 2):
        result = invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "50",
                            "--task-index", str(index), "--task-count", "3", "--rate", "1000",
                            env=cli_env(emulator.base_url))
        assert result.returncode == 0, result.stderr.decode()
    assert (out / "plan.ids").stat().st_size == 4 * 300, "one plan in DIR, for every task"
    assert not list(out.glob("task-*/plan.*")), "no per-task copies"
    status = json.loads(invoke_cli("status", str(out), "--json").stdout)
    assert status["total"]["requested"] == 300 and status["total"]["complete"] is True
    assert invoke_cli("verify", str(out)).returncode == 0


def test_one_directory_holds_one_kind_of_run(make_emulator: EmulatorFactory,
                                             tmp_path: Path) -> None:
    emulator = make_emulator()
    env = cli_env(emulator.base_url)
    source = write_ids(tmp_path / "ids.txt", range(1, 201))
    other = write_ids(tmp_path / "other.txt", range(1001, 1101))
    out = tmp_path / "out"

    def fetch(*args: str, ids: Path = source) -> subprocess.CompletedProcess[bytes]:
        return invoke_cli("fetch", str(ids), "--out", str(out), "--batch-size", "20",
                          "--rate", "1000", *args, env=env)

    assert fetch("--task-index", "0", "--task-count", "2").returncode == 0
    another_count = fetch("--task-index", "2", "--task-count", "3")
    assert another_count.returncode == 1 and b"split into 2 tasks" in another_count.stderr
    another_list = fetch("--task-index", "1", "--task-count", "2", ids=other)
    assert another_list.returncode == 1 and b"another list" in another_list.stderr
    not_split = fetch()
    assert not_split.returncode == 1 and b"holds an array run" in not_split.stderr
    done = fetch("--task-index", "1", "--task-count", "2")
    assert done.returncode == 0 and f"bulkgene verify {out}\n".encode() in done.stderr
    assert invoke_cli("verify", str(out)).returncode == 0
    assert invoke_cli("verify", str(out / "task-0001")).returncode == 0, "one task alone"


def _merged_universe() -> GeneUniverse:
    """IDs k+1 and k+31 (k < 10) merged into one gene nobody asked for: 10 such genes."""
    replaced = {}
    for k in range(10):
        replaced[k + 1] = replaced[k + 31] = 1_700_000_000 + k
    return GeneUniverse(replaced=replaced, unknown_per_mille=0, discontinued_per_mille=0,
                        replaced_per_mille=0)


def _run_array(source: Path, out: Path, env: dict[str, str], *options: str) -> None:
    for index in range(3):
        result = invoke_cli("fetch", str(source), "--out", str(out), "--task-index", str(index),
                            "--task-count", "3", "--rate", "1000", *options, env=env)
        assert result.returncode == 0, result.stderr.decode()


def _union(out: Path) -> Counter[int]:
    union: Counter[int] = Counter()
    for task in sorted(out.glob("task-*")):
        union.update(gene_ids_written(task))
    return union


def test_a_restarted_array_with_another_batch_size_writes_every_merged_gene_once(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """.claims survived --restart: merged genes 'owned' by a task that no longer got them."""
    emulator = make_emulator(_merged_universe())
    source = write_ids(tmp_path / "ids.txt", range(1, 61))
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    expected = Counter({**{gene: 1 for gene in range(11, 31)},
                        **{gene: 1 for gene in range(41, 61)},
                        **{1_700_000_000 + k: 1 for k in range(10)}})
    _run_array(source, out, env, "--batch-size", "2")
    assert _union(out) == expected
    _run_array(source, out, env, "--batch-size", "3", "--restart")
    assert _union(out) == expected
    verdict = invoke_cli("verify", str(out))
    assert verdict.returncode == 0, verdict.stderr.decode()


def test_verify_finds_a_replacement_that_no_task_wrote(make_emulator: EmulatorFactory,
                                                        tmp_path: Path) -> None:
    emulator = make_emulator(GeneUniverse(replaced={21: 1_700_000_000, 22: 1_700_000_000}))
    source = write_ids(tmp_path / "ids.txt", [21, 22, 7157, 672])
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    options = ("--batch-size", "1", "--task-count", "2", "--rate", "1000")
    # a claim by a task the array doesn't have, there before the tasks run: nobody writes
    # the gene (what an older bulkgene's stale claims did)
    layout_dir = out / ".claims" / layout_key([file_digest(str(source))], 1, 2,
                                              NetworkSpec(base_url=emulator.base_url).server)
    layout_dir.mkdir(parents=True)
    (layout_dir / "1700000000").write_bytes(b"7")
    for index in (0, 1):
        assert invoke_cli("fetch", str(source), "--out", str(out), "--task-index", str(index),
                          *options, env=env).returncode == 0
    assert 1_700_000_000 not in _union(out)
    verdict = invoke_cli("verify", str(out))
    assert verdict.returncode == 1
    assert b"GeneID 1700000000" in verdict.stderr and b"no shard" in verdict.stderr
    assert b"fetch the list anew" in verdict.stderr and b"--restart" in verdict.stderr


def test_verify_finds_tasks_that_split_the_list_differently(make_emulator: EmulatorFactory,
                                                             tmp_path: Path) -> None:
    """Task 0 restarted with --batch-size 3, tasks 1 and 2 left at 2: IDs nobody fetched."""
    emulator = make_emulator(_merged_universe())
    source = write_ids(tmp_path / "ids.txt", range(1, 61))
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    _run_array(source, out, env, "--batch-size", "2")
    result = invoke_cli("fetch", str(source), "--out", str(out), "--task-index", "0",
                        "--task-count", "3", "--rate", "1000", "--batch-size", "3", "--restart",
                        env=env)
    assert result.returncode == 0
    assert b"--batch-size" in result.stderr and b"task-0001" in result.stderr  # warned
    verdict = invoke_cli("verify", str(out))
    assert verdict.returncode == 1 and b"batch size" in verdict.stderr


def test_hand_set_slurm_variables_without_a_minimum_start_at_0(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bulkgene"):
        assert from_slurm({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}) == \
            TaskSpec(2, 4)
    assert "SLURM_ARRAY_TASK_MIN" in caplog.text and "0" in caplog.text
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_COUNT"):
        from_slurm({"SLURM_ARRAY_TASK_ID": "2"})


@pytest.mark.slow
def test_an_array_task_that_forgot_split_is_told_so_by_the_lock_error(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    """Every task of `sbatch --array` without --split writes the whole list into one --out."""
    from bulkgene.output.lock import RunLock

    source = write_ids(tmp_path / "ids.txt", [7157])
    out = tmp_path / "out"
    out.mkdir()
    lock = RunLock(out)  # task 0 of the array, still running
    lock.acquire()
    try:
        env = cli_env(emulator.base_url, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="4",
                      SLURM_ARRAY_TASK_MIN="0")
        result = run_cli("fetch", str(source), "--out", str(out), env=env)
    finally:
        lock.release()
    assert result.returncode == 1
    assert b"already writing" in result.stderr and b"--split slurm" in result.stderr



def test_status_counts_every_runs_requests_and_says_so(make_emulator: EmulatorFactory,
                                                       tmp_path: Path) -> None:
    """summary.json said 3 866 requests (this run), status 8 067 (all runs, but only up to
    each run's last commit: the end lines added up to 8 294), under one name."""
    emulator = make_emulator(valid_keys=frozenset({"good-key-0123456789"}),
                             faults={"http_503": 0.3}, seed=5)
    source = write_ids(tmp_path / "ids.txt", range(1, 201))
    out = tmp_path / "out"
    args = ("fetch", str(source), "--out", str(out), "--batch-size", "20", "--max-attempts",
            "1", "--retry-wait", "0", "--rate", "1000")
    refused = invoke_cli(*args, env=cli_env(emulator.base_url, NCBI_API_KEY="bad-key-0123456"))
    assert refused.returncode == 1  # 401: requests sent, nothing committed
    sent = [json.loads((out / "summary.json").read_bytes())["requests"]]
    assert sent[0] > 0
    for _ in range(8):
        result = invoke_cli(*args, env=cli_env(emulator.base_url,
                                               NCBI_API_KEY="good-key-0123456789"))
        sent.append(json.loads((out / "summary.json").read_bytes())["requests"])
        if result.returncode == 0:
            break
    assert len(sent) > 2, "the faults made the first good run fail some batches"
    data = json.loads(invoke_cli("status", str(out), "--json").stdout)
    (task,) = data["tasks"]
    assert "requests" not in task and "elapsed_s" not in task
    assert task["requests_all_runs"] == sum(sent)
    assert data["total"]["requests_all_runs"] == sum(sent)
    table = invoke_cli("status", str(out)).stdout
    assert b"latest run" in table and b"all runs" in table


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["task-0-first", "task-1-first"])
def test_a_restarted_array_with_the_same_layout_claims_afresh(
        make_emulator: EmulatorFactory, tmp_path: Path, order: tuple[int, int]) -> None:
    """The server's merges changed between two runs of one layout: the old claims said task 1
    writes gene G, its restarted run no longer got G, and task 0 left it out (15 genes)."""
    gene, other = 1_700_000_000, 1_700_000_001
    emulator = make_emulator(GeneUniverse(replaced={1: gene, 2: gene}, unknown_per_mille=0,
                                          discontinued_per_mille=0, replaced_per_mille=0))
    source = write_ids(tmp_path / "ids.txt", [1, 2, 3, 4])  # 1, 3 in task 0; 2, 4 in task 1
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)

    def task(index: int, *extra: str) -> None:
        result = invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "1",
                            "--task-index", str(index), "--task-count", "2", *extra, env=env)
        assert result.returncode == 0, result.stderr.decode()

    task(1)  # task 1 claims gene G first
    task(0)
    assert _union(out) == Counter({gene: 1, 3: 1, 4: 1})
    emulator.state.universe = GeneUniverse(replaced={1: gene, 2: other}, unknown_per_mille=0,
                                           discontinued_per_mille=0, replaced_per_mille=0)
    for index in order:
        task(index, "--restart")
    assert _union(out) == Counter({gene: 1, other: 1, 3: 1, 4: 1})
    verdict = invoke_cli("verify", str(out))
    assert verdict.returncode == 0, verdict.stderr.decode()


def test_a_task_left_out_of_an_arrays_restart_is_named(make_emulator: EmulatorFactory,
                                                       tmp_path: Path) -> None:
    emulator = make_emulator(_merged_universe())
    source = write_ids(tmp_path / "ids.txt", range(1, 61))
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    _run_array(source, out, env, "--batch-size", "2")
    result = invoke_cli("fetch", str(source), "--out", str(out), "--task-index", "0",
                        "--task-count", "3", "--batch-size", "2", "--rate", "1000", "--restart",
                        env=env)
    assert result.returncode == 0
    verdict = invoke_cli("verify", str(out))
    assert verdict.returncode == 1
    assert b"task-0001" in verdict.stderr and b"--restart" in verdict.stderr
    assert b"restarted" in verdict.stderr
    resumed = invoke_cli("fetch", str(source), "--out", str(out), "--task-index", "1",
                         "--task-count", "3", "--batch-size", "2", "--rate", "1000", env=env)
    assert resumed.returncode == 0 and b"were restarted since this task's run" in resumed.stderr
