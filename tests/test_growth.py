"""Growing a finished run (run/growth.py): --add, retry and --follow-replaced, accounted and exactly once."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from helpers import (
    EmulatorFactory,
    cli_command,
    cli_env,
    expected_explanation,
    explained_rows,
    gene_ids_written,
    invoke_cli,
    read_records,
    read_summary,
    read_tsv,
    run_cli,
    write_ids,
)

from bulkgene.config import TaskSpec
from bulkgene.input import plan as idplan
from bulkgene.output import checkpoint as ckpt
from bulkgene.testing import EmulatorThread, Fate, GeneUniverse
from bulkgene.testing.universe import REPLACEMENT_BASE


def env_for(emulator: EmulatorThread, tmp_path: Path) -> dict[str, str]:
    return cli_env(emulator.base_url, BULKGENE_HISTORY=emulator.history_url,
                   BULKGENE_CACHE_DIR=str(tmp_path / "cache"))


def ids_asked(emulator: EmulatorThread, since: int = 0) -> int:
    return sum(arrival.n_ids for arrival in emulator.state.arrivals()[since:])


def test_add_fetches_only_the_new_ids_and_the_accounting_follows(emulator: EmulatorThread,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    first = write_ids(tmp_path / "ids.txt", range(1, 3001))
    assert invoke_cli("fetch", str(first), "--out", str(out), env=env).returncode == 0
    asked_before = len(emulator.state.arrivals())
    more = write_ids(tmp_path / "more.txt", [*range(2001, 5001), 4000])  # 2000 new, 1 twice
    # the dry run of an --add counts what it would fetch (it said "0 to fetch")
    preview = invoke_cli("fetch", str(more), "--out", str(out), "--add", "--dry-run", env=env)
    assert preview.returncode == 0, preview.stderr.decode()
    assert (b"--add would fetch the 2000 GeneIDs of the input it does not have, in 2 batches"
            in preview.stdout), preview.stdout.decode()
    assert len(emulator.state.arrivals()) == asked_before
    unchanged = idplan.read_header(out)
    assert unchanged is not None and unchanged.segments == [], "a dry run adds nothing"
    added = invoke_cli("fetch", str(more), "--out", str(out), "--add", env=env)
    assert added.returncode == 0, added.stderr.decode()
    assert ids_asked(emulator, asked_before) == 2000  # only the new ones
    assert b"2000 new GeneIDs (1000 it already had, 1 duplicates" in added.stderr
    summary = read_summary(out)
    assert summary["requested"] == 5000 == summary["found"] + summary["missing"]
    assert summary["duplicates"] == 1
    universe = emulator.state.universe
    found = {g for g in range(1, 5001) if universe.fate(g) in (Fate.FOUND, Fate.REPLACED)}
    assert summary["found"] == len(found)
    written = gene_ids_written(out)
    assert max(written.values()) == 1
    assert invoke_cli("verify", str(out)).returncode == 0
    # the same --add again adds nothing; the list's own command still resumes the run
    asked_before = len(emulator.state.arrivals())
    again = invoke_cli("fetch", str(more), "--out", str(out), "--add", env=env)
    resumed = invoke_cli("fetch", str(first), "--out", str(out), env=env)
    assert again.returncode == resumed.returncode == 0, resumed.stderr.decode()
    assert ids_asked(emulator, asked_before) == 0
    assert read_summary(out)["requested"] == 5000
    again_preview = invoke_cli("fetch", str(more), "--out", str(out), "--add", "--dry-run", env=env)
    assert b"--add would fetch the 0 GeneIDs" in again_preview.stdout
    grown = invoke_cli("fetch", str(first), "--out", str(out), "--dry-run", env=env)
    assert b"grown since its list (1 additions): 5 batches committed; 0 of the list's" in (
        grown.stdout), grown.stdout.decode()
    header = idplan.read_header(out)
    assert header is not None and [s.kind for s in header.segments] == ["add"]
    # without --add, another list is another run: refused, as before
    refused = invoke_cli("fetch", str(more), "--out", str(out), env=env)
    assert refused.returncode == 1 and b"differ in content" in refused.stderr
    assert (f"To add the GeneIDs of {more} to this finished run, pass --add: only those it "
            "doesn't have are fetched").encode() in refused.stderr


def test_add_to_an_unfinished_run_or_from_stdin_is_refused(make_emulator: EmulatorFactory,
                                                           tmp_path: Path) -> None:
    emulator = make_emulator()
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    first = write_ids(tmp_path / "ids.txt", range(1, 101))
    # the first task of two has run: the array's list is not done
    invoke_cli("fetch", str(first), "--out", str(out), "--batch-size", "10", "--task-index", "0",
               "--task-count", "2", env=env)
    more = write_ids(tmp_path / "more.txt", range(200, 300))
    unfinished = invoke_cli("fetch", str(more), "--out", str(out), "--add", "--batch-size", "10",
                            "--task-index", "0", "--task-count", "2", env=env)
    assert unfinished.returncode == 1
    assert (f"the run in {out} is not finished: 50 GeneIDs of the list (run the fetch command "
            "that started the run). Finish it that way first, then run the same --add again"
            ).encode() in unfinished.stderr
    piped = invoke_cli("fetch", "-", "--out", str(out), "--add", "--batch-size", "10",
                       "--task-index", "0", "--task-count", "2", env=env, stdin=b"5\n")
    assert piped.returncode == 1 and b"save the IDs to a file first" in piped.stderr


def test_retry_fetches_refused_ids_again_and_no_stale_row_remains(make_emulator: EmulatorFactory,
                                                                  tmp_path: Path) -> None:
    refused_ids = {17, 1234, 2999}
    refusing = make_emulator(invalid_ids=frozenset(refused_ids), retry_after_s=0)
    out = tmp_path / "genes"
    source = write_ids(tmp_path / "ids.txt", range(1, 3001))
    first = invoke_cli("fetch", str(source), "--out", str(out), "--retry-wait", "0",
                       env=env_for(refusing, tmp_path))
    assert first.returncode == 0, first.stderr.decode()
    rows = explained_rows(out / "missing.tsv")
    assert {g for g, fields in rows.items() if fields[0] == "REJECTED_BY_SERVER"} == refused_ids
    before = read_summary(out)
    # the same server answers them today (a directory resumes only on the server it came from)
    refusing.state.config.invalid_ids = frozenset()
    answering, asked_before = refusing, len(refusing.state.arrivals())
    retried = invoke_cli("retry", str(out), "--base-url", answering.base_url,
                         env=env_for(answering, tmp_path))
    assert retried.returncode == 0, retried.stderr.decode()
    assert b"fetching again 3 refused GeneIDs" in retried.stderr
    assert ids_asked(answering, asked_before) == 3
    rows = explained_rows(out / "missing.tsv")
    assert not refused_ids & set(rows)  # found now: no stale row
    after = read_summary(out)
    assert after["requested"] == before["requested"]
    assert (after["found"], after["missing"]) == (before["found"] + 3, before["missing"] - 3)
    assert gene_ids_written(out).keys() >= refused_ids
    assert invoke_cli("verify", str(out)).returncode == 0
    again = invoke_cli("retry", str(out), "--base-url", answering.base_url,
                       env=env_for(answering, tmp_path))
    assert again.returncode == 0 and b"nothing to fetch again" in again.stderr
    assert ids_asked(answering, asked_before) == 3


def replaced_in_history(universe: GeneUniverse, ids: list[int]) -> dict[int, int]:
    """The IDs the API doesn't answer whose history ends at a live GeneID: original -> successor."""
    followed = {}
    for gene_id in ids:
        fields = expected_explanation(universe, gene_id)
        if universe.fate(gene_id) is not Fate.FOUND and fields[0] == "REPLACED" and (
                universe.fate(gene_id) is not Fate.REPLACED):
            followed[gene_id] = int(fields[1])
    return followed


def assert_followed(out: Path, universe: GeneUniverse, ids: list[int]) -> dict[int, int]:
    """Every followed ID's successor written exactly once with the original in its query."""
    followed = replaced_in_history(universe, ids)
    assert followed, "the list must hold IDs to follow"
    records = read_records(out)
    by_gene: dict[int, list[list[str]]] = {}
    for record in records:
        by_gene.setdefault(int(record["gene"]["gene_id"]), []).append(record["query"])
    for original, successor in followed.items():
        queries = by_gene.get(successor)
        assert queries is not None and len(queries) == 1, (original, successor, queries)
        assert str(original) in queries[0]
    missing = explained_rows(out / "missing.tsv")
    assert not set(followed) & set(missing)
    replaced = explained_rows(out / "replaced.tsv")
    for original, successor in followed.items():
        assert replaced[original][0] == str(successor)
        assert replaced[original][1:] == expected_explanation(universe, original)
    summary = read_summary(out)
    assert summary["followed"] == len(followed)
    assert summary["missing_replaced"] == 0
    assert max(gene_ids_written(out).values()) == 1
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
    return followed


@pytest.mark.slow
def test_follow_replaced_fetches_each_successor_once_with_the_original_in_its_query(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    universe = emulator.state.universe
    ids = random.Random(5).sample(range(1, 1_000_001), 8000)
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    source = write_ids(tmp_path / "ids.txt", ids)
    result = invoke_cli("fetch", str(source), "--out", str(out), "--explain", "--follow-replaced",
                        env=env)
    assert result.returncode == 0, result.stderr.decode()
    followed = assert_followed(out, universe, ids)
    assert f"found {read_summary(out)['found']} ({len(followed)} through".encode() in result.stderr
    before = len(emulator.state.arrivals())
    again = invoke_cli("explain", str(out), "--follow-replaced", env=env)
    assert again.returncode == 0 and ids_asked(emulator, before) == 0  # nothing left to follow


def test_a_successor_the_run_holds_is_not_fetched_and_an_unknown_one_gives_the_row_back(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    held, unknown = 7157, 1_999_999_999
    universe = GeneUniverse(unknown=frozenset({unknown, 300_000_001, 300_000_002}))
    emulator = make_emulator(universe)
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    # 300000001 and 300000002 are unknown to the API; the history says the first was replaced
    # by a gene the run holds (7157, requested), the second by one the API doesn't know
    source = write_ids(tmp_path / "ids.txt", [held, 300_000_001, 300_000_002])
    assert invoke_cli("fetch", str(source), "--out", str(out), env=env).returncode == 0
    history = tmp_path / "history.txt"
    history.write_text("#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\tDiscontinue_Date\n"
                       f"9606\t{held}\t300000001\tA\t20200101\n")
    asked_before = len(emulator.state.arrivals())
    # first only the one whose successor the run holds: nothing to fetch, the account follows
    only_held = invoke_cli("explain", str(out), "--history", str(history), "--follow-replaced",
                           env=env)
    assert only_held.returncode == 0, only_held.stderr.decode()
    assert len(emulator.state.arrivals()) == asked_before
    summary = read_summary(out)
    assert (summary["found"], summary["missing"], summary["replaced"], summary["followed"],
            summary["missing_not_in_history"]) == (2, 1, 1, 1, 1)
    assert invoke_cli("verify", str(out)).returncode == 0
    with history.open("a") as more_history:
        more_history.write(f"9606\t{unknown}\t300000002\tB\t20200101\n")
    result = invoke_cli("explain", str(out), "--history", str(history), "--follow-replaced",
                        env=env)
    assert result.returncode == 0, result.stderr.decode()
    asked = emulator.state.arrivals()[asked_before:]
    # one batch of one successor; then (nothing found) the client's probe with a GeneID the
    # server must know, which is no fetch of the held gene
    assert (asked[0].first_id, asked[0].n_ids) == (unknown, 1)
    assert all((a.first_id, a.n_ids) == (held, 1) for a in asked[1:])
    rows = explained_rows(out / "missing.tsv")
    assert 300_000_001 not in rows  # not fetched: the run has its gene, so it is found
    assert explained_rows(out / "replaced.tsv")[300_000_001] == [
        str(held), "REPLACED", str(held), "2020-01-01", "A", "9606"]
    assert rows[300_000_002][1:3] == ["REPLACED", str(unknown)]  # fetched, unknown: row back
    summary = read_summary(out)
    assert (summary["found"], summary["missing"], summary["replaced"], summary["followed"],
            summary["missing_replaced"]) == (2, 1, 1, 1, 1)
    assert ("1 replaced GeneIDs whose live GeneID the run holds already (under another GeneID "
            "of the list) are now in replaced.tsv") in only_held.stderr.decode()
    stderr = result.stderr.decode()
    assert "1 replaced GeneIDs were followed to 1 live GeneIDs fetched now" in stderr
    assert "--follow-replaced` gets them" not in stderr  # it was given
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
    again = invoke_cli("explain", str(out), "--history", str(history), "--follow-replaced",
                       env=env)
    assert again.returncode == 0 and read_summary(out)["followed"] == 1


def test_an_array_grows_task_by_task(emulator: EmulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    ids = random.Random(9).sample(range(1, 1_000_001), 4000)
    source = write_ids(tmp_path / "ids.txt", ids[:3000])
    more = write_ids(tmp_path / "more.txt", ids[2000:])
    for args in (("fetch", str(source)), ("fetch", str(more), "--add")):
        for index in (0, 1):
            result = invoke_cli(*args, "--out", str(out), "--batch-size", "500", "--task-index",
                                str(index), "--task-count", "2", env=env)
            assert result.returncode == 0, result.stderr.decode()
    followed = invoke_cli("explain", str(out), "--follow-replaced", env=env)
    assert followed.returncode == 0, followed.stderr.decode()
    universe = emulator.state.universe
    expected = replaced_in_history(universe, ids)
    for original, successor in expected.items():
        task = next(t for t in ("task-0000", "task-0001")
                    if original in explained_rows(out / t / "replaced.tsv"))
        assert explained_rows(out / task / "replaced.tsv")[original][0] == str(successor)
    requested = sum(read_summary(out / t)["requested"] for t in ("task-0000", "task-0001"))
    assert requested == 4000
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()


def _progress(out: Path) -> tuple[int, int]:
    """(segments taken in, batches committed) of the run in ``out``, from its checkpoint."""
    state = ckpt.load(out)
    return (len(state.segments), state.committed_batches) if state else (0, 0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_follow_replaced_under_random_sigkills_ends_with_every_successor_once(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.02, latency_jitter=0.5)
    universe = emulator.state.universe
    # 300 IDs to follow among 2000 others; batches of 5: the follow takes 60 batches at the
    # anonymous 5 requests/s (explain is given no --rate here), each a moment to kill in
    followable = list(replaced_in_history(universe, list(range(1, 400_001))))[:300]
    ids = [*random.Random(7).sample(range(1, 1_000_001), 2000), *followable]
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    source = write_ids(tmp_path / "ids.txt", ids)
    fetched = run_cli("fetch", str(source), "--out", str(out), "--explain", "--batch-size", "5",
                      env=env, timeout=300)
    assert fetched.returncode == 0, fetched.stderr.decode()
    to_follow = replaced_in_history(universe, ids)
    assert len(to_follow) >= 300
    command = cli_command("explain", str(out), "--follow-replaced", "--no-progress")
    rng = random.Random(20261207)
    kills = mid_follow = 0
    for _ in range(12):
        start = _progress(out)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        # a random moment: as it grows the run, once it has, or after 1-3 more committed batches
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
        segments, committed = _progress(out)
        header = idplan.read_header(out)
        assert header is not None
        total, _ = idplan.task_share(header.requested, header.segments, TaskSpec(), 5)
        mid_follow += segments > 0 and committed < total
    assert kills >= 6, "most kills must land while the follow runs"
    assert mid_follow >= 3, "kills must land after the run grew, before the follow is done"
    finishing = run_cli("explain", str(out), "--follow-replaced", env=env, timeout=300)
    assert finishing.returncode == 0, finishing.stderr.decode()
    assert_followed(out, universe, ids)
    # one follow segment per growth that got as far as plan.json, and none fetched twice
    header = idplan.read_header(out)
    assert header is not None and all(s.kind == "follow" for s in header.segments)
    records = [orjson.dumps(r["query"]) for r in read_records(out)
               if int(r["gene"]["gene_id"]) >= REPLACEMENT_BASE and r["query"][0] in
               {str(g) for g in to_follow}]
    assert len(records) == len(set(to_follow.values()))


def test_the_rejected_lines_of_an_added_file_are_recorded_once_with_file_and_line(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    first = tmp_path / "ids.txt"
    first.write_text("1\nBRCA1\n2\n")
    assert invoke_cli("fetch", str(first), "--out", str(out), env=env).returncode == 0
    more = tmp_path / "more.txt"
    more.write_text("3\nTP53\n4\nENSG00000141510\n")
    listed = (out / "rejects.tsv").read_text().splitlines()
    # a killed --add may have left rows of its own behind, with no segment recorded
    (out / "rejects.tsv").write_text("\n".join([*listed, f"{more}\t2\tTP53\tleftover"]) + "\n")
    added = invoke_cli("fetch", str(more), "--out", str(out), "--add", env=env)
    assert added.returncode == 0, added.stderr.decode()
    assert b"2 rejected lines -> " in added.stderr
    for _ in range(2):  # the same --add again records nothing twice
        rows = read_tsv(out / "rejects.tsv")
        assert [row[:3] for row in rows] == [[str(first), "2", "BRCA1"], [str(more), "2", "TP53"],
                                             [str(more), "4", "ENSG00000141510"]]
        assert invoke_cli("fetch", str(more), "--out", str(out), "--add",
                          env=env).returncode == 0
    assert read_summary(out)["rejected"] == 3
    assert invoke_cli("verify", str(out)).returncode == 0
    # verify counts them: a rejected line lost from rejects.tsv is a problem
    (out / "rejects.tsv").write_text("".join(
        line + "\n" for line in (out / "rejects.tsv").read_text().splitlines()[:-1]))
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 1
    assert b"rejects.tsv holds 2 rejected lines, the input's plan counted 3" in verified.stderr


def test_another_server_is_refused_before_anything_changes_and_the_run_s_is_named(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    refusing = make_emulator(invalid_ids=frozenset({1234}), retry_after_s=0)
    out = tmp_path / "genes"
    env = env_for(refusing, tmp_path)
    ids = random.Random(5).sample(range(1, 1_000_001), 3000)
    source = write_ids(tmp_path / "ids.txt", [1234, *ids])
    assert invoke_cli("fetch", str(source), "--out", str(out), "--explain", "--retry-wait", "0",
                      env=env).returncode == 0
    assert read_summary(out)["missing_replaced"] > 0 and read_summary(out)["refused"] == 1
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    more = write_ids(tmp_path / "more.txt", range(1, 50))
    # BULKGENE_BASE_URL unset: NCBI's own server, not the one that filled the directory
    elsewhere = {name: value for name, value in env.items() if name != "BULKGENE_BASE_URL"}
    for command in (("explain", str(out), "--follow-replaced"), ("retry", str(out)),
                    ("fetch", str(more), "--out", str(out), "--add")):
        refused = invoke_cli(*command, env=elsewhere)
        assert refused.returncode == 1, (command, refused.stderr.decode())
        stderr = refused.stderr.decode()
        assert f"--base-url {refusing.base_url}" in stderr, stderr
        assert "--restart" not in stderr
        assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()


def test_retry_and_follow_refuse_an_unfinished_run_and_name_the_command_that_finishes_it(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(invalid_ids=frozenset({17}), retry_after_s=0)
    out = tmp_path / "genes"
    env = env_for(emulator, tmp_path)
    source = write_ids(tmp_path / "ids.txt", range(1, 201))
    # task 0 of 2 has run, task 1 never did: half the list is still to fetch
    assert invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "50",
                      "--task-index", "0", "--task-count", "2", "--explain", "--retry-wait", "0",
                      env=env).returncode == 0
    asked_before = len(emulator.state.arrivals())
    for command in (("retry", str(out)), ("explain", str(out), "--follow-replaced")):
        refused = invoke_cli(*command, env=env)
        assert refused.returncode == 1, refused.stderr.decode()
        assert (f"the run in {out} is not finished: 100 GeneIDs of the list (run the fetch "
                "command that started the run)").encode() in refused.stderr
    assert len(emulator.state.arrivals()) == asked_before  # nothing fetched


def test_an_interrupted_retry_or_follow_is_named_and_its_rerun_counts_truly(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    from bulkgene.history.follow import grow_follow
    from bulkgene.run import growth

    universe = GeneUniverse()
    refused_ids = {1234, 2345}
    refusing = make_emulator(universe, invalid_ids=frozenset(refused_ids), retry_after_s=0)
    out = tmp_path / "genes"
    ids = random.Random(5).sample(range(1, 1_000_001), 3000)
    source = write_ids(tmp_path / "ids.txt", [*refused_ids, *ids])
    assert invoke_cli("fetch", str(source), "--out", str(out), "--explain", "--retry-wait", "0",
                      env=env_for(refusing, tmp_path)).returncode == 0
    # the same server answers them today (a run's GeneIDs all come from one server)
    refusing.state.config.invalid_ids = frozenset()
    answering, asked_first = refusing, len(refusing.state.arrivals())
    env = env_for(answering, tmp_path)
    # a retry killed once it grew the run: its two IDs left missing.tsv and are pending
    growth.grow_again(out, "retry", "refused GeneIDs, again", growth.refused_rows, "retry")
    command = f"bulkgene retry {out}"
    status = invoke_cli("status", str(out), env=env).stdout.decode()
    assert (f"interrupted, 2 of 3002 IDs pending: 2 refused GeneIDs of an interrupted retry: "
            f"run {command}") in status
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 1 and command.encode() in verified.stderr
    assert b"re-running the same fetch command" not in verified.stderr
    # another command that grows the run waits for it
    follow = invoke_cli("explain", str(out), "--follow-replaced", env=env)
    assert follow.returncode == 1 and f"(run {command})".encode() in follow.stderr
    retried = invoke_cli("retry", str(out), env=env)
    assert retried.returncode == 0, retried.stderr.decode()
    assert b"fetching again 2 refused GeneIDs an interrupted retry left" in retried.stderr
    assert ids_asked(answering, asked_first) == 2
    # a --follow-replaced killed once it grew the run
    to_follow = replaced_in_history(universe, [*refused_ids, *ids])
    grow_follow(out)
    command = f"bulkgene explain {out} --follow-replaced"
    status = invoke_cli("status", str(out), env=env).stdout.decode()
    assert (f"live successors of an interrupted --follow-replaced: run {command}") in status
    plain = invoke_cli("explain", str(out), env=env)  # explains, and says what is left
    assert plain.returncode == 0 and "is not finished (" in plain.stderr.decode()
    assert f"to fetch: run {command})" in plain.stderr.decode()
    asked_before = len(answering.state.arrivals())
    finished = invoke_cli("explain", str(out), "--follow-replaced", env=env)
    assert finished.returncode == 0, finished.stderr.decode()
    assert (f"{len(set(to_follow.values()))} live GeneIDs an interrupted --follow-replaced "
            "left were fetched").encode() in finished.stderr
    assert ids_asked(answering, asked_before) == len(set(to_follow.values()))
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
