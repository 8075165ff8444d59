"""The library never hands back part of a list as the whole, and never changes a run's input.

bulkgene.fetch raises when batches failed (the CLI exits 3 there), bulkgene.open refuses to
read a run that does not hold the whole list (as export does), unless partial=True; the
accounting is the checkpoints' (as status reads it), so a killed run shows what it holds;
a refused fetch leaves the run's requested-ids.txt alone; argument mistakes are named
before anything is sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    EmulatorFactory,
    cli_command,
    cli_env,
    expected_for,
    served,
    wait_for_commits,
    write_ids,
)

import bulkgene
from bulkgene.output.lock import RunLock
from bulkgene.testing import EmulatorThread

IDS = list(range(1, 2001))


def test_fetch_raises_when_batches_failed_and_returns_part_only_when_asked(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(faults={"http_503": 1.0})  # every request fails
    out = tmp_path / "genes"
    shapes: list[dict[str, Any]] = [{}, {"as_frame": True, "with_missing": True}]
    for shape in shapes:
        with pytest.raises(bulkgene.IncompleteRun) as raised:
            bulkgene.fetch(IDS, out, base_url=emulator.base_url, rate=1000, progress=False,
                           max_attempts=1, batch_size=500, **shape)
        error = raised.value
        assert error.exit_code == 3  # what the CLI exits with here
        assert error.summary is not None and error.summary.failed == len(IDS)
        said = str(error)
        assert "4 batches (2000 GeneIDs) failed" in said and "partial=True" in said
        assert "--" not in said  # the library's words, not the CLI's
    part = bulkgene.fetch(IDS, out, base_url=emulator.base_url, rate=1000, progress=False,
                          max_attempts=1, batch_size=500, partial=True)
    assert part == []
    # a partial frame still has a row per GeneID given: those not fetched say so
    frame = bulkgene.fetch(IDS, out, base_url=emulator.base_url, rate=1000, progress=False,
                           max_attempts=1, batch_size=500, partial=True, as_frame=True)
    assert list(frame.index) == IDS
    assert set(frame["missing_reason"]) == {"NOT_FETCHED"} and frame["symbol"].isna().all()


def _failed_run(emulator: EmulatorThread, tmp_path: Path) -> Path:
    out = tmp_path / "genes"
    result = subprocess.run(cli_command("fetch", str(write_ids(tmp_path / "ids.txt", IDS)),
                                        "--out", str(out), "-q", "--max-attempts", "1",
                                        "--rate", "1000"),
                            env=cli_env(emulator.base_url), capture_output=True, timeout=120,
                            check=False)
    assert result.returncode == 3, result.stderr.decode()
    return out


def test_open_refuses_a_run_with_failed_batches_unless_partial(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    out = _failed_run(make_emulator(faults={"http_503": 1.0}), tmp_path)
    run = bulkgene.open(out)
    assert run.summary["complete"] is False
    assert run.summary["failed"] == len(IDS)
    for read in (run.to_frame, run.to_arrow, lambda: list(run.records()), run.missing):
        with pytest.raises(bulkgene.IncompleteRun, match=r"2 batches \(2000 IDs\) failed"
                                                         r".*partial=True"):
            read()
    assert len(bulkgene.open(out, partial=True).to_frame()) == 0


def test_a_killed_run_is_accounted_from_its_checkpoint_and_read_only_as_partial(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.2)
    ids = list(range(1, 20_001))
    out = tmp_path / "genes"
    process = subprocess.Popen(
        cli_command("fetch", str(write_ids(tmp_path / "ids.txt", ids)), "--out", str(out),
                    "-q", "--rate", "20", "--batch-size", "100", "--concurrency", "2"),
        env=cli_env(emulator.base_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_commits(out, 3)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert not (out / "summary.json").exists()  # killed: no end account written
    summary = bulkgene.open(out).summary
    assert summary["requested"] == len(ids)
    assert summary["found"] + summary["missing"] >= 300
    assert summary["pending"] == len(ids) - summary["found"] - summary["missing"]
    assert summary["complete"] is False and "pending" in summary["incomplete"][0]
    assert summary["requests_all_runs"] >= 3
    with pytest.raises(bulkgene.IncompleteRun, match="interrupted"):
        bulkgene.open(out).to_frame()
    partial = bulkgene.open(out, partial=True).to_frame(fields=["gene-id"])
    assert len(partial) == summary["records"]


def test_a_refused_fetch_leaves_the_runs_id_list_alone(emulator: EmulatorThread,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "genes"
    bulkgene.fetch(IDS[:300], out, base_url=emulator.base_url, rate=1000, progress=False)
    listed = (out / "requested-ids.txt").read_bytes()
    assert listed == "".join(f"{i}\n" for i in IDS[:300]).encode()
    with pytest.raises(bulkgene.FingerprintMismatch, match=r"the GeneIDs given are not the "
                       r"list this directory was fetched with .*requested-ids.txt.*restart=True"):
        bulkgene.fetch(IDS[:400], out, base_url=emulator.base_url, rate=1000, progress=False)
    assert (out / "requested-ids.txt").read_bytes() == listed
    lock = RunLock(out)
    lock.acquire()  # another run holds the directory
    try:
        with pytest.raises(bulkgene.StateError, match="is already writing to"):
            bulkgene.fetch(IDS[:500], out, base_url=emulator.base_url, rate=1000,
                           progress=False, restart=True)
    finally:
        lock.release()
    assert (out / "requested-ids.txt").read_bytes() == listed
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    # the same list again resumes (nothing to fetch); restart=True takes the new one in
    bulkgene.fetch(IDS[:300], out, base_url=emulator.base_url, rate=1000, progress=False)
    records = bulkgene.fetch(IDS[:500], out, base_url=emulator.base_url, rate=1000,
                             progress=False, restart=True)
    assert (out / "requested-ids.txt").read_bytes() == "".join(
        f"{i}\n" for i in IDS[:500]).encode()
    assert len(records) == len(expected_for(emulator.state.universe, IDS[:500]).genes)


async def test_two_fetches_into_one_directory_in_one_process_meet_the_lock(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.3)
    out = tmp_path / "genes"
    both = await asyncio.gather(*(bulkgene.fetch_async(
        IDS, out, base_url=emulator.base_url, rate=1000, progress=False, batch_size=100,
        concurrency=1) for _ in range(2)), return_exceptions=True)
    refused = [result for result in both if isinstance(result, BaseException)]
    assert len(refused) == 1, refused
    assert isinstance(refused[0], bulkgene.StateError)
    assert "is already writing to" in str(refused[0])
    fetched = next(result for result in both if isinstance(result, list))
    assert len(fetched) == len(expected_for(emulator.state.universe, IDS).genes)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_argument_mistakes_are_named_before_anything_is_sent(emulator: EmulatorThread,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "genes"
    url = emulator.base_url
    mistakes: list[tuple[dict[str, Any], type[Exception], str]] = [
        (dict(rate="5"), TypeError, r"rate must be a number of requests per second.*'5'"),
        (dict(batch_size=2.5), TypeError, "batch_size must be an int"),
        (dict(as_frame="yes"), TypeError, r"as_frame must be True or False.*'yes'"),
        (dict(progress="yes"), TypeError, "progress must be True, False or a callable"),
        (dict(as_frame=True, fields=[]), bulkgene.ConfigError, "no field given"),
        (dict(as_frame=True, fields=["gene_idd"]), bulkgene.ConfigError,
         r"unknown field 'gene_idd' \(did you mean gene-id"),
    ]
    for options, kind, said in mistakes:
        with pytest.raises(kind, match=said):
            bulkgene.fetch([7157], out, base_url=url, **{"progress": False, **options})
    with pytest.raises(TypeError, match=r"out must be a directory path.*int 123"):
        bulkgene.fetch([7157], 123, base_url=url, progress=False)  # type: ignore[arg-type]
    for ids in (["TP53", "BRCA1"], "TP53"):
        with pytest.raises(bulkgene.InputError, match=r"'TP53' is not a GeneID.*7157 is human "
                                                      r"TP53.*querymany"):
            bulkgene.fetch(ids, out, base_url=url, progress=False)
    assert served(emulator.state.arrivals()) == []
    assert not out.exists()
    # a comma list of GeneIDs in one str is read as mygene reads it
    records = bulkgene.fetch("7157, 672", out, base_url=url, rate=1000, progress=False)
    assert [r["gene"]["symbol"] for r in records] == ["TP53", "BRCA1"]


def test_as_frame_without_pandas_says_so_before_the_download(emulator: EmulatorThread,
                                                             tmp_path: Path) -> None:
    blocked = f"""
import sys
class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("No module named " + repr(name))
sys.meta_path.insert(0, NoPandas())
import bulkgene
try:
    bulkgene.fetch([7157, 672], {str(tmp_path / 'genes')!r}, as_frame=True, progress=False,
                   base_url={emulator.base_url!r}, rate=1000)
except bulkgene.MissingExtra as exc:
    print(exc)
"""
    shown = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                           timeout=120, check=True, env={**os.environ, "NCBI_API_KEY": ""})
    assert "bulkgene.fetch(as_frame=True) needs pandas" in shown.stdout
    assert "pip install 'bulkgene[pandas]'" in shown.stdout
    assert served(emulator.state.arrivals()) == []


def test_library_errors_speak_the_librarys_words() -> None:
    from bulkgene.errors import library_words

    assert library_words("batch size 5000 (--batch-size) is out of range") == (
        "batch size 5000 (batch_size=) is out of range")
    assert library_words("Check the host name in --base-url or BULKGENE_BASE_URL") == (
        "Check the host name in base_url= or BULKGENE_BASE_URL")
    assert library_words("pass --restart to move it aside, or use another --out") == (
        "pass restart=True to move it aside, or use another out=")
    assert library_words("--rate 1000, --returned-content IDS_ONLY, --explode 'go'") == (
        "rate=1000, returned_content='IDS_ONLY', explode='go'")
    # flags the library has no keyword for, and words that only look like flags, stay
    assert library_words("bulkgene explain --follow-replaced; a--out; --restarted") == (
        "bulkgene explain --follow-replaced; a--out; --restarted")
    with pytest.raises(bulkgene.ConfigError, match=r"\(batch_size=\) is out of range") as raised:
        bulkgene.fetch([7157], batch_size=5000, progress=False)
    assert "--" not in str(raised.value)


def test_fetch_reads_the_clis_environment_where_its_keywords_are_silent(
        emulator: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's set-up exports NCBI_API_KEY (and tests BULKGENE_BASE_URL): a notebook
    started from that shell gets the same server and the same key as the CLI."""
    monkeypatch.setenv("BULKGENE_BASE_URL", emulator.base_url)
    monkeypatch.setenv("NCBI_API_KEY", "0123456789abcdef0123456789abcdef0123")
    records = bulkgene.fetch([7157, 672], tmp_path / "genes", rate=1000, progress=False)
    assert [r["gene"]["symbol"] for r in records] == ["TP53", "BRCA1"]
    arrivals = served(emulator.state.arrivals())
    assert arrivals and all(arrival.has_key for arrival in arrivals)
    # a keyword given wins over the environment
    monkeypatch.setenv("BULKGENE_BASE_URL", "http://127.0.0.1:9/datasets/v2")
    records = bulkgene.fetch([7157], tmp_path / "other", base_url=emulator.base_url,
                             rate=1000, progress=False)
    assert records[0]["gene"]["symbol"] == "TP53"
