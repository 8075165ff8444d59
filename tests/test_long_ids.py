"""Runs of long GeneIDs, whose batches go out as several GET requests, end cleanly when the
server fails them: more batches than the queues hold, against a host that can't be reached,
a server that answers 503 to the end, and a bad key (real sockets, the emulator).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import EmulatorFactory, cli_env, make_config, run_cli, write_ids

import bulkgene
from bulkgene.config import RetryPolicy
from bulkgene.errors import AuthError, FatalHTTPError

FAST = RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.02,
                   unreachable_s=0.3)
UNREACHABLE = "http://127.0.0.1:9/datasets/v2"  # discard: every connection refused


def long_ids(path: Path, count: int) -> Path:
    """``count`` nine-digit GeneIDs: a 1000-ID batch of them needs two GET requests."""
    return write_ids(path, range(100_000_001, 100_000_001 + count))


def _config(base_url: str, source: Path, out: Path, **settings: object
            ) -> bulkgene.DownloadConfig:
    # 4 workers, so 40 batches are many more than the batch queue holds
    options: dict[str, object] = {"requests_per_second": 1000.0, "concurrency": 4,
                                  "retry": FAST, "progress_interval_s": 0}
    options.update(settings)
    return make_config([str(source)], out, base_url=base_url, **options)


async def test_an_unreachable_host_stops_a_run_of_long_ids(tmp_path: Path) -> None:
    source = long_ids(tmp_path / "ids.txt", 40_000)
    with pytest.raises(FatalHTTPError, match=r"cannot reach 127\.0\.0\.1") as caught:
        await bulkgene.download(_config(UNREACHABLE, source, tmp_path / "out"))
    assert caught.value.summary is not None and caught.value.summary.found == 0


async def test_503_to_the_end_fails_every_batch_of_long_ids(make_emulator: EmulatorFactory,
                                                           tmp_path: Path) -> None:
    emulator = make_emulator()
    emulator.state.outage_status = 503
    source = long_ids(tmp_path / "ids.txt", 40_000)
    summary = await bulkgene.download(_config(emulator.base_url, source, tmp_path / "out"))
    assert summary.exit_code == 3
    assert summary.failed == summary.requested == 40_000 and summary.batches_failed == 40


async def test_a_rejected_key_stops_a_run_of_long_ids(make_emulator: EmulatorFactory,
                                                      tmp_path: Path) -> None:
    emulator = make_emulator(valid_keys=frozenset({"the-right-key-123"}))
    source = long_ids(tmp_path / "ids.txt", 40_000)
    with pytest.raises(AuthError, match="rejected the API key"):
        await bulkgene.download(_config(emulator.base_url, source, tmp_path / "out",
                                        api_key=bulkgene.Secret("a-wrong-key-456")))


@pytest.mark.slow  # 600 000 IDs: the input plan alone takes seconds
@pytest.mark.timeout(300)
def test_600_000_long_ids_against_an_unreachable_host_exit_1_with_one_message(
        tmp_path: Path) -> None:
    source = long_ids(tmp_path / "ids.txt", 600_000)
    result = run_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--no-progress",
                     env=cli_env(UNREACHABLE), timeout=240)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert stderr.count("cannot reach 127.0.0.1") == 1, stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_600_000_long_ids_against_503_to_the_end_exit_3(make_emulator: EmulatorFactory,
                                                        tmp_path: Path) -> None:
    emulator = make_emulator()
    emulator.state.outage_status = 503
    source = long_ids(tmp_path / "ids.txt", 600_000)
    result = run_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--no-progress",
                     "--max-attempts", "1", env=cli_env(emulator.base_url), timeout=240)
    stderr = result.stderr.decode()
    assert result.returncode == 3, stderr[-3000:]
    assert "Traceback" not in stderr and "failed 600000" in stderr
