"""bulkgene against NCBI as recorded (docs/ncbi-api.md): 404s, retired endpoints, kept-alive links."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import (
    EmulatorFactory,
    assert_complete_output,
    expected_for,
    make_config,
    read_tsv,
    served,
    write_ids,
)

import bulkgene
from bulkgene.config import RetryPolicy, Timeouts
from bulkgene.errors import FatalHTTPError
from bulkgene.testing.state import FAULTS

FAST = RetryPolicy(max_attempts=12, backoff_base_s=0.01, backoff_cap_s=0.05,
                   retry_after_cap_s=0.3)


def _config(base_url: str, source: Path, out: Path, **settings: object) -> bulkgene.DownloadConfig:
    options: dict[str, object] = {"requests_per_second": 1000.0, "retry": FAST,
                                  "progress_interval_s": 0, "batch_size": 100}
    options.update(settings)
    return make_config([str(source)], out, base_url=base_url, **options)


async def test_a_bad_geneid_failing_its_whole_request_is_isolated_not_fatal(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    bad = frozenset({123, 456, 789})
    emulator = make_emulator(invalid_ids=bad)
    ids = range(1, 1001)
    source = write_ids(tmp_path / "ids.txt", ids)
    summary = await bulkgene.download(_config(emulator.base_url, source, tmp_path / "out",
                                              batch_size=1000))
    assert summary.exit_code == 0
    out = tmp_path / "out"
    missing = {int(row[0]): row[1] for row in read_tsv(out / "missing.tsv")}
    assert {g for g, reason in missing.items() if reason == "REJECTED_BY_SERVER"} == set(bad)
    expected = expected_for(emulator.state.universe, [i for i in ids if i not in bad])
    assert set(missing) - bad == set(expected.missing)
    arrivals = served(emulator.state.arrivals())
    # O(k log n): 3 bad IDs in 1000, each isolated in ~log2(1000) halvings (x3 tries each)
    refused = [a for a in arrivals if a.status == 404]
    assert len(arrivals) < 200 and len(refused) < 150


async def test_transient_apache_404s_are_retried(make_emulator: EmulatorFactory,
                                                 tmp_path: Path) -> None:
    emulator = make_emulator(faults={"apache_404": 0.2}, seed=4)
    ids = range(1, 601)
    source = write_ids(tmp_path / "ids.txt", ids)
    summary = await bulkgene.download(_config(emulator.base_url, source, tmp_path / "out"))
    assert summary.exit_code == 0
    assert_complete_output(tmp_path / "out", expected_for(emulator.state.universe, ids))
    assert any(a.fault == "apache_404" for a in served(emulator.state.arrivals()))


async def test_a_404_everywhere_means_a_wrong_url_and_stops_the_run(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator()
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    wrong = emulator.root_url + "/datasets/v9"
    with pytest.raises(FatalHTTPError, match="--base-url"):
        await bulkgene.download(_config(wrong, source, tmp_path / "out"))


@pytest.mark.parametrize("status", [404, 410])
async def test_a_retired_endpoint_is_replaced_by_a_current_one(
        make_emulator: EmulatorFactory, tmp_path: Path, status: int,
        caplog: pytest.LogCaptureFixture) -> None:
    emulator = make_emulator(retired_endpoints=frozenset({"gene_reports_by_id"}),
                             retired_status=status)
    ids = range(1, 301)
    source = write_ids(tmp_path / "ids.txt", ids)
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        summary = await bulkgene.download(_config(emulator.base_url, source, tmp_path / "out"))
    assert summary.exit_code == 0
    assert_complete_output(tmp_path / "out", expected_for(emulator.state.universe, ids))
    assert caplog.text.count("switching to gene-id-report") == 1
    assert any(a.path.endswith("/dataset_report") and a.status == 200
               for a in served(emulator.state.arrivals()))


async def test_a_run_resumes_on_another_endpoint(make_emulator: EmulatorFactory,
                                                 tmp_path: Path) -> None:
    emulator = make_emulator()
    ids = range(1, 301)
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    await bulkgene.download(_config(emulator.base_url, source, out, batch_size=100))
    before = len(served(emulator.state.arrivals()))
    summary = await bulkgene.download(_config(emulator.base_url, source, out, batch_size=100,
                                              endpoint="dataset-report"))
    assert summary.exit_code == 0 and len(served(emulator.state.arrivals())) == before


@pytest.mark.slow
async def test_kept_alive_connections_are_never_written_after_the_server_closed_them(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    # the server closes idle links after 0.3 s and every link after 3 answers; the client
    # paced at 2/s idles 0.5 s between requests: each must go out on a live connection
    emulator = make_emulator(keepalive_timeout_s=0.3, keepalive_max_requests=3)
    ids = range(1, 41)
    source = write_ids(tmp_path / "ids.txt", ids)
    summary = await bulkgene.download(_config(
        emulator.base_url, source, tmp_path / "out", batch_size=4, requests_per_second=2.0,
        concurrency=1, timeouts=Timeouts(keepalive_s=0.2)))
    assert summary.exit_code == 0
    assert summary.retries == 0, "no request failed on a dead kept-alive connection"
    assert summary.requests == len(served(emulator.state.arrivals())) == 10


@pytest.mark.slow
async def test_a_fault_mix_with_404s_at_the_recorded_defaults_ends_exact(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    faults = dict.fromkeys((f for f in FAULTS if f not in ("blocked", "stall")), 0.03)
    bad = frozenset({1500, 2500})
    emulator = make_emulator(faults=faults, invalid_ids=bad, seed=11, rate_limit=True,
                             keyed_requests_per_second=400.0,
                             anonymous_requests_per_second=400.0)
    ids = range(1, 3001)
    source = write_ids(tmp_path / "ids.txt", ids)
    summary = await bulkgene.download(_config(
        emulator.base_url, source, tmp_path / "out", page_size=50, requests_per_second=200.0,
        timeouts=Timeouts(read_stall_s=0.5, attempt_s=5)))
    assert summary.exit_code == 0
    out = tmp_path / "out"
    expected = expected_for(emulator.state.universe, [i for i in ids if i not in bad])
    missing = {int(row[0]): row[1] for row in read_tsv(out / "missing.tsv")}
    assert {g for g in missing if missing[g] == "REJECTED_BY_SERVER"} == set(bad)
    assert set(missing) - bad == set(expected.missing)
