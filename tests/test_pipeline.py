"""download() end to end against the emulator on 127.0.0.1: every gene once, exact accounting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import (
    SAMPLES,
    EmulatorFactory,
    assert_complete_output,
    expected_for,
    gene_ids_written,
    make_config,
    read_records,
    read_summary,
    read_tsv,
    served,
    write_ids,
)

import bulkgene
from bulkgene import DownloadConfig, RetryPolicy, Secret
from bulkgene.testing import EmulatorThread, GeneUniverse
from bulkgene.testing.universe import real_reports
from bulkgene.testing.windows import max_in_window

FAST_RETRY = RetryPolicy(max_attempts=6, backoff_base_s=0.01, backoff_cap_s=0.05)


def config_for(emulator: EmulatorThread, inputs: list[Path], out_dir: Path, **overrides: object
               ) -> DownloadConfig:
    settings: dict[str, object] = {"requests_per_second": 1000.0, "retry": FAST_RETRY,
                                   "progress_interval_s": 0}
    settings.update(overrides)
    return make_config(list(map(str, inputs)), out_dir, base_url=emulator.base_url, **settings)


async def test_multi_page_batches_yield_every_gene_once(emulator: EmulatorThread,
                                                        tmp_path: Path) -> None:
    ids = list(range(1, 601))
    source = write_ids(tmp_path / "ids.txt", ids)
    summary = await bulkgene.download(config_for(emulator, [source], tmp_path / "out",
                                                 batch_size=100, page_size=7))
    expected = expected_for(emulator.state.universe, ids)
    assert_complete_output(tmp_path / "out", expected)
    assert summary.complete and summary.exit_code == 0 and summary.reconciles()
    page_requests = [a for a in served(emulator.state.arrivals()) if a.page_token]
    # every page after a batch's first was followed by token: one per 7 genes found, less one
    followed = sum(math.ceil(sum(1 for i in ids[k:k + 100] if i in expected.found) / 7) - 1
                   for k in range(0, len(ids), 100))
    assert len(page_requests) == followed > 60, "small pages must have been followed by token"
    assert all(a.query.startswith("page_size=7") for a in served(emulator.state.arrivals()))


async def test_unknown_discontinued_and_replaced_ids_are_accounted(make_emulator: EmulatorFactory,
                                                                   tmp_path: Path) -> None:
    universe = GeneUniverse(unknown=frozenset({11}), discontinued=frozenset({12}),
                            replaced={13: 1_500_000_013})
    # reasons come from page messages, the emulator's old guess (NCBI was recorded silent)
    emulator = make_emulator(universe, unknown_id_messages=True)
    source = write_ids(tmp_path / "ids.txt", [7157, 11, 12, 13, 672])
    summary = await bulkgene.download(config_for(emulator, [source], tmp_path / "out"))
    out = tmp_path / "out"
    assert {int(r[0]): r[1] for r in read_tsv(out / "missing.tsv")} == {
        11: "UNRECOGNIZED_GENE_ID", 12: "DISCONTINUED_GENE_ID"}
    assert read_tsv(out / "replaced.tsv") == [["13", "1500000013"]]
    assert set(gene_ids_written(out)) == {7157, 672, 1_500_000_013}
    assert (summary.requested, summary.found, summary.missing, summary.replaced) == (5, 3, 2, 1)


async def test_merged_ids_and_their_new_gene_are_written_once(make_emulator: EmulatorFactory,
                                                              tmp_path: Path) -> None:
    # 21 and 22 were merged into 23, which is also asked for directly, in another batch
    universe = GeneUniverse(replaced={21: 23, 22: 23, 31: 1_700_000_000, 32: 1_700_000_000})
    emulator = make_emulator(universe)
    source = write_ids(tmp_path / "ids.txt", [21, 22, 5, 6, 31, 7, 8, 32, 9, 23])
    summary = await bulkgene.download(config_for(emulator, [source], tmp_path / "out",
                                                 batch_size=3))
    written = gene_ids_written(tmp_path / "out")
    assert written[23] == 1 and written[1_700_000_000] == 1
    assert max(written.values()) == 1
    assert sorted(map(tuple, read_tsv(tmp_path / "out" / "replaced.tsv"))) == [
        ("21", "23"), ("22", "23"), ("31", "1700000000"), ("32", "1700000000")]
    assert summary.found == 10 and summary.records == len(written)


async def test_real_records_are_written_verbatim(emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [672, 3105, 7157])
    await bulkgene.download(config_for(emulator, [source], tmp_path / "out"))
    by_id = {int(r["gene"]["gene_id"]): r for r in read_records(tmp_path / "out")}
    for gene_id, gene in real_reports().items():
        assert by_id[gene_id] == {"gene": gene, "query": [str(gene_id)]}


async def test_sample_inputs_reconcile_with_duplicates_and_rejects(emulator: EmulatorThread,
                                                                   tmp_path: Path) -> None:
    inputs = [SAMPLES / "human_genes.txt", SAMPLES / "messy_ids.txt",
              SAMPLES / "ecoli_k12_genes.txt"]
    summary = await bulkgene.download(config_for(emulator, inputs, tmp_path / "out"))
    data = read_summary(tmp_path / "out")
    assert data["requested"] == data["found"] + data["missing"] + data["failed"] + data["pending"]
    assert data["rejected"] == 9 and summary.rejected == 9
    assert data["duplicates"] == 8  # messy's own two plus six IDs already in human_genes
    rejects = read_tsv(tmp_path / "out" / "rejects.tsv")
    assert [r[1] for r in rejects] == ["9", "11", "12", "13", "14", "15", "16", "19", "20"]
    assert all(r[0].endswith("messy_ids.txt") for r in rejects)


@pytest.mark.slow
async def test_no_one_second_window_exceeds_the_rate(emulator: EmulatorThread,
                                                     tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 361))
    await bulkgene.download(config_for(emulator, [source], tmp_path / "out", batch_size=10,
                                       requests_per_second=12.0, concurrency=8))
    times = [a.t for a in served(emulator.state.arrivals())]
    assert len(times) == 36
    assert max_in_window(times) <= 12
    assert times[-1] - times[0] >= (36 - 1) / 12 - 0.05  # paced, not bursted


async def test_api_key_goes_in_the_header_only(make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(valid_keys=frozenset({"sentinel-key-123"}))
    source = write_ids(tmp_path / "ids.txt", [7157])
    await bulkgene.download(config_for(emulator, [source], tmp_path / "out",
                                       api_key=Secret("sentinel-key-123")))
    arrivals = served(emulator.state.arrivals())
    assert arrivals and all(a.has_key and a.status == 200 for a in arrivals)
    assert all("sentinel" not in a.query for a in arrivals)


async def test_config_rejects_out_of_range_settings(tmp_path: Path) -> None:
    with pytest.raises(bulkgene.ConfigError, match="batch size 1001"):
        make_config(["x"], tmp_path, batch_size=1001)
    with pytest.raises(bulkgene.ConfigError, match="rate"):
        make_config(["x"], tmp_path, requests_per_second=0)


async def test_a_byte_budget_smaller_than_one_batch_still_fetches_every_gene_once(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    # each batch is bigger than the whole budget: they go through one at a time, never stuck
    ids = list(range(1, 601))
    source = write_ids(tmp_path / "ids.txt", ids)
    summary = await bulkgene.download(
        config_for(emulator, [source], tmp_path / "out", batch_size=40, page_size=15,
                   concurrency=8, memory_budget_bytes=1))
    assert_complete_output(tmp_path / "out", expected_for(emulator.state.universe, ids))
    assert summary.complete and summary.exit_code == 0 and summary.reconciles()
    assert summary.batches_committed == 15
