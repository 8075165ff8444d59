"""A tampered run directory never reads as a good one: export and ``bulkgene.open`` refuse it.

What the disk holds is untrusted: a GeneID planted twice, a side report that is a FIFO or
gone, rows appended past what the checkpoint committed (also what a kill between a row's
append and the checkpoint leaves), a task directory planted with a copied checkpoint. Each
is an error naming what happened and what to do, never exit 0 with wrong data and never a
traceback. And both readers give a record the same ``query``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import orjson
import pytest
from helpers import cli_env, invoke_cli, write_ids

import bulkgene
from bulkgene.testing import EmulatorThread, GeneUniverse
from bulkgene.testing.emulator import EmulatorConfig

# 1956 is unknown to the API; the history says it was replaced by 55294, which the API
# answers as 1000027647 (asked for too). 363 is replaced by 1000000181 (asked for too, in
# another batch). Both genes answer two GeneIDs of the list and are written once.
FOLLOWED, SUCCESSOR, FINAL = 1956, 55294, 1_000_027_647
MERGED, MERGED_INTO = 363, 1_000_000_181
IDS = [7157, 672, FOLLOWED, FINAL, MERGED, *range(100, 360), MERGED_INTO]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, explained and followed run, fetched once for every test here to copy."""
    work = tmp_path_factory.mktemp("pristine")
    universe = GeneUniverse(unknown=frozenset({FOLLOWED}), replaced={SUCCESSOR: FINAL})
    emulator = EmulatorThread(EmulatorConfig(rate_limit=False), universe).start()
    try:
        env = cli_env(emulator.base_url, BULKGENE_HISTORY=emulator.history_url,
                      BULKGENE_CACHE_DIR=str(work / "cache"),
                      BULKGENE_BUDGET_DIR=str(work / "budget"))
        out = work / "T"
        fetched = invoke_cli("fetch", str(write_ids(work / "ids.txt", IDS)), "--out", str(out),
                             "--batch-size", "50", env=env)
        assert fetched.returncode == 0, fetched.stderr.decode()
        history = work / "history.txt"
        history.write_text("#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\t"
                           f"Discontinue_Date\n9606\t{SUCCESSOR}\t{FOLLOWED}\tA\t20200101\n")
        followed = invoke_cli("explain", str(out), "--history", str(history),
                              "--follow-replaced", env=env)
        assert followed.returncode == 0, followed.stderr.decode()
    finally:
        emulator.stop()
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout.decode()
    return out


@pytest.fixture
def run(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "T"
    shutil.copytree(pristine, copy)
    return copy


def _export(run: Path, target: Path, *args: str) -> tuple[int, str]:
    result = invoke_cli("export", str(run), "--to", str(target), *args)
    return result.returncode, result.stderr.decode()


def _missing_rows(run: Path) -> int:
    return len((run / "missing.tsv").read_bytes().splitlines()) - 1


def test_a_planted_task_directory_or_a_lost_shard_is_named(run: Path, tmp_path: Path) -> None:
    planted = run / "task-0007"
    planted.mkdir()
    shutil.copy(run / "checkpoint.json", planted / "checkpoint.json")
    with pytest.raises(bulkgene.BulkgeneError, match=re.escape(str(planted))):
        bulkgene.open(run)
    code, said = _export(run, tmp_path / "T.tsv")
    assert code == 1 and str(planted) in said and "Traceback" not in said, said
    shutil.rmtree(planted)

    (run / "shard-0001.ndjson").unlink()
    with pytest.raises(bulkgene.BulkgeneError, match=re.escape("shard-0001.ndjson is gone")):
        list(bulkgene.open(run).records())
