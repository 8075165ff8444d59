"""Hosts that never answer, for real: a name that does not resolve and a black hole (accepts,
never answers) stop a run with one clean message; doctor says "connected, no answer".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import orjson
import pytest
from helpers import cli_env, invoke_cli, make_config, run_cli, write_ids

import bulkgene
from bulkgene.config import RetryPolicy, Timeouts
from bulkgene.errors import FatalHTTPError
from bulkgene.testing.blackhole import BlackHoleThread

UNRESOLVABLE = "http://no-such-host.invalid/datasets/v2"  # .invalid never resolves (RFC 6761)
_PROXIES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")


def _env(base_url: str) -> dict[str, str]:
    env = cli_env(base_url)
    for name in (*_PROXIES, *(p.lower() for p in _PROXIES)):
        env.pop(name, None)
    return env


@pytest.mark.slow
def test_a_name_that_does_not_resolve_stops_the_run_with_one_message(tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 5001))
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--no-progress",
                        env=_env(UNRESOLVABLE))
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.count("could not be resolved") == 1, stderr
    assert "stopping:" not in stderr and "Traceback" not in stderr
    assert "error: cannot reach no-such-host.invalid" in stderr


@pytest.mark.slow
async def test_a_black_hole_is_named_and_stops_the_run(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 5001))
    with BlackHoleThread() as hole, caplog.at_level(logging.WARNING, "bulkgene"):
        config = make_config([str(source)], tmp_path / "out", base_url=hole.base_url,
                             requests_per_second=100.0, progress_interval_s=0,
                             retry=RetryPolicy(unreachable_s=0.5),
                             timeouts=Timeouts(read_stall_s=1.0))
        with pytest.raises(FatalHTTPError, match=r"connected to 127\.0\.0\.1:\d+, but no answer "
                                                 r"came back in [\d.]+ s: a proxy or firewall"):
            await bulkgene.download(config)
    assert any("and no answer in 0.5 s" in r.getMessage() for r in caplog.records), \
        "it says what is happening before the timeout ends the wait"


@pytest.mark.slow
def test_doctor_says_connected_no_answer_to_a_black_hole() -> None:
    with BlackHoleThread() as hole:
        result = invoke_cli("doctor", "--json", "--timeout", "1", env=_env(hole.base_url))
    assert result.returncode == 1
    report = orjson.loads(result.stdout)
    connection = next(c for c in report["checks"] if c["check"] == "connection")
    assert connection["status"] == "fail"
    assert "connected to 127.0.0.1" in connection["detail"]
    assert "no answer in 1 s" in connection["detail"]
    assert "proxy or firewall" in connection["advice"]
    assert report["requests"] == 1, "one silent request is enough to tell"


@pytest.mark.slow  # the read timeout's 20 s, for real, through the CLI
@pytest.mark.timeout(180)
def test_a_black_hole_through_the_cli_warns_once_then_exits_1(tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 50_001))
    with BlackHoleThread() as hole:
        result = run_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--no-progress",
                         "--read-timeout", "20", env=_env(hole.base_url), timeout=150)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.count("and no answer in 15 s") == 1, stderr
    assert stderr.count("error: connected to 127.0.0.1") == 1
    assert "Traceback" not in stderr


async def test_a_download_cancelled_before_any_answer_warns_of_no_silent_proxy_later(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`wait_for(download(cfg), 0.5)` against a slow server: its silence watch fired after
    the run was gone and warned of a proxy that passes nothing (in every cancel loop)."""
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    with BlackHoleThread() as hole, caplog.at_level(logging.WARNING, "bulkgene"):
        config = make_config([str(source)], tmp_path / "out", base_url=hole.base_url,
                             requests_per_second=100.0, progress_interval_s=0,
                             retry=RetryPolicy(unreachable_s=1.0),
                             timeouts=Timeouts(read_stall_s=30.0))
        task = asyncio.create_task(bulkgene.download(config))
        # a request is on the wire: the black hole's thread counts it, no event to wait on
        while not hole.bytes_received:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        quiet = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(1.5, quiet.set_result, None)  # past the watch
        await quiet
    assert not [r for r in caplog.records if "no answer in" in r.getMessage()]
