"""bulkgene.fetch / fetch_async / open: the Python API for notebooks and pipelines."""

from __future__ import annotations

import asyncio
import doctest
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import EmulatorFactory, expected_for, gene_ids_written, served, write_ids

import bulkgene
from bulkgene import facade
from bulkgene.model import Snapshot
from bulkgene.testing import EmulatorThread, GeneUniverse

IDS = [*range(1, 1501), 7157, 672]


def _symbols(records: list[dict[str, Any]]) -> dict[int, Any]:
    genes = [record["gene"] for record in records]
    return {int(gene["gene_id"]): gene.get("symbol") for gene in genes}


def test_fetch_returns_the_records_of_a_list_in_memory(emulator: EmulatorThread,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "genes"
    records = bulkgene.fetch(IDS, str(out), base_url=emulator.base_url, rate=1000,
                             progress=False)
    expected = expected_for(emulator.state.universe, IDS)
    assert set(_symbols(records)) == expected.genes
    assert gene_ids_written(out) == dict.fromkeys(expected.genes, 1)
    assert (out / "summary.json").exists()  # the CLI's own run: resumable, verifiable
    # asked again: the directory is resumed (nothing left to fetch), nothing is sent
    before = len(served(emulator.state.arrivals()))
    again = bulkgene.fetch([str(i) for i in IDS], out, base_url=emulator.base_url, rate=1000,
                           progress=False)
    assert len(again) == len(records)
    assert len(served(emulator.state.arrivals())) == before


def test_fetch_as_frame_is_one_row_per_id_in_the_order_given(emulator: EmulatorThread,
                                                             tmp_path: Path) -> None:
    """mygene's querymany(as_dataframe=True) shape: one row per GeneID given, in that order,
    indexed by it; the missing ones too, with their reason; types kept."""
    given = [*reversed(IDS[:1200]), 7157, 672, 3105, 3558, 11200]
    frame = bulkgene.fetch(given, tmp_path / "genes", as_frame=True, base_url=emulator.base_url,
                           rate=1000, progress=False, batch_size=250,
                           fields=["gene-id", "symbol", "synonyms"])
    assert isinstance(frame, pd.DataFrame)
    assert frame.index.name == "query"
    assert list(frame.index) == list(dict.fromkeys(given))
    assert list(frame.columns) == ["gene-id", "symbol", "synonyms", "missing_reason"]
    assert str(frame["gene-id"].dtype) == "int64[pyarrow]"
    expected = expected_for(emulator.state.universe, given)
    assert frame.loc[7157, "symbol"] == "TP53"
    assert set(frame.index[frame["missing_reason"].notna()]) == set(expected.missing)
    assert all(frame.loc[old, "gene-id"] == new for old, new in expected.replaced.items())
    found = bulkgene.fetch(given, tmp_path / "genes", as_frame=True, with_missing=False,
                           fields="symbol", base_url=emulator.base_url, progress=False,
                           batch_size=250)
    assert list(found.index) == [i for i in dict.fromkeys(given) if i not in expected.missing]
    assert list(found.columns) == ["symbol"]


def test_fetch_reads_id_files_given_as_str(emulator: EmulatorThread, tmp_path: Path) -> None:
    ids_file = write_ids(tmp_path / "ids.txt", IDS[:300])
    records = bulkgene.fetch(str(ids_file), str(tmp_path / "genes"), base_url=emulator.base_url,
                             rate=1000, progress=False)
    assert set(_symbols(records)) == expected_for(emulator.state.universe, IDS[:300]).genes


def test_download_config_takes_a_str_input_and_out_dir(emulator: EmulatorThread,
                                                       tmp_path: Path) -> None:
    ids_file = write_ids(tmp_path / "ids.txt", IDS[:100])
    config = bulkgene.DownloadConfig(
        inputs=str(ids_file), out_dir=str(tmp_path / "genes"),  # type: ignore[arg-type]
        network=bulkgene.NetworkSpec(base_url=emulator.base_url, requests_per_second=1000))
    assert config.inputs == (str(ids_file),)
    assert config.out_dir == tmp_path / "genes"
    summary = asyncio.run(bulkgene.download(config))
    assert summary.exit_code == 0 and summary.requested == 100


def test_unknown_keywords_and_wrong_ids_are_named() -> None:
    with pytest.raises(TypeError, match=r"'retries'.*valid ones: .*api_key.*base_url"):
        bulkgene.fetch([7157], retries=3)
    with pytest.raises(TypeError, match="GeneIDs"):
        bulkgene.fetch(b"7157")
    with pytest.raises(bulkgene.InputError, match=r"'TP53' is not a GeneID.*convert symbols"):
        bulkgene.fetch([7157, "TP53"])


async def test_fetch_works_inside_a_running_event_loop(emulator: EmulatorThread,
                                                       tmp_path: Path) -> None:
    """A notebook cell runs in an event loop: asyncio.run there raises, fetch must not."""
    asyncio.get_running_loop()  # this test body is such a loop
    heard: list[Snapshot] = []
    records = bulkgene.fetch(IDS, tmp_path / "sync", base_url=emulator.base_url, rate=1000,
                             progress=heard.append)
    assert set(_symbols(records)) == expected_for(emulator.state.universe, IDS).genes
    assert heard and heard[-1].ids_done == heard[-1].ids_total == len(set(IDS))
    frame = await bulkgene.fetch_async(IDS[:200], tmp_path / "async", as_frame=True,
                                       base_url=emulator.base_url, rate=1000, progress=False)
    assert list(frame.index) == IDS[:200]


def test_without_out_a_cache_directory_is_used_and_reused(
        emulator: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = bulkgene.fetch(IDS[:400], base_url=emulator.base_url, rate=1000, progress=False)
    sent = len(served(emulator.state.arrivals()))
    second = bulkgene.fetch(IDS[:400], base_url=emulator.base_url, rate=1000, progress=False)
    assert first == second
    assert len(served(emulator.state.arrivals())) == sent
    runs = list((tmp_path / "cache" / "bulkgene" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoint.json").exists()
    bulkgene.fetch(IDS[:401], base_url=emulator.base_url, rate=1000, progress=False)
    assert len(list((tmp_path / "cache" / "bulkgene" / "runs").iterdir())) == 2


def test_a_replaced_gene_maps_back_to_the_ids_asked(make_emulator: EmulatorFactory,
                                                    tmp_path: Path) -> None:
    emulator = make_emulator(GeneUniverse(replaced={11: 1_000_000_001, 12: 1_000_000_001}))
    frame = bulkgene.fetch([12, 7157, 11], tmp_path / "genes", as_frame=True,
                           fields=["query", "gene-id"], base_url=emulator.base_url, rate=1000,
                           progress=False)
    assert list(frame.index) == [12, 7157, 11]  # the merged gene once for each ID asked
    assert list(frame["gene-id"]) == [1_000_000_001, 7157, 1_000_000_001]
    run_frame = bulkgene.open(tmp_path / "genes").to_frame(fields=["query", "gene-id"])
    rows = {int(row["gene-id"]): sorted(row["query"]) for _, row in run_frame.iterrows()}
    assert rows == {1_000_000_001: [11, 12], 7157: [7157]}
    run = bulkgene.open(tmp_path / "genes")
    assert sorted((r["requested_gene_id"], r["returned_gene_id"]) for r in run.replaced()) == [
        (11, 1_000_000_001), (12, 1_000_000_001)]
    assert run.summary["found"] == 3 and run.summary["complete"]


def test_the_docstring_examples_run(emulator: EmulatorThread, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(facade, "facade", globs={"bulkgene": bulkgene,
                                                     "EMULATOR": emulator.base_url}):
        runner.run(test)
    assert runner.summarize().attempted >= 2
    assert runner.summarize().failed == 0


def test_import_bulkgene_loads_no_aiohttp_and_open_no_pyarrow() -> None:
    code = ("import sys, bulkgene; bulkgene.open; bulkgene.fetch; "
            "print('aiohttp' in sys.modules, 'pyarrow' in sys.modules, 'pandas' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=60)
    assert shown.stdout.split() == ["False", "False", "False"]
