"""Refused GeneIDs against the emulator as NCBI 18.23 (a whole request fails with 404 for
one GeneID it refuses): what each costs, and a server refusing nearly everything is an error,
never a 'done' (real sockets; what the server received is counted from its log).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import (
    EmulatorFactory,
    cli_env,
    invoke_cli,
    make_config,
    read_tsv,
    served,
    write_ids,
)

import bulkgene
from bulkgene.config import RetryPolicy
from bulkgene.testing import EmulatorConfig

FAST = RetryPolicy(max_attempts=4, backoff_base_s=0.01, backoff_cap_s=0.02)


def mixed_ids(count: int) -> list[int]:
    """``count`` GeneIDs of 5 to 9 digits, as real lists mix them (GET packs them in parts)."""
    return [10 ** (4 + i % 5) + 7919 * i for i in range(count)]


async def _run(base_url: str, source: Path, out: Path) -> bulkgene.Summary:
    return await bulkgene.download(make_config(
        [str(source)], out, base_url=base_url, requests_per_second=1000.0, retry=FAST,
        progress_interval_s=0))


@pytest.mark.slow
async def test_sparse_refused_ids_cost_about_log2_of_the_request_each(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    ids = mixed_ids(12_000)
    source = write_ids(tmp_path / "ids.txt", ids)
    clean = make_emulator(seed=5)
    await _run(clean.base_url, source, tmp_path / "clean")
    baseline = len(served(clean.state.arrivals()))

    emulator = make_emulator(seed=5, invalid_id_per_mille=1.0)
    bad = {g for g in ids if EmulatorConfig(seed=5, invalid_id_per_mille=1.0).is_invalid_id(g)}
    assert 4 <= len(bad) <= 40
    summary = await _run(emulator.base_url, source, tmp_path / "out")
    assert summary.exit_code == 0
    missing = {int(row[0]): row[1] for row in read_tsv(tmp_path / "out" / "missing.tsv")}
    assert {g for g, why in missing.items() if why == "REJECTED_BY_SERVER"} == bad
    extra = len(served(emulator.state.arrivals())) - baseline
    assert extra <= len(bad) * (math.log2(1000) + 3), (extra, len(bad))


def test_a_server_refusing_all_but_tp53_is_an_error_and_verify_says_so(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(invalid_id_per_mille=1000.0)
    source = write_ids(tmp_path / "ids.txt", range(100_000, 105_000))
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--no-progress",
                        env=cli_env(emulator.base_url))
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.count("error: the server refused") == 1 and "--column" in stderr
    assert len(served(emulator.state.arrivals())) < 500, "not a request per GeneID"
    # the message says what is on disk and in the end line: the batch in flight was never
    # committed, so its refused GeneIDs are pending, not in missing.tsv
    recorded = read_tsv(out / "missing.tsv") if (out / "missing.tsv").exists() else []
    end = next(line for line in stderr.splitlines() if "requested 5000 = found" in line)
    assert "missing 0 " in end and not recorded and "pending" in end, end
    assert "REJECTED_BY_SERVER in missing.tsv" not in stderr, stderr
    assert "were not recorded" in stderr and "still pending" in stderr, stderr
    assert invoke_cli("verify", str(out)).returncode != 0


def test_a_list_mostly_refused_is_no_result_even_when_every_batch_was_fetched(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """Too few refusals to stop the run early, but most of the list: exit 1 at the end, a
    re-run that has nothing left to fetch says so again, and verify fails."""
    emulator = make_emulator(invalid_ids=frozenset({11, 12, 13, 14}))
    source = write_ids(tmp_path / "ids.txt", [11, 12, 13, 14, 15, 16])
    out = tmp_path / "out"
    args = ("fetch", str(source), "--out", str(out), "--no-progress")
    for _ in range(2):
        result = invoke_cli(*args, env=cli_env(emulator.base_url))
        assert result.returncode == 1, result.stderr.decode()
        assert b"refused 4 GeneIDs one by one" in result.stderr
    verdict = invoke_cli("verify", str(out))
    assert verdict.returncode != 0 and b"refused 4 GeneIDs" in verdict.stdout + verdict.stderr


def test_the_retry_advice_names_the_base_url_the_run_was_given(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(invalid_ids=frozenset({11}))
    source = write_ids(tmp_path / "ids.txt", range(11, 31))
    out = tmp_path / "out"
    env = {k: v for k, v in cli_env(emulator.base_url).items() if k != "BULKGENE_BASE_URL"}
    result = invoke_cli("fetch", str(source), "--out", str(out), "--no-progress",
                        "--base-url", emulator.base_url, env=env)
    stderr = result.stderr.decode()
    advice = f"Fetch them again with: bulkgene retry {out} --base-url {emulator.base_url}"
    assert advice in stderr, stderr
    again = invoke_cli(*advice.split(": ", 1)[1].split()[1:], "--no-progress", env=env)
    assert again.returncode == 0, again.stderr.decode()
