"""``bulkgene explain`` and ``fetch --explain`` end to end: each missing and replaced ID gets its class."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import orjson
import pytest
from helpers import (
    EXPLAINED_MISSING_HEADER,
    EmulatorFactory,
    cli_env,
    expected_explanation,
    explained_rows,
    invoke_cli,
    read_summary,
    write_ids,
)

from bulkgene.output.lock import RunLock
from bulkgene.testing import EmulatorThread, Fate, GeneUniverse


def env_for(emulator: EmulatorThread, tmp_path: Path) -> dict[str, str]:
    return cli_env(emulator.base_url, BULKGENE_HISTORY=emulator.history_url,
                   BULKGENE_CACHE_DIR=str(tmp_path / "cache"))


@pytest.mark.parametrize("count", [
    5000, pytest.param(50_000, marks=pytest.mark.slow)])
def test_every_missing_id_of_a_list_gets_the_class_the_universe_implies(
        make_emulator: EmulatorFactory, tmp_path: Path, count: int) -> None:
    emulator = make_emulator()
    universe = emulator.state.universe
    ids = random.Random(22).sample(range(1, 1_000_001), count)
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    result = invoke_cli("fetch", str(source), "--out", str(out), "--explain", env=env)
    assert result.returncode == 0, result.stderr.decode()
    missing = explained_rows(out / "missing.tsv")
    assert (out / "missing.tsv").read_text().startswith(EXPLAINED_MISSING_HEADER + "\n")
    for gene_id, fields in missing.items():
        assert fields[1:] == expected_explanation(universe, gene_id), gene_id
    replaced = explained_rows(out / "replaced.tsv")
    for gene_id, fields in replaced.items():
        assert fields[1:] == expected_explanation(universe, gene_id), gene_id
        assert fields[1] == "REPLACED" and fields[2] == fields[0]  # the API's new gene, followed
    classes = Counter(fields[1] for fields in missing.values())
    # the universe's missing IDs: 2 % never known, 1 % discontinued (a quarter of them
    # replaced in the history all the same), each class well represented
    assert classes["NOT_IN_HISTORY"] > count // 80 and classes["DISCONTINUED"] > count // 300
    assert classes["REPLACED"] > count // 1000
    two_steps = [g for g in [*missing, *replaced] if len(universe.history(g)) == 2]
    assert len(two_steps) > count // 1000, "chains of two steps are explained too"
    summary = read_summary(out)
    assert (summary["missing_discontinued"], summary["missing_replaced"],
            summary["missing_not_in_history"]) == (
        classes["DISCONTINUED"], classes["REPLACED"], classes["NOT_IN_HISTORY"])
    stderr = result.stderr.decode()
    assert (f"explained {len(missing)} missing GeneIDs: {classes['DISCONTINUED']} discontinued, "
            f"{classes['REPLACED']} replaced by a live GeneID, {classes['NOT_IN_HISTORY']} not in "
            "the history") in stderr
    status = invoke_cli("status", str(out), env=env)
    assert (f"{classes['DISCONTINUED']} discontinued, {classes['REPLACED']} replaced by a live "
            f"GeneID") in status.stdout.decode()
    verified = invoke_cli("verify", str(out), env=env)
    assert verified.returncode == 0, verified.stderr.decode()


def test_explaining_again_gives_the_same_files(emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 5001))
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    assert invoke_cli("fetch", str(source), "--out", str(out), env=env).returncode == 0
    assert invoke_cli("explain", str(out), env=env).returncode == 0
    first = (out / "missing.tsv").read_bytes(), (out / "replaced.tsv").read_bytes()
    again = invoke_cli("explain", str(out), env=env)
    assert again.returncode == 0
    assert "the cached copy" in again.stderr.decode()
    assert ((out / "missing.tsv").read_bytes(), (out / "replaced.tsv").read_bytes()) == first
    assert invoke_cli("verify", str(out), env=env).returncode == 0


def test_a_local_plain_text_history_with_bad_lines(emulator: EmulatorThread,
                                                   tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [*range(1, 200), 250_000_000])
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    assert invoke_cli("fetch", str(source), "--out", str(out), env=env).returncode == 0
    missing = sorted(explained_rows(out / "missing.tsv"))
    history = tmp_path / "gene_history.txt"  # not gzip: read as it is
    history.write_text("#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\tDiscontinue_Date\n"
                       f"9606\t-\t{missing[0]}\tOLD1\t20050508\n"
                       "this line is not a history row\n"
                       f"9606\t7157\t{missing[1]}\tOLD2\t20100101\n")
    result = invoke_cli("explain", str(out), "--history", str(history), env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert "1 malformed lines of the history were skipped (line 3:" in result.stderr.decode()
    rows = explained_rows(out / "missing.tsv")
    assert rows[missing[0]][1:] == ["DISCONTINUED", "", "2005-05-08", "OLD1", "9606"]
    assert rows[missing[1]][1:] == ["REPLACED", "7157", "2010-01-01", "OLD2", "9606"]
    assert rows[250_000_000][1] == "NOT_IN_HISTORY"


def test_rows_added_after_explain_wait_for_the_next_one(emulator: EmulatorThread,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    first = write_ids(tmp_path / "ids.txt", range(1, 2001))
    assert invoke_cli("fetch", str(first), "--out", str(out), "--explain", env=env).returncode == 0
    more = write_ids(tmp_path / "more.txt", range(1500, 4001))
    added = invoke_cli("fetch", str(more), "--out", str(out), "--add", env=env)
    assert added.returncode == 0, added.stderr.decode()
    rows = explained_rows(out / "missing.tsv")
    fresh = [fields for gene_id, fields in rows.items() if gene_id > 2000]
    assert fresh and all(fields[1:] == [""] * 5 for fields in fresh)
    assert "not explained yet" in invoke_cli("status", str(out), env=env).stdout.decode()
    assert invoke_cli("verify", str(out), env=env).returncode == 0
    assert invoke_cli("explain", str(out), env=env).returncode == 0
    assert all(fields[1] for fields in explained_rows(out / "missing.tsv").values())
    assert invoke_cli("verify", str(out), env=env).returncode == 0


def test_every_task_of_an_array_is_explained(emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 6001))
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    for index in (0, 1):
        assert invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "500",
                          "--task-index", str(index), "--task-count", "2",
                          env=env).returncode == 0
    result = invoke_cli("explain", str(out), env=env)
    assert result.returncode == 0, result.stderr.decode()
    universe = emulator.state.universe
    both: dict[int, list[str]] = {}
    for task in ("task-0000", "task-0001"):
        rows = explained_rows(out / task / "missing.tsv")
        assert rows and all(fields[1:] == expected_explanation(universe, gene_id)
                            for gene_id, fields in rows.items())
        both.update(rows)
    # the array's merged DIR/missing.tsv follows its tasks'
    assert (out / "missing.tsv").read_text().startswith(EXPLAINED_MISSING_HEADER + "\n")
    assert explained_rows(out / "missing.tsv") == both
    assert invoke_cli("verify", str(out), env=env).returncode == 0


def test_explain_refuses_a_directory_a_run_is_writing(emulator: EmulatorThread,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    source = write_ids(tmp_path / "ids.txt", range(1, 50))
    assert invoke_cli("fetch", str(source), "--out", str(out), env=env).returncode == 0
    before = (out / "missing.tsv").read_bytes()
    lock = RunLock(out)
    lock.acquire()  # as a running fetch holds it (this process: alive)
    try:
        refused = invoke_cli("explain", str(out), env=env)
    finally:
        lock.release()
    assert refused.returncode == 1
    assert b"already writing to" in refused.stderr
    assert (out / "missing.tsv").read_bytes() == before
    assert not emulator.state.history_requests(), "the lock is checked before the download"


def test_an_ftp_history_url_is_refused_with_its_https_twin(emulator: EmulatorThread,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    source = write_ids(tmp_path / "ids.txt", range(1, 50))
    assert invoke_cli("fetch", str(source), "--out", str(out), env=env).returncode == 0
    refused = invoke_cli("explain", str(out), "--history",
                         "ftp://ftp.ncbi.nlm.nih.gov/gene/DATA/gene_history.gz", env=env)
    assert refused.returncode == 1
    assert (b"ftp:// is not supported; bulkgene downloads over https (verified, resumable). "
            b"Pass https://ftp.ncbi.nlm.nih.gov/gene/DATA/gene_history.gz") in refused.stderr


@pytest.mark.slow  # the demo's emulator answers with a real latency
def test_the_demo_shows_an_explained_missing_tsv() -> None:
    result = invoke_cli("demo")
    assert result.returncode == 0, result.stderr.decode()
    shown = result.stdout.decode()
    assert "bulkgene demo: explained" in shown
    assert "history, current_gene_id, discontinued_on, symbol, tax_id" in shown
    assert "NOT_IN_HISTORY" in shown or "DISCONTINUED" in shown


def test_a_refused_id_is_never_called_unknown_to_ncbi_and_every_account_names_retry(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    universe = GeneUniverse()
    live, discontinued, unknown = 1234, 270, 27  # a live gene, one withdrawn, one never known
    assert (universe.fate(live), universe.fate(discontinued), universe.fate(unknown)) == (
        Fate.FOUND, Fate.DISCONTINUED, Fate.UNKNOWN)
    refusing = make_emulator(invalid_ids=frozenset({live, discontinued, unknown}),
                             retry_after_s=0)
    out = tmp_path / "genes"
    source = write_ids(tmp_path / "ids.txt", range(1, 3001))
    env = env_for(refusing, tmp_path)
    result = invoke_cli("fetch", str(source), "--out", str(out), "--explain", "--retry-wait",
                        "0", env=env)
    assert result.returncode == 0, result.stderr.decode()
    rows = explained_rows(out / "missing.tsv")
    # the server refused them: the history doesn't list the live one and the unknown one,
    # which says nothing of whether NCBI has them; the withdrawn one's history still holds
    assert rows[live][:2] == rows[unknown][:2] == ["REJECTED_BY_SERVER", "REFUSED"]
    assert rows[discontinued][:2] == ["REJECTED_BY_SERVER", "DISCONTINUED"]
    stderr = result.stderr.decode()
    assert "bulkgene: starting 3000 unique GeneIDs (0 duplicates" in stderr  # one space
    assert "3 GeneIDs refused by the server, never answered (bulkgene retry" in stderr
    assert f"Fetch them again with: bulkgene retry {out}" in stderr
    assert "2 refused by the server and not in the history" in stderr  # the explain line
    summary = read_summary(out)
    assert (summary["refused"], summary["missing_refused"]) == (3, 2)
    status = invoke_cli("status", str(out), env=env).stdout.decode()
    assert "2 refused by the server and not in the history" in status
    assert "refused: 3 GeneIDs were refused by the server" in status
    assert f"bulkgene retry {out}" in status
    assert invoke_cli("verify", str(out)).returncode == 0
    # the server answers today: the live gene is found, the unknown one is silence now,
    # which makes it NOT_IN_HISTORY, and the withdrawn one keeps its history (the same
    # server: a run's GeneIDs all come from one)
    refusing.state.config.invalid_ids = frozenset()
    answering = refusing
    retried = invoke_cli("retry", str(out), "--base-url", answering.base_url,
                         env=env_for(answering, tmp_path))
    assert retried.returncode == 0, retried.stderr.decode()
    rows = explained_rows(out / "missing.tsv")
    assert live not in rows
    assert rows[unknown][:2] == ["NOT_RETURNED", "NOT_IN_HISTORY"]
    assert rows[discontinued][:2] == ["NOT_RETURNED", "DISCONTINUED"]
    assert b"refused" not in invoke_cli("status", str(out)).stdout
    summary = read_summary(out)
    assert (summary["refused"], summary["missing_refused"]) == (0, 0)
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()


def test_the_emulator_says_where_its_gene_history_is() -> None:
    shown = invoke_cli("emulate", "--help").stdout.decode()
    assert "http://127.0.0.1:PORT/gene/DATA/gene_history.gz" in " ".join(shown.split())


def test_a_history_given_to_fetch_means_explain(emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 200))
    history = tmp_path / "gene_history.txt"
    history.write_text("#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\t"
                       "Discontinue_Date\n9606\t-\t999999\tOLD\t20050508\n")
    out = tmp_path / "genes"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--history", str(history),
                        env=env_for(emulator, tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    assert b"--history given: explaining the run's missing GeneIDs, as --explain does" \
        in result.stderr
    assert (out / "missing.tsv").read_text().startswith(EXPLAINED_MISSING_HEADER + "\n")
    # BULKGENE_HISTORY in the environment (a profile's setting) is no request to explain
    plain = invoke_cli("fetch", str(source), "--out", str(tmp_path / "plain"),
                       env=env_for(emulator, tmp_path))
    assert plain.returncode == 0 and b"explained" not in plain.stderr


def test_explaining_is_no_part_of_the_latest_run_s_time_and_speed(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 2001))
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    assert invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "100",
                      env=env).returncode == 0

    def latest_run() -> tuple[float, float]:
        task = orjson.loads(invoke_cli("status", str(out), "--json").stdout)["tasks"][0]
        return task["latest_run_elapsed_s"], task["latest_run_ids_per_s"]

    before = latest_run()
    assert invoke_cli("explain", str(out), env=env).returncode == 0
    assert latest_run() == before


def test_explain_qq_prints_nothing_but_errors(emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 200))
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    assert invoke_cli("fetch", str(source), "--out", str(out), env=env).returncode == 0
    quiet = invoke_cli("explain", str(out), "-q", env=env)
    assert quiet.returncode == 0 and quiet.stderr.startswith(b"bulkgene: explained ")
    assert quiet.stderr.count(b"\n") == 1
    silent = invoke_cli("explain", str(out), "-qq", env=env)
    assert silent.returncode == 0 and silent.stderr == b""


def test_an_array_s_merged_files_follow_every_explain_and_follow(emulator: EmulatorThread,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    source = write_ids(tmp_path / "ids.txt", random.Random(9).sample(range(1, 1_000_001), 3000))
    for index in range(3):
        assert invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "500",
                          "--task-index", str(index), "--task-count", "3",
                          env=env).returncode == 0
    # one task explained: DIR's merged missing.tsv follows at once, not at the next verify
    assert invoke_cli("explain", str(out / "task-0001"), env=env).returncode == 0
    merged = explained_rows(out / "missing.tsv")
    tasks = [explained_rows(out / f"task-000{index}" / "missing.tsv") for index in range(3)]
    assert {gene_id: fields[0] for gene_id, fields in merged.items()} == {
        gene_id: fields[0] for rows in tasks for gene_id, fields in rows.items()}
    assert all(merged[gene_id] == fields for gene_id, fields in tasks[1].items())
    assert all(fields[1] for fields in tasks[1].values())
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0 and b"merged into" not in verified.stdout
    followed = invoke_cli("explain", str(out), "--follow-replaced", env=env)
    assert followed.returncode == 0, followed.stderr.decode()
    lines = followed.stderr.decode().splitlines()
    last_task = max(i for i, line in enumerate(lines) if line.startswith("bulkgene: task "))
    array = [i for i, line in enumerate(lines) if line.startswith("bulkgene: array of 3 tasks")]
    assert len(array) == 1 and array[0] > last_task, followed.stderr.decode()
    summary = read_summary(out)
    assert summary["exit_code"] == 0 and summary["complete"] and summary["followed"] > 0
    assert (f"+ missing {summary['missing']} ({summary['missing_discontinued']} discontinued, "
            f"{summary['missing_replaced']} replaced") in lines[array[0]]
