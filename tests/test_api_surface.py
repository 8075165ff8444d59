"""The API's parameters, both endpoints, --record gene and --compress gzip, through the real CLI."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest
from helpers import (
    EmulatorFactory,
    assert_complete_output,
    cli_env,
    expected_for,
    invoke_cli,
    make_config,
    read_tsv,
    served,
    write_ids,
)

from bulkgene.testing import EmulatorThread

EVERY_PARAMETER = ["--returned-content", "COUNTS_ONLY", "--locus-tag", "b0001",
                   "--locus-tag", "b0002", "--sort-field", "gene_id",
                   "--sort-direction", "SORT_DIRECTION_ASCENDING", "--tax-search-subtree",
                   "--page-size", "1000"]


def test_every_parameter_is_encoded_exactly_as_the_api_expects(emulator: EmulatorThread,
                                                               tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157, 672])
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), *EVERY_PARAMETER,
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    (arrival,) = served(emulator.state.arrivals())
    assert arrival.method == "GET" and arrival.path == "/datasets/v2/gene/id/7157,672"
    assert arrival.query == ("returned_content=COUNTS_ONLY&locus_tags=b0001&locus_tags=b0002"
                             "&page_size=1000&tax_search_subtree=true&sort.field=gene_id"
                             "&sort.direction=SORT_DIRECTION_ASCENDING")


def test_dataset_report_posts_the_same_request_as_a_json_body(emulator: EmulatorThread,
                                                              tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157, 672])
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), *EVERY_PARAMETER,
                        "--endpoint", "dataset-report", env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    (arrival,) = served(emulator.state.arrivals())
    assert arrival.method == "POST" and arrival.path == "/datasets/v2/gene/dataset_report"
    assert json.loads(arrival.query) == {
        "returned_content": "COUNTS_ONLY", "locus_tags": ["b0001", "b0002"], "page_size": 1000,
        "tax_search_subtree": True,
        "sort": [{"field": "gene_id", "direction": "SORT_DIRECTION_ASCENDING"}]}
    assert arrival.n_ids == 2 and arrival.first_id == 7157


def test_dataset_report_pages_and_accounts_like_the_get(emulator: EmulatorThread,
                                                        tmp_path: Path) -> None:
    ids = range(1, 601)
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--endpoint", "dataset-report",
                        "--page-size", "37", "--batch-size", "200", "--rate", "1000",
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    assert_complete_output(out, expected_for(emulator.state.universe, ids))
    assert all(a.method == "POST" for a in served(emulator.state.arrivals()))


def test_record_gene_writes_ncbi_gene_descriptors(emulator: EmulatorThread,
                                                  tmp_path: Path) -> None:
    models = pytest.importorskip("ncbi.datasets.openapi.models")
    source = write_ids(tmp_path / "ids.txt", [7157, 672, 3105, 5, 6, 7])
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--record", "gene",
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    lines = [json.loads(line) for shard in sorted(out.glob("shard-*.ndjson"))
             for line in shard.read_text().splitlines()]
    assert {line["gene_id"] for line in lines} >= {"7157", "672", "3105"}
    for line in lines:
        assert "query" not in line
        parsed = models.V2reportsGeneDescriptor.from_dict(line).to_dict()
        assert all(parsed[key] == value for key, value in line.items())
    assert invoke_cli("verify", str(out)).returncode == 0


def test_gzip_shards_are_one_member_per_batch_and_zcat_clean(emulator: EmulatorThread,
                                                             tmp_path: Path) -> None:
    ids = range(1, 401)
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    args = ["fetch", str(source), "--out", str(out), "--compress", "gzip", "--batch-size", "50",
            "--shards", "2", "--rate", "1000"]
    assert invoke_cli(*args, env=cli_env(emulator.base_url)).returncode == 0
    shards = sorted(out.glob("shard-*.ndjson.gz"))
    assert len(shards) == 2 and not list(out.glob("shard-*.ndjson"))
    for shard in shards:
        assert shard.read_bytes().count(b"\x1f\x8b\x08") >= 4  # 4 batches, 4 members
        text = subprocess.run(["zcat", str(shard)], capture_output=True, check=True).stdout
        assert text.endswith(b"\n") and all(json.loads(line) for line in text.splitlines())
    with open(shards[0], "ab") as handle:  # a torn member after the committed end
        handle.write(gzip.compress(b'{"gene": {"gene_id": "1"}}\n')[:20])
    assert invoke_cli(*args, env=cli_env(emulator.base_url)).returncode == 0
    assert invoke_cli("verify", str(out)).returncode == 0
    assert_complete_output(out, expected_for(emulator.state.universe, ids))
    assert read_tsv(out / "missing.tsv")


def test_sort_direction_without_a_field_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke_cli("fetch", "x.txt", "--out", str(tmp_path / "o"),
                        "--sort-direction", "SORT_DIRECTION_DESCENDING")
    assert result.returncode == 2 and b"--sort-field" in result.stderr


@pytest.mark.parametrize("fault", [None, "truncate", "html", "http_503", "reset"])
async def test_ndjson_format_fetches_whole_batches_and_accounts_exactly(
        make_emulator: EmulatorFactory, tmp_path: Path, fault: str | None) -> None:
    import bulkgene
    from bulkgene import RetryPolicy

    emulator: EmulatorThread = make_emulator(
        faults={fault: 0.3} if fault else {}, seed=9)
    ids = range(1, 501)
    source = write_ids(tmp_path / "ids.txt", ids)
    config = make_config([str(source)], tmp_path / "out",
                            base_url=emulator.base_url, format="ndjson", batch_size=100,
                            page_size=10, requests_per_second=1000.0, progress_interval_s=0,
                            retry=RetryPolicy(max_attempts=12, backoff_base_s=0.01,
                                              backoff_cap_s=0.02))
    summary = await bulkgene.download(config)
    assert summary.complete
    assert_complete_output(tmp_path / "out", expected_for(emulator.state.universe, ids))
    arrivals = served(emulator.state.arrivals())
    assert all(a.accept == "application/x-ndjson" and not a.page_token for a in arrivals)
    assert sum(1 for a in arrivals if a.status == 200 and a.fault is None) == 5, "no paging"
    if fault:
        assert any(a.fault == fault for a in arrivals)


def _tsv_rows(out: Path) -> tuple[list[bytes], list[list[bytes]]]:
    """(the header of every shard, every data row) of a TSV output."""
    headers: list[bytes] = []
    rows: list[list[bytes]] = []
    for shard in sorted([*out.glob("shard-*.tsv"), *out.glob("shard-*.tsv.gz")]):
        data = gzip.decompress(shard.read_bytes()) if shard.suffix == ".gz" else shard.read_bytes()
        lines = data.split(b"\n")
        assert lines[-1] == b"", "every row ends in a newline"
        headers.append(lines[0])
        rows.extend(line.split(b"\t") for line in lines[1:-1])
    return headers, rows


@pytest.mark.parametrize("mode", ["INCLUDE_TABULAR_HEADER_ALWAYS",
                                  "INCLUDE_TABULAR_HEADER_FIRST_PAGE_ONLY"])
def test_tsv_has_its_header_once_at_the_top_of_every_shard(emulator: EmulatorThread,
                                                           tmp_path: Path, mode: str) -> None:
    ids = range(1, 301)
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--format", "tsv",
                        "--table-field", "gene-id", "--table-field", "symbol",
                        "--table-field", "tax-name", "--include-tabular-header", mode,
                        "--page-size", "7", "--batch-size", "50", "--shards", "2", "--rate", "1000",
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    headers, rows = _tsv_rows(out)
    assert headers == [b"NCBI GeneID\tSymbol\tTaxonomic Name"] * 2
    assert all(len(row) == 3 and row[0] != b"NCBI GeneID" for row in rows)
    expected = expected_for(emulator.state.universe, ids)
    assert {int(row[0]) for row in rows} == expected.genes
    missing = {int(row[0]) for row in read_tsv(out / "missing.tsv")}
    # a TSV row can't say which query it answers; JSON IDS_ONLY tells the replaced IDs' genes
    assert missing == set(expected.missing)
    replaced = {int(row[0]): int(row[1]) for row in read_tsv(out / "replaced.tsv")}
    assert replaced == expected.replaced
    summary = json.loads((out / "summary.json").read_text())
    assert summary["found"] == len(expected.found) and summary["complete"]
    arrival = served(emulator.state.arrivals())[0]
    assert arrival.accept == "text/tab-separated-values"
    assert arrival.query == (f"table_fields=gene-id&table_fields=symbol&table_fields=tax-name"
                             f"&include_tabular_header={mode}&page_size=7")
    assert invoke_cli("verify", str(out)).returncode == 0


@pytest.mark.parametrize("fields", [(), ("--table-field", "symbol")])
def test_tsv_without_a_gene_id_column_is_refused_before_anything_is_sent(
        emulator: EmulatorThread, tmp_path: Path, fields: tuple[str, ...]) -> None:
    """Without the column no row says which GeneID it answers: the run could only end in a
    'done' that nobody can check (it did, with found 0, missing 0, and verify ok)."""
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--format", "tsv", *fields,
                        env=cli_env(emulator.base_url))
    assert result.returncode == 2, result.stderr.decode()
    assert b"--table-field gene-id" in result.stderr
    assert not out.exists() and not served(emulator.state.arrivals())


def test_tsv_only_options_need_the_tsv_format(tmp_path: Path) -> None:
    result = invoke_cli("fetch", "x.txt", "--out", str(tmp_path / "o"), "--table-field", "symbol")
    assert result.returncode == 2
    assert b"--table-field only apply to TSV" in result.stderr and b"--format tsv" in result.stderr


def test_the_query_string_matches_ncbis_generated_client(emulator: EmulatorThread,
                                                         tmp_path: Path) -> None:
    api = pytest.importorskip("ncbi.datasets.openapi")
    source = write_ids(tmp_path / "ids.txt", [7157, 672])
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--format", "tsv",
                        "--returned-content", "COUNTS_ONLY", "--locus-tag", "b0001",
                        "--locus-tag", "b0002", "--table-field", "gene-id", "--table-field", "symbol",
                        "--include-tabular-header", "INCLUDE_TABULAR_HEADER_ALWAYS",
                        "--page-size", "1000", "--accession-filter", "NM_001407959.1",
                        "--tax-search-subtree", "--sort-field", "gene_id",
                        "--sort-direction", "SORT_DIRECTION_ASCENDING",
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    (arrival,) = served(emulator.state.arrivals())
    generated = api.GeneApi(api.ApiClient(api.Configuration(host="http://h")))
    _, url, _, _, _ = generated._gene_reports_by_id_serialize(
        gene_ids=[7157, 672],
        returned_content=api.V2GeneDatasetReportsRequestContentType("COUNTS_ONLY"),
        locus_tags=["b0001", "b0002"], table_fields=["gene-id", "symbol"],
        include_tabular_header=api.V2IncludeTabularHeader("INCLUDE_TABULAR_HEADER_ALWAYS"),
        page_size=1000, page_token=None, accession_filter=["NM_001407959.1"],
        tax_search_subtree=True, sort_field="gene_id",
        sort_direction=api.V2SortDirection("SORT_DIRECTION_ASCENDING"), _request_auth=None,
        _content_type=None, _headers=None, _host_index=0)
    path, _, query = url.partition("?")
    assert arrival.query == query
    assert path.endswith("/gene/id/7157%2C672") and arrival.path.endswith("/gene/id/7157,672")


async def test_a_long_get_url_is_split_before_it_is_sent(emulator: EmulatorThread,
                                                        tmp_path: Path) -> None:
    import bulkgene

    ids = range(100_000_000, 100_001_000)  # 1000 nine-digit IDs: a ~10 KB path
    source = write_ids(tmp_path / "ids.txt", ids)
    summary = await bulkgene.download(make_config(
        [str(source)], tmp_path / "out", base_url=emulator.base_url,
        requests_per_second=1000.0, progress_interval_s=0))
    assert summary.complete
    arrivals = served(emulator.state.arrivals())
    assert all(a.status == 200 for a in arrivals), "no 414: nothing over the limit was sent"
    assert len(arrivals) == 2 and all(len(a.path) < 7800 for a in arrivals)
    assert_complete_output(tmp_path / "out", expected_for(emulator.state.universe, ids))


def test_tsv_batches_split_to_isolate_ids_the_server_refuses(make_emulator: EmulatorFactory,
                                                             tmp_path: Path) -> None:
    emulator: EmulatorThread = make_emulator(poison_ids=frozenset({37}))
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--format", "tsv",
                        "--table-field", "gene-id", "--rate", "1000", env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    _, rows = _tsv_rows(out)
    assert 37 not in {int(row[0]) for row in rows} and 36 in {int(row[0]) for row in rows}
    assert 37 in {int(row[0]) for row in read_tsv(out / "missing.tsv")}
