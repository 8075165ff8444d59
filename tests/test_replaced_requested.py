"""A replaced GeneID whose new gene was requested too: the gene is written once, by someone.

Request 10 and 20; the server answers 10 with gene 20 (REPLACED_GENE_ID). Gene 20 used to be
left to 20's own batch, which wrote nothing when 20 itself was gone (discontinued) or merged
further (into 30) by then: the record that answered 10 was lost for good, and the run said
done. The server here changes its mind the way NCBI's merges do between two requests.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from helpers import cli_command, cli_env, invoke_cli, read_records, read_tsv, write_ids
from hostile import HostileServer

from bulkgene import layout
from bulkgene.errors import CorruptCheckpoint
from bulkgene.output import checkpoint as ckpt

# what the server answers for a requested GeneID: its gene, another gene, or nothing
Fates = dict[int, int | None]


def _report(query: int, gene: int) -> dict[str, object]:
    report: dict[str, object] = {
        "gene": {"gene_id": str(gene), "symbol": f"S{gene}", "tax_id": "9606",
                 "taxname": "Homo sapiens"},
        "query": [str(query)]}
    if query != gene:
        report["warnings"] = [{"gene_warning_code": "REPLACED_GENE_ID", "reason": "replaced",
                               "replaced_id": {"requested": str(query), "returned": str(gene)}}]
    return report


def _server(fates: Fates) -> HostileServer:
    async def handler(request: web.Request) -> web.Response:
        found = re.search(r"/gene/id/([0-9,%C]+)", request.path)
        if found is None:
            return web.json_response({"error": "Not Found", "code": 404}, status=404)
        ids = [int(x) for x in found.group(1).replace("%2C", ",").split(",")]
        reports = [_report(i, fate) for i in ids
                   if (fate := fates.get(i, i)) is not None]
        return web.json_response({"reports": reports, "total_count": len(reports)})

    return HostileServer(handler)


def _written(out: Path) -> Counter[int]:
    written: Counter[int] = Counter()
    for directory in [out, *sorted(out.glob("task-*"))]:
        written.update(int(r["gene"]["gene_id"]) for r in read_records(directory))
    return written


def _fetch(server: HostileServer, source: Path, out: Path, *extra: str) -> bytes:
    result = invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "1",
                        "--no-progress", *extra, env=cli_env(server.base_url))
    assert result.returncode == 0, result.stderr.decode()
    return result.stderr


def _verified(out: Path) -> None:
    verdict = invoke_cli("verify", str(out))
    assert verdict.returncode == 0, verdict.stderr.decode()


@pytest.mark.parametrize("order", [[10, 20], [20, 10]], ids=["old-first", "new-first"])
@pytest.mark.parametrize(("fates", "expected"), [
    ({10: 20, 20: None}, {20: 1}),            # 20 discontinued between the two requests
    ({10: 20, 20: 30}, {20: 1, 30: 1}),       # 20 merged further into 30 meanwhile
    ({10: 20}, {20: 1}),                      # the usual case: 20 answers itself
], ids=["gone", "chain", "live"])
def test_the_new_gene_of_a_replaced_id_is_written_once_whatever_its_own_answer(
        tmp_path: Path, order: list[int], fates: Fates, expected: dict[int, int]) -> None:
    source = write_ids(tmp_path / "ids.txt", order)
    out = tmp_path / "out"
    with _server(fates) as server:
        _fetch(server, source, out)
        assert _written(out) == Counter(expected)
        assert ["10", "20"] in [row[:2] for row in read_tsv(out / "replaced.tsv")]
        _verified(out)
        _fetch(server, source, out)  # a re-run changes nothing
        assert _written(out) == Counter(expected)


def test_the_usual_case_keeps_the_gene_answering_its_own_id(tmp_path: Path) -> None:
    """20 answers itself: its own record is written (its query names 20), not the one of 10."""
    out = tmp_path / "out"
    with _server({10: 20}) as server:
        _fetch(server, write_ids(tmp_path / "ids.txt", [10, 20]), out)
    (record,) = read_records(out)
    assert record["query"] == ["20"]


@pytest.mark.parametrize("tasks", [(0, 1), (1, 0)], ids=["old-task-first", "new-task-first"])
@pytest.mark.parametrize(("fates", "expected"), [
    ({10: 20, 20: None}, {20: 1}),
    ({10: 20, 20: 30}, {20: 1, 30: 1}),
    ({10: 20}, {20: 1}),
], ids=["gone", "chain", "live"])
def test_an_array_writes_the_new_gene_once_whichever_task_runs_first(
        tmp_path: Path, tasks: tuple[int, int], fates: Fates, expected: dict[int, int]) -> None:
    source = write_ids(tmp_path / "ids.txt", [10, 20])  # 10 in task 0, 20 in task 1
    out = tmp_path / "out"
    with _server(fates) as server:
        for index in tasks:
            _fetch(server, source, out, "--task-index", str(index), "--task-count", "2")
        assert _written(out) == Counter(expected)
        _verified(out)


def test_several_old_ids_of_one_gone_gene_write_it_once(tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [10, 11, 20, 12])
    out = tmp_path / "out"
    with _server({10: 20, 11: 20, 12: 20, 20: None}) as server:
        _fetch(server, source, out)
    assert _written(out) == Counter({20: 1})
    rows = read_tsv(out / "replaced.tsv")
    assert sorted(r[:2] for r in rows) == [["10", "20"], ["11", "20"], ["12", "20"]]
    assert orjson.loads((out / "summary.json").read_bytes())["found"] == 3
    _verified(out)


def _many_fates() -> tuple[list[int], Fates, Counter[int]]:
    """600 GeneIDs in a shuffled list: 1-100 replaced by 101-200 (101-150 gone since, 151-200
    live), 201-250 by 251-300 (merged further into 1251-1300 since), the rest live."""
    fates: Fates = {}
    for k in range(1, 101):
        fates[k] = 100 + k
    for gene in range(101, 151):
        fates[gene] = None
    for k in range(201, 251):
        fates[k] = k + 50
        fates[k + 50] = k + 1050
    ids = list(range(1, 601))
    random.Random(19).shuffle(ids)
    expected = Counter([*range(101, 201), *range(251, 301), *range(1251, 1301),
                        *range(301, 601)])
    return ids, fates, expected


def _kill_after_commits(process: subprocess.Popen[bytes], task_dir: Path,
                        rng: random.Random) -> None:
    """SIGKILL ``process`` once ``task_dir`` committed 1-3 more batches (or it ended)."""
    state = ckpt.load(task_dir) if (task_dir / "checkpoint.json").exists() else None
    target = (state.committed_batches if state else 0) + rng.randint(1, 3)
    deadline = time.monotonic() + 120  # a hang guard only: progress is what is waited for
    while process.poll() is None:
        with contextlib.suppress(CorruptCheckpoint, FileNotFoundError):
            state = ckpt.load(task_dir)
            if state is not None and state.committed_batches >= target:
                break
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.02))  # a random moment inside the next commit
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("tasks", [1, 2], ids=["one-task", "array"])
def test_random_kills_still_write_every_new_gene_once(tmp_path: Path, tasks: int) -> None:
    ids, fates, expected = _many_fates()
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    rng = random.Random(2019 + tasks)
    with _server(fates) as server:
        env = cli_env(server.base_url)

        def start(index: int, rate: int) -> subprocess.Popen[bytes]:
            split = ("--task-index", str(index), "--task-count", str(tasks)) if tasks > 1 else ()
            return subprocess.Popen(
                cli_command("fetch", str(source), "--out", str(out), "--batch-size", "3",
                            "--concurrency", "4", "--rate", str(rate), "--no-progress", *split),
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        for _ in range(8):
            running = [(start(index, 40), index) for index in range(tasks)]
            for process, index in running:
                _kill_after_commits(process, out / layout.task_dir_name(index) if tasks > 1
                                    else out, rng)
        for index in range(tasks):
            finished = start(index, 1000)
            assert finished.wait(timeout=120) == 0
    assert _written(out) == expected
    _verified(out)
