"""Part of a list never passes for the whole: one array task, a task not run, reduced reports.

A task directory read alone (export, verify, status, open) says it is one task of an array
and where the array is; an array with a task not run yet counts the whole list (DIR's plan);
a run fetched with IDS_ONLY can't be exported with columns its reports don't hold.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from helpers import cli_env, invoke_cli, write_ids

import bulkgene
from bulkgene.testing import EmulatorThread

IDS = list(range(1, 5001))  # 5 batches of 1000: task 0 takes 0 and 3, 1 takes 1 and 4, 2 takes 2


def _array(emulator: EmulatorThread, tmp_path: Path, tasks: range) -> Path:
    ids_file = write_ids(tmp_path / "ids.txt", IDS)
    out = tmp_path / "arr"
    for index in tasks:
        result = invoke_cli("fetch", str(ids_file), "--out", str(out), "-q", "--task-index",
                            str(index), "--task-count", "3", env=cli_env(emulator.base_url))
        assert result.returncode == 0, result.stderr.decode()
    return out


def test_one_task_of_an_array_never_passes_for_the_whole_list(emulator: EmulatorThread,
                                                              tmp_path: Path) -> None:
    out = _array(emulator, tmp_path, range(3))
    task = out / "task-0000"
    refused = invoke_cli("export", str(task), "--to", str(tmp_path / "t.tsv"))
    assert refused.returncode == 1
    said = refused.stderr.decode()
    assert f"task 0 of the 3 of the array in {out}" in said
    assert "2000 of the list's 5000 GeneIDs" in said and "--partial" in said
    assert not (tmp_path / "t.tsv").exists()
    exported = invoke_cli("export", str(task), "--to", str(tmp_path / "t.tsv"), "--partial")
    assert exported.returncode == 0
    verified = invoke_cli("verify", str(task))
    assert verified.returncode == 0
    assert b"this task's share of the list" in verified.stdout
    assert f"one task: {task} is task 0 of the 3".encode() in verified.stdout
    status = invoke_cli("status", str(task))
    assert b"complete: this task's share" in status.stdout and b"one task:" in status.stdout
    shown = orjson.loads(invoke_cli("status", str(task), "--json").stdout)
    assert "task 0 of the 3" in shown["total"]["one_task_of_array"]
    summary = bulkgene.open(task).summary
    assert summary["complete"] is False
    assert summary["incomplete"] == [f"{task} is task 0 of the 3 of the array in {out}: it "
                                     f"holds 2000 of the list's 5000 GeneIDs; read {out} for "
                                     "the whole list"]
    with pytest.raises(bulkgene.IncompleteRun, match="task 0 of the 3"):
        bulkgene.open(task).to_frame()
    assert len(bulkgene.open(task, partial=True).to_frame()) == summary["records"]
    whole = bulkgene.open(out).summary  # the array itself is whole
    assert whole["complete"] and whole["requested"] == len(IDS)


def test_an_array_with_a_task_not_run_counts_the_whole_list(emulator: EmulatorThread,
                                                            tmp_path: Path) -> None:
    out = _array(emulator, tmp_path, range(2))  # task 2 (batch 2: 1000 IDs) never ran
    summary = bulkgene.open(out).summary
    assert summary["requested"] == len(IDS)
    assert summary["pending"] == 1000
    assert summary["requested"] == (summary["found"] + summary["missing"] + summary["failed"]
                                    + summary["pending"])
    assert summary["incomplete"][0].startswith("1 of 3 array tasks have written nothing "
                                               "(task-0002)")
    total = orjson.loads(invoke_cli("status", str(out), "--json").stdout)["total"]
    assert total["requested"] == len(IDS) and total["pending_ids"] == 1000
    table = invoke_cli("status", str(out)).stdout.decode().splitlines()
    row = next(line.split() for line in table if line.startswith("task-0002"))
    assert row[3:5] == ["1000", "1000"] and row[-2:] == ["not", "started"]
    totals = next(line.split() for line in table if line.startswith("total"))
    assert totals[3:5] == ["5000", "1000"]


def test_fields_a_reduced_report_cant_hold_are_refused(emulator: EmulatorThread,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "ids-only"
    fetched = invoke_cli("fetch", str(write_ids(tmp_path / "ids.txt", IDS[:500])), "--out",
                         str(out), "-q", "--returned-content", "IDS_ONLY",
                         env=cli_env(emulator.base_url))
    assert fetched.returncode == 0, fetched.stderr.decode()
    refused = invoke_cli("export", str(out), "--to", str(tmp_path / "x.tsv"), "--fields",
                         "gene-id,symbol,synonyms")
    assert refused.returncode == 2
    assert (b"fetched with --returned-content IDS_ONLY, whose reports hold only gene-id: "
            b"symbol, synonyms would be empty") in refused.stderr
    assert not (tmp_path / "x.tsv").exists()
    default = invoke_cli("export", str(out), "--to", str(tmp_path / "x.tsv"))
    assert default.returncode == 0  # the default columns are the ones such reports hold
    assert (tmp_path / "x.tsv").read_text().splitlines()[0] == "Query\tNCBI GeneID"
    with pytest.raises(bulkgene.ConfigError, match="returned_content='IDS_ONLY'"):
        bulkgene.fetch(IDS[:10], tmp_path / "lib", as_frame=True, fields=["symbol"],
                       returned_content="IDS_ONLY", base_url=emulator.base_url,
                       progress=False)
    frame = bulkgene.open(out).to_frame()
    assert list(frame.columns) == ["query", "gene-id"]


def test_a_task_starting_now_is_not_also_counted_as_not_started(emulator: EmulatorThread,
                                                                tmp_path: Path) -> None:
    from bulkgene.output.lock import RunLock
    from bulkgene.results.status import directory_status

    out = _array(emulator, tmp_path, range(1))
    (out / "task-0001").mkdir()
    lock = RunLock(out / "task-0001")
    lock.acquire()  # a task in its first moments: locked, no checkpoint yet
    try:
        names = [Path(s.directory).name for s in directory_status(out)]
    finally:
        lock.release()
    assert names == ["task-0000", "task-0001", "task-0002"]
