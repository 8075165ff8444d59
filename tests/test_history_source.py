"""history/source.py against the emulator's gene_history: cached, revalidated, resumed, refused."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import EmulatorFactory, cli_env, write_ids

from bulkgene.errors import HistoryError
from bulkgene.history.cache import CacheEntry
from bulkgene.history.source import HistorySource, LocalHistory, obtain
from bulkgene.testing import EmulatorConfig, EmulatorThread
from bulkgene.testing.history import history_gz


def fetch_history(url: str, cache: Path, **settings: float) -> LocalHistory:
    source = HistorySource(url, cache_dir=cache, backoff_base_s=0.01, **settings)  # type: ignore[arg-type]
    return asyncio.run(obtain(source))


def test_downloaded_once_then_reused_for_a_day(make_emulator: EmulatorFactory,
                                               tmp_path: Path) -> None:
    emulator = make_emulator()
    first = fetch_history(emulator.history_url, tmp_path)
    second = fetch_history(emulator.history_url, tmp_path)
    assert (first.how, second.how) == ("downloaded", "cached")
    assert first.name == emulator.history_url
    assert first.path.read_bytes() == history_gz(emulator.state.universe, 1_000_000)
    assert len(emulator.state.history_requests()) == 1  # the second asked nothing


def test_after_a_day_a_304_keeps_the_copy_and_a_new_file_replaces_it(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator()
    fetch_history(emulator.history_url, tmp_path)
    again = fetch_history(emulator.history_url, tmp_path, max_age_s=0)
    assert again.how == "not-modified"
    revalidation = emulator.state.history_requests()[-1]
    assert revalidation.status == 304 and revalidation.body_bytes == 0
    assert revalidation.if_none_match and revalidation.if_modified_since
    emulator.state.history_generation = 1  # the next day's file
    newer = fetch_history(emulator.history_url, tmp_path, max_age_s=0)
    assert newer.how == "downloaded"
    assert b"# generation 1" in gzip.decompress(newer.path.read_bytes())


def test_a_cut_download_resumes_where_it_stopped(make_emulator: EmulatorFactory,
                                                 tmp_path: Path) -> None:
    emulator = make_emulator(history_fault="cut", history_fault_answers=1)
    local = fetch_history(emulator.history_url, tmp_path)
    cut, resumed = emulator.state.history_requests()
    assert (cut.status, cut.fault) == (200, "cut")
    assert (resumed.status, resumed.range) == (206, f"bytes={cut.body_bytes}-")
    assert resumed.if_range  # resumed only if the file is still the same
    assert local.how == "resumed"
    assert local.path.read_bytes() == history_gz(emulator.state.universe, 1_000_000)


def test_a_server_without_ranges_starts_over(make_emulator: EmulatorFactory,
                                             tmp_path: Path) -> None:
    emulator = make_emulator(history_fault="cut", history_fault_answers=1, history_ranges=False)
    local = fetch_history(emulator.history_url, tmp_path)
    _cut, whole = emulator.state.history_requests()
    assert whole.range is not None and whole.status == 200  # asked to resume; got it all
    assert local.how == "downloaded"
    assert local.path.read_bytes() == history_gz(emulator.state.universe, 1_000_000)


def test_a_file_changed_since_the_cut_starts_over(make_emulator: EmulatorFactory,
                                                  tmp_path: Path) -> None:
    emulator = make_emulator(history_fault="cut", history_fault_answers=1)
    source = HistorySource(emulator.history_url, cache_dir=tmp_path, attempts=1)
    with pytest.raises(HistoryError, match=r"failed 1 times.*what arrived so far is kept"):
        asyncio.run(obtain(source))
    emulator.state.history_generation = 1
    local = fetch_history(emulator.history_url, tmp_path)
    assert emulator.state.history_requests()[-1].status == 200  # If-Range did not match
    assert b"# generation 1" in gzip.decompress(local.path.read_bytes())


@pytest.mark.parametrize(("fault", "said"), [
    ("truncated_file", "is not a complete gzip file"),
    ("not_gzip", "did not send a gzip file"),
])
def test_a_bad_body_is_an_error_naming_the_url_and_nothing_is_kept(
        make_emulator: EmulatorFactory, tmp_path: Path, fault: str, said: str) -> None:
    emulator = make_emulator(history_fault=fault)
    with pytest.raises(HistoryError) as raised:
        fetch_history(emulator.history_url, tmp_path)
    assert said in str(raised.value) and emulator.history_url in str(raised.value)
    entry = CacheEntry(tmp_path, emulator.history_url)
    assert entry.copy() is None and not entry.file.exists() and not entry.part.exists()


def test_a_body_over_the_cap_is_refused(make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator()
    with pytest.raises(HistoryError, match="more than the 1000 bytes"):
        fetch_history(emulator.history_url, tmp_path, max_bytes=1000)


def test_a_missing_file_is_an_error_naming_the_url(make_emulator: EmulatorFactory,
                                                   tmp_path: Path) -> None:
    emulator = make_emulator()
    url = emulator.root_url + "/gene/DATA/no_such_file.gz"
    with pytest.raises(HistoryError, match=f"{url} answered HTTP 404"):
        fetch_history(url, tmp_path)


def test_an_unreachable_server_falls_back_to_the_cached_copy(tmp_path: Path) -> None:
    with EmulatorThread(EmulatorConfig(rate_limit=False)) as emulator:
        url = emulator.history_url
        fetch_history(url, tmp_path)
    local = fetch_history(url, tmp_path, max_age_s=0, attempts=2)  # the server is gone
    assert local.how == "stale" and local.path.exists()


def test_a_local_file_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "gene_history"
    path.write_text("#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\tDiscontinue_Date\n")
    local = asyncio.run(obtain(HistorySource(str(path))))
    assert (local.path, local.how) == (path, "local")
    with pytest.raises(HistoryError, match="is not a file"):
        asyncio.run(obtain(HistorySource(str(tmp_path / "absent"))))


@pytest.mark.slow
def test_a_killed_download_resumes_in_the_next_run(make_emulator: EmulatorFactory,
                                                   tmp_path: Path) -> None:
    # a slow body (16 KiB every 50 ms), killed once part of it is on disk, whatever the speed
    emulator = make_emulator(history_chunk_bytes=16 << 10, history_chunk_delay_s=0.05)
    ids = write_ids(tmp_path / "ids.txt", range(1, 200))
    out = tmp_path / "genes"
    env = cli_env(emulator.base_url, BULKGENE_HISTORY=emulator.history_url,
                  BULKGENE_CACHE_DIR=str(tmp_path / "cache"))
    subprocess.run([sys.executable, "-m", "bulkgene", "fetch", str(ids), "--out", str(out),
                    "--rate", "1000", "-q"], env=env, check=True, timeout=120)
    part = CacheEntry(tmp_path / "cache", emulator.history_url).part
    explaining = subprocess.Popen([sys.executable, "-m", "bulkgene", "explain", str(out)],
                                  env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= 64 << 10):
        assert explaining.poll() is None and time.monotonic() < deadline, "no progress"
        time.sleep(0.02)
    os.kill(explaining.pid, signal.SIGKILL)
    explaining.wait()
    kept = part.stat().st_size
    done = subprocess.run([sys.executable, "-m", "bulkgene", "explain", str(out)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "downloaded (resumed)" in done.stderr
    assert emulator.state.history_requests()[-1].range == f"bytes={kept}-"
    assert (out / "missing.tsv").read_text().startswith(
        "gene_id\treason\thistory\tcurrent_gene_id\tdiscontinued_on\tsymbol\ttax_id\n")


def test_a_download_that_got_nothing_does_not_say_it_kept_something(tmp_path: Path) -> None:
    """Against a host that refused every connection it said "what arrived so far is kept"."""
    source = HistorySource("http://127.0.0.1:9/gene/DATA/gene_history.gz", cache_dir=tmp_path,
                           attempts=1)
    with pytest.raises(HistoryError, match="failed 1 times") as raised:
        asyncio.run(obtain(source))
    assert "kept" not in str(raised.value) and "BULKGENE_HISTORY" in str(raised.value)
