"""On a real one-node SLURM (scripts/slurm-up): the README's array script, TERM + requeue;
and the README's Snakemake rule.

The SLURM tests run only when asked (BULKGENE_SLURM_TESTS=1, as .ci/run does): as root they
apt-install and start a cluster, which the README's plain test command must never do. A cluster
they started is stopped again (scripts/slurm-down); one that was already up is left running.
They skip, saying why, where SLURM can't run (not root, no apt, slurm-up failing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    REPO,
    EmulatorFactory,
    assert_complete_output,
    assert_key_budget_kept,
    expected_for,
    gene_ids_written,
    invoke_cli,
    read_summary,
    served,
    wait_for_commits,
    write_ids,
)

from bulkgene.testing import EmulatorThread
from bulkgene.testing.windows import max_in_window

# one worker runs them all under pytest-xdist (.ci/run): they share one SLURM, brought up once
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("slurm")]
SCRIPT = REPO / "examples" / "fetch-array.sbatch"
KEY = "slurm-test-key"


SLURM_OPT_IN = "BULKGENE_SLURM_TESTS"


def _cluster_is_up() -> bool:
    """A controller answers with at least one node, busy or not: a cluster this run didn't start."""
    if shutil.which("sinfo") is None:
        return False
    states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                            timeout=30, check=False)
    return states.returncode == 0 and bool(states.stdout.split())


@pytest.fixture(scope="module")
def slurm() -> Iterator[None]:
    if os.environ.get(SLURM_OPT_IN) != "1":
        pytest.skip(f"SLURM tests run only when asked: {SLURM_OPT_IN}=1 (as root they install "
                    "and start a one-node cluster, and stop it afterwards)")
    if _cluster_is_up():
        yield  # someone else's cluster: use it, leave it running
        return
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root to install and start munge/slurmctld/slurmd")
    up = subprocess.run([str(REPO / "scripts" / "slurm-up")], capture_output=True, timeout=240,
                        check=False)
    try:
        if up.returncode != 0:
            pytest.skip(f"scripts/slurm-up could not start SLURM: {up.stderr.decode()[-500:]}")
        yield
    finally:  # stop what we started, also half-started daemons of a failed slurm-up
        subprocess.run([str(REPO / "scripts" / "slurm-down")], capture_output=True,
                       timeout=120, check=False)


def _env(emulator: EmulatorThread, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(BULKGENE_BASE_URL=emulator.base_url, NCBI_API_KEY=KEY, **extra)
    return env


def _job(job_id: str) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                           text=True, check=True).stdout
    fields: dict[str, str] = {}
    for line in shown.splitlines():
        for part in line.split():
            key, _, value = part.partition("=")
            fields.setdefault(key, value)
    return fields


def _wait_for(job_id: str, states: set[str], timeout_s: float = 200) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    unknown: subprocess.CalledProcessError | None = None
    while time.monotonic() < deadline:
        try:
            job = _job(job_id)
        except subprocess.CalledProcessError as exc:
            # a requeued array task is briefly unknown to scontrol (seen on a loaded machine)
            unknown = exc
        else:
            if job.get("JobState") in states:
                return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} never reached {states}: {_job(job_id)}") from unknown


def test_readme_array_script_splits_the_list_within_one_keys_budget(
        slurm: None, make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    # six tasks, two at a time (%2, as clusters often require): the two running share the
    # key's whole budget live, never more than 10 requests in a second at the server
    emulator: EmulatorThread = make_emulator(rate_limit=True, latency_s=0.05)
    ids = range(1, 3001)
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "genes"
    env = _env(emulator, IDS=str(source), OUT=str(out), BULKGENE_OPTIONS="--batch-size 10")
    submitted = subprocess.run(
        ["sbatch", "--wait", "--array=0-5%2", f"--output={tmp_path}/log-%A_%a.txt",
         "--export=ALL", "--parsable", "--chdir", str(tmp_path), str(SCRIPT)],
        env=env, capture_output=True, text=True, timeout=400, check=False)
    assert submitted.returncode == 0, (submitted.stderr, _logs(tmp_path))
    job_id = submitted.stdout.strip().split(";")[0]
    for task in range(6):
        job = _job(f"{job_id}_{task}")
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
    written: list[int] = []
    for task_dir in sorted(out.glob("task-*")):
        written.extend(gene_ids_written(task_dir).elements())
        assert read_summary(task_dir)["complete"]
    assert sorted(written) == sorted(expected_for(emulator.state.universe, ids).genes)
    arrivals = served(emulator.state.arrivals())
    assert all(a.status in (200, 429) for a in arrivals)
    assert_key_budget_kept(arrivals, what="six tasks on one key: ")
    times = [a.t for a in arrivals if a.status == 200]
    # each task's first and last request, by the batch its first ID is in
    spans: dict[int, tuple[float, float]] = {}
    for arrival in arrivals:
        task = ((arrival.first_id or 1) - 1) // 10 % 6
        first, last = spans.get(task, (arrival.t, arrival.t))
        spans[task] = (min(first, arrival.t), max(last, arrival.t))
    both = [(max(a[0], b[0]) + 2.0, min(a[1], b[1])) for i, a in spans.items()
            for j, b in spans.items() if i < j and min(a[1], b[1]) - max(a[0], b[0]) > 4.0]
    seconds = sum(end - start for start, end in both)
    sent = sum(1 for t in times for start, end in both if start <= t < end)
    assert seconds > 0, "two tasks ran together"
    print(f"measured: {sent / seconds:.2f}/s while two tasks ran, max "
          f"{max_in_window(times)} in a second")
    assert sent / seconds >= 7.5, f"{sent / seconds:.2f} requests/s while two tasks ran"
    assert invoke_cli("verify", str(out)).returncode == 0


def test_readme_hpc_commands_run_as_written(slurm: None, make_emulator: EmulatorFactory,
                                            tmp_path: Path) -> None:
    """The README's HPC block, line by line as a user types it, in a copy of examples/."""
    emulator: EmulatorThread = make_emulator(rate_limit=True, latency_s=0.05)
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    ids = range(1, 401)
    write_ids(tmp_path / "ids.txt", ids)
    # SBATCH_WAIT is sbatch's own environment form of --wait: the command stays as written
    env = _env(emulator, SBATCH_WAIT="1")
    for command in ("sbatch --export=ALL,IDS=ids.txt,OUT=genes examples/fetch-array.sbatch",
                    "bulkgene status genes/", "bulkgene verify genes/"):
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=400, check=False)
        assert done.returncode == 0, (command, done.stdout, done.stderr, _logs(tmp_path))
    assert done.stdout.startswith("ok"), done.stdout
    written: list[int] = []
    for task_dir in sorted((tmp_path / "genes").glob("task-*")):
        written.extend(gene_ids_written(task_dir).elements())
    assert len(list((tmp_path / "genes").glob("task-*"))) == 4  # the script's --array=0-3%2
    assert sorted(written) == sorted(expected_for(emulator.state.universe, ids).genes)
    assert list(tmp_path.glob("bulkgene-*.log")), "the script's own --output"


def _logs(directory: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-1500:]
                     for pattern in ("log-*", "bulkgene-*.log") for p in directory.glob(pattern))


def test_term_mid_run_exits_75_and_a_requeue_finishes_exactly(
        slurm: None, make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator: EmulatorThread = make_emulator(latency_s=0.3)
    ids = range(1, 1601)
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "genes"
    env = _env(emulator, IDS=str(source), OUT=str(out), BULKGENE_OPTIONS="--batch-size 20")
    submitted = subprocess.run(
        ["sbatch", "--array=0", f"--output={tmp_path}/log-%A_%a.txt", "--export=ALL",
         "--parsable", "--chdir", str(tmp_path), str(SCRIPT)],
        env={**env, "SBATCH_EXPORT": "ALL"}, capture_output=True, text=True, check=True)
    job_id = submitted.stdout.strip().split(";")[0] + "_0"
    _wait_for(job_id, {"RUNNING"})
    wait_for_commits(out)
    subprocess.run(["scancel", "--signal=TERM", "--full", job_id], check=True)
    first = _wait_for(job_id, {"FAILED", "COMPLETED"})
    assert first["ExitCode"] == "75:0", (first, _logs(tmp_path))
    summary = read_summary(out)
    assert summary["interrupted"] and summary["pending"] > 0
    emulator.state.config.latency_s = 0.0
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    second = _wait_for(job_id, {"COMPLETED", "FAILED"}, timeout_s=240)
    assert second["ExitCode"] == "0:0", (second, _logs(tmp_path))
    assert second.get("Restarts") == "1"
    assert_complete_output(out, expected_for(emulator.state.universe, ids))
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("log-*"))  # whole
    assert "interrupted" in log and "resuming" in log, "both runs wrote to the appended log"


def test_readme_snakemake_rule_fetches_to_completion(emulator: EmulatorThread,
                                                     tmp_path: Path) -> None:
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent))
    if snakemake is None:
        pytest.skip("snakemake is not installed (it is in the test extra)")
    shutil.copy(REPO / "examples" / "Snakefile", tmp_path / "Snakefile")
    write_ids(tmp_path / "ids.txt", [7157, 672, 3105, 59067, 11, 12])
    result = subprocess.run([snakemake, "--cores", "1", "genes/summary.json"], cwd=tmp_path,
                            env=_env(emulator), capture_output=True, text=True, timeout=240,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_complete_output(tmp_path / "genes",
                           expected_for(emulator.state.universe, [7157, 672, 3105, 59067, 11, 12]))
