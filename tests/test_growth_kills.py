"""--add and retry under random SIGKILLs: a re-run ends with every GeneID accounted for exactly once."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    EmulatorFactory,
    cli_command,
    cli_env,
    gene_ids_written,
    read_summary,
    read_tsv,
    run_cli,
    write_ids,
)

from bulkgene.config import TaskSpec
from bulkgene.errors import CorruptCheckpoint
from bulkgene.input import plan as idplan
from bulkgene.output import checkpoint as ckpt
from bulkgene.testing import EmulatorThread, Fate, GeneUniverse


def _progress(out: Path) -> tuple[int, int]:
    """(segments taken in, batches committed) of the run in ``out``, from its checkpoint."""
    try:
        state = ckpt.load(out)
    except CorruptCheckpoint:  # read while being replaced: look again
        return -1, -1
    return (len(state.segments), state.committed_batches) if state else (0, 0)


def kill_at_random_moments(command: list[str], env: dict[str, str], out: Path,
                           seed: int, rounds: int = 12) -> tuple[int, int]:
    """Run ``command`` ``rounds`` times, each killed at a moment drawn by the progress it
    shows (as it grows the run, once it has, or after 1-3 more committed batches); (kills
    that landed, kills after the run grew and before it was done)."""
    rng = random.Random(seed)
    kills = mid_growth = 0
    for _ in range(rounds):
        start = _progress(out)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        phase = rng.choice(("growing", "grown", "batches"))
        deadline = time.monotonic() + 120
        while process.poll() is None:
            now = _progress(out)
            if (phase == "growing" or (phase == "grown" and now[0] > 0)
                    or (phase == "batches" and now[1] >= start[1] + rng.randint(1, 3))):
                break
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += process.returncode == -signal.SIGKILL
        state = ckpt.load(out)
        header = idplan.read_header(out)
        assert state is not None and header is not None
        total, _ = idplan.task_share(header.requested, header.segments, ckpt_task(state), 5)
        mid_growth += bool(header.segments) and state.committed_batches < total
    return kills, mid_growth


def ckpt_task(state: ckpt.Checkpoint) -> TaskSpec:
    return TaskSpec(int(state.params.get("task_index", 0)),
                           int(state.params.get("task_count", 1)))


def env_for(emulator: EmulatorThread, tmp_path: Path) -> dict[str, str]:
    return cli_env(emulator.base_url, BULKGENE_CACHE_DIR=str(tmp_path / "cache"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_add_under_random_sigkills_fetches_each_new_id_once(make_emulator: EmulatorFactory,
                                                            tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.02, latency_jitter=0.5)
    universe = emulator.state.universe
    ids = random.Random(3).sample(range(1, 1_000_001), 2300)
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    first = write_ids(tmp_path / "ids.txt", ids[:2000])
    fetched = run_cli("fetch", str(first), "--out", str(out), "--batch-size", "5", env=env,
                      timeout=300)
    assert fetched.returncode == 0, fetched.stderr.decode()
    # 300 new IDs, 100 the run has, and two lines that are no GeneID: 60 batches of 5 at the
    # anonymous 5 requests/s (no --rate here), each a moment to kill in
    more = tmp_path / "more.txt"
    more.write_text("".join(f"{gene_id}\n" for gene_id in ids[1900:2150]) + "TP53\n"
                    + "".join(f"{gene_id}\n" for gene_id in ids[2150:]) + "BRCA1\n")
    command = cli_command("fetch", str(more), "--out", str(out), "--add", "--batch-size", "5",
                          "--no-progress")
    kills, mid_growth = kill_at_random_moments(command, env, out, seed=20261208)
    assert kills >= 6, "most kills must land while the --add runs"
    assert mid_growth >= 3, "kills must land after the run grew, before it was done"
    finishing = run_cli("fetch", str(more), "--out", str(out), "--add", "--batch-size", "5",
                        env=env, timeout=300)
    assert finishing.returncode == 0, finishing.stderr.decode()
    header = idplan.read_header(out)
    assert header is not None and [s.kind for s in header.segments] == ["add"]
    summary = read_summary(out)
    assert summary["requested"] == 2300 == summary["found"] + summary["missing"]
    assert summary["found"] == sum(1 for g in ids if universe.fate(g) in (Fate.FOUND,
                                                                          Fate.REPLACED))
    assert max(gene_ids_written(out).values()) == 1
    rejects = [row[1:3] for row in read_tsv(out / "rejects.tsv") if row[0] == str(more)]
    assert rejects == [["251", "TP53"], ["402", "BRCA1"]], "each rejected line once"
    verified = run_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_retry_under_random_sigkills_fetches_each_refused_id_once(make_emulator: EmulatorFactory,
                                                                  tmp_path: Path) -> None:
    universe = GeneUniverse()
    ids = random.Random(4).sample(range(1, 1_000_001), 2000)
    refused = frozenset(g for g in ids if universe.fate(g) is Fate.FOUND)
    refused = frozenset(sorted(refused)[:300])
    refusing = make_emulator(universe, invalid_ids=refused, retry_after_s=0)
    out = tmp_path / "genes"
    source = write_ids(tmp_path / "ids.txt", ids)
    fetched = run_cli("fetch", str(source), "--out", str(out), "--batch-size", "5",
                      "--retry-wait", "0", env=env_for(refusing, tmp_path), timeout=300)
    assert fetched.returncode == 0, fetched.stderr.decode()
    before = read_summary(out)
    assert before["refused"] == 300
    # the server answers them today: 60 batches of 5 at the anonymous 5 requests/s (the
    # same server: a run's GeneIDs all come from one)
    refusing.state.config.invalid_ids = frozenset()
    refusing.state.config.latency_s, refusing.state.config.latency_jitter = 0.02, 0.5
    answering = refusing
    env = env_for(answering, tmp_path)
    command = cli_command("retry", str(out), "--no-progress")
    kills, mid_growth = kill_at_random_moments(command, env, out, seed=20261209)
    assert kills >= 6, "most kills must land while the retry runs"
    assert mid_growth >= 3, "kills must land after the run grew, before it was done"
    finishing = run_cli("retry", str(out), env=env, timeout=300)
    assert finishing.returncode == 0, finishing.stderr.decode()
    header = idplan.read_header(out)
    assert header is not None and [s.kind for s in header.segments] == ["retry"]
    after = read_summary(out)
    assert (after["requested"], after["refused"]) == (2000, 0)
    assert (after["found"], after["missing"]) == (before["found"] + 300, before["missing"] - 300)
    written = gene_ids_written(out)
    assert max(written.values()) == 1 and refused <= written.keys()
    verified = run_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
