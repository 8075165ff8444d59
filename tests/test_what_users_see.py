"""What a user sees is true: the progress bar, -v, demo's labels and cleanup, --restart of '.'."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import aiohttp
import pytest
from helpers import EmulatorFactory, cli_env, invoke_cli, write_ids

from bulkgene.cli.progress import ProgressReporter, Terminal, bar
from bulkgene.model import Snapshot
from bulkgene.net.attempt import open_session


def _snapshot(done: int, retries: int = 0) -> Snapshot:
    return Snapshot(batches_done=done // 10, batches_failed=0, batches_total=100,
                    ids_done=done, ids_total=1000, found=done, requests=done // 10,
                    retries=retries, throttled=0, elapsed_s=10.0, ids_per_s=done / 10)


def test_the_bar_fits_an_80_column_terminal_and_shows_retries() -> None:
    for columns in (40, 80, 200):
        line = bar(_snapshot(500, retries=12), columns)
        assert len(line) < columns, "a full line makes terminals wrap at every redraw"
    assert "12 retried" in bar(_snapshot(500, retries=12), 200)
    assert "retried" not in bar(_snapshot(500), 200)


async def test_a_finished_run_ends_on_a_full_bar(make_emulator: EmulatorFactory,
                                                 tmp_path: Path) -> None:
    from helpers import make_config

    import bulkgene

    emulator = make_emulator()
    stream = io.StringIO()
    reporter = ProgressReporter(Terminal(stream, live=True), 30.0)
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    await bulkgene.download(make_config([str(source)], tmp_path / "out",
                                        base_url=emulator.base_url, requests_per_second=500.0,
                                        batch_size=10, progress_interval_s=reporter.tick_s),
                            on_progress=reporter.update)
    reporter.close()
    assert "100.0% 100/100 IDs" in stream.getvalue().rsplit("\r", 1)[-1]


def test_verbose_logs_each_retry_with_its_reason(make_emulator: EmulatorFactory,
                                                 tmp_path: Path) -> None:
    emulator = make_emulator(faults={"http_503": 0.5}, seed=2)
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    args = ["fetch", str(source), "--out", str(tmp_path / "out"), "--batch-size", "10",
            "--rate", "500", "--retry-wait", "0.01", "--no-progress"]
    quiet = invoke_cli(*args, env=cli_env(emulator.base_url))
    verbose = invoke_cli(*args, "--restart", "-v", env=cli_env(emulator.base_url))
    assert quiet.returncode == verbose.returncode == 0
    assert b"retrying in" not in quiet.stderr
    assert b"retrying in" in verbose.stderr and b"HTTP 503" in verbose.stderr


@pytest.mark.slow
def test_the_demo_says_its_data_are_synthetic_and_leaves_nothing_behind() -> None:
    before = {p.name for p in Path(tempfile.gettempdir()).glob("bulkgene-demo-*")}
    shown = invoke_cli("demo")
    assert shown.returncode == 0, shown.stderr.decode()
    assert b"synthetic" in shown.stdout
    after = {p.name for p in Path(tempfile.gettempdir()).glob("bulkgene-demo-*")}
    assert after == before, "the demo's temporary directory is removed"


def test_restart_of_the_current_directory_is_refused_clearly(make_emulator: EmulatorFactory,
                                                             tmp_path: Path) -> None:
    emulator = make_emulator()
    source = write_ids(tmp_path / "ids.txt", range(1, 21))
    out = tmp_path / "out"
    assert invoke_cli("fetch", str(source), "--out", str(out), "--rate", "500",
                      env=cli_env(emulator.base_url)).returncode == 0
    cwd = Path.cwd()
    os.chdir(out)
    try:
        again = invoke_cli("fetch", str(source), "--out", ".", "--restart", "--rate", "500",
                           env=cli_env(emulator.base_url))
    finally:
        os.chdir(cwd)
    assert again.returncode == 1
    assert b"current directory" in again.stderr and b"Traceback" not in again.stderr
    assert (out / "checkpoint.json").exists(), "nothing was moved or lost"


async def test_aiohttp_never_resends_behind_the_pacers_back() -> None:
    # a request written into a dead kept-alive connection is resent by bulkgene through the
    # pacer; aiohttp's own silent resend must be off, and aiohttp must still honour the switch
    session = open_session(2, 3.0, "test")
    try:
        assert session._retry_connection is False
    finally:
        await session.close()
    import inspect

    assert "_retry_connection" in inspect.getsource(aiohttp.ClientSession._request)


def test_a_key_with_a_line_break_is_a_usage_error_not_a_crash(tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157])
    env = {**cli_env("http://127.0.0.1:9/datasets/v2"), "NCBI_API_KEY": "SECRET\nKEY"}
    shown = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), env=env)
    assert shown.returncode == 2 and b"line breaks" in shown.stderr
    assert b"SECRET" not in shown.stderr and b"Traceback" not in shown.stderr


def _users_directory(out: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    (out / "sub").mkdir()
    (out / "sub" / "data.csv").write_text("a,b\n")


def _users_files_intact(out: Path) -> None:
    assert (out / "notes.txt").read_text() == "my notes\n"
    assert (out / "sub" / "data.csv").read_text() == "a,b\n"


@pytest.mark.parametrize("restart", [False, True])
def test_a_directory_of_other_files_is_refused_neither_used_nor_moved(
        make_emulator: EmulatorFactory, tmp_path: Path, restart: bool) -> None:
    """--restart moved a user's notes.txt and sub/ aside without saying where; without it the
    directory was filled silently."""
    emulator = make_emulator()
    source = write_ids(tmp_path / "ids.txt", range(1, 21))
    out = tmp_path / "out"
    _users_directory(out)
    refused = invoke_cli("fetch", str(source), "--out", str(out), "--rate", "500",
                         *(["--restart"] if restart else []), env=cli_env(emulator.base_url))
    assert refused.returncode == 1, refused.stderr.decode()
    assert b"notes.txt" in refused.stderr and b"--allow-other-files" in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]
    assert not list(tmp_path.glob("out.restarted-*"))
    _users_files_intact(out)
    allowed = invoke_cli("fetch", str(source), "--out", str(out), "--rate", "500",
                         "--allow-other-files", env=cli_env(emulator.base_url))
    assert allowed.returncode == 0, allowed.stderr.decode()
    _users_files_intact(out)
    assert (out / "checkpoint.json").exists()


def test_restart_says_where_it_moved_the_old_run(make_emulator: EmulatorFactory,
                                                 tmp_path: Path) -> None:
    emulator = make_emulator()
    source = write_ids(tmp_path / "ids.txt", range(1, 21))
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    assert invoke_cli("fetch", str(source), "--out", str(out), "--rate", "500",
                      env=env).returncode == 0
    again = invoke_cli("fetch", str(source), "--out", str(out), "--rate", "500", "--restart",
                       env=env)
    assert again.returncode == 0, again.stderr.decode()
    (moved,) = tmp_path.glob("out.restarted-*")
    assert f"moved the old run in {out} aside to {moved}".encode() in again.stderr


def test_restart_among_other_files_moves_only_the_old_run(make_emulator: EmulatorFactory,
                                                          tmp_path: Path) -> None:
    emulator = make_emulator()
    source = write_ids(tmp_path / "ids.txt", range(1, 21))
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    _users_directory(out)
    assert invoke_cli("fetch", str(source), "--out", str(out), "--rate", "500",
                      "--allow-other-files", env=env).returncode == 0
    again = invoke_cli("fetch", str(source), "--out", str(out), "--rate", "500", "--restart",
                       "--allow-other-files", env=env)
    assert again.returncode == 0, again.stderr.decode()
    _users_files_intact(out)
    (moved,) = tmp_path.glob("out.restarted-*")
    assert (moved / "checkpoint.json").exists() and not (moved / "notes.txt").exists()
    assert f"aside to {moved}".encode() in again.stderr
