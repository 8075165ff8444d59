"""Arguments at their edges are usage errors with a message, never a traceback or a silent oddity."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import cli_command, cli_env, invoke_cli, run_cli, small_filesystem, write_ids

from bulkgene.testing import EmulatorThread

BAD_URLS = ["http://[::1", "http://127.0.0.1:99999/datasets/v2",
            "http://" + "a" * 300 + "/datasets/v2", "http://" + "b" * 70 + ".org/datasets/v2"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_base_url_that_is_no_url_is_a_usage_error_for_fetch(tmp_path: Path, url: str) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157])
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--base-url", url)
    assert result.returncode == 2, result.stderr.decode()
    assert b"--base-url" in result.stderr or b"base URL" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_base_url_that_is_no_url_is_a_usage_error_for_doctor(url: str) -> None:
    result = invoke_cli("doctor", "--base-url", url)
    assert result.returncode == 2, result.stderr.decode()
    assert b"base URL" in result.stderr and b"internal error" not in result.stderr


@pytest.mark.parametrize("option", ["--outage-after", "--retry-wait", "--progress-interval",
                                    "--connect-timeout", "--read-timeout", "--attempt-timeout",
                                    "--rate"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_not_a_number_is_refused(tmp_path: Path, option: str, value: str) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157])
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), option, value,
                        "--dry-run")
    assert result.returncode == 2, result.stderr.decode()
    assert option.encode() in result.stderr


@pytest.mark.parametrize("out", ["", "/", "//"])
def test_an_empty_or_root_out_is_refused(tmp_path: Path, out: str) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157])
    before = sorted(os.listdir("/"))
    result = invoke_cli("fetch", str(source), "--out", out, "--dry-run")  # wrote there before
    assert result.returncode == 2, result.stderr.decode()
    assert b"--out" in result.stderr
    assert sorted(os.listdir("/")) == before


@pytest.mark.parametrize("count", ["100000000000000000000000", "4000002", "1" * 5000])
def test_an_absurd_slurm_task_count_is_a_usage_error(tmp_path: Path, count: str) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157])
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": count,
           "SLURM_ARRAY_TASK_MIN": "0"}
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--split", "slurm",
                        env=env)
    assert result.returncode == 2, result.stderr.decode()
    assert b"SLURM_ARRAY_TASK_COUNT" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_status_to_a_full_disk_says_so_without_a_traceback(emulator: EmulatorThread,
                                                           tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157])
    out = tmp_path / "out"
    assert invoke_cli("fetch", str(source), "--out", str(out),
                      env=cli_env(emulator.base_url)).returncode == 0
    for args in (["status", "--json", str(out)], ["status", str(out)], ["verify", str(out)]):
        with open("/dev/full", "wb") as full:
            result = subprocess.run(cli_command(*args), stdout=full, stderr=subprocess.PIPE,
                                    timeout=60, check=False)
        assert result.returncode == 1, (args, result.stderr.decode())
        assert b"Traceback" not in result.stderr and b"Exception ignored" not in result.stderr
        assert b"No space left on device" in result.stderr and b"standard output" in result.stderr


@pytest.mark.parametrize("args", [["fetch", "--help"], ["emulate", "--help"], ["--help"],
                                  ["--version"], ["export", "--list-fields"]])
def test_help_to_a_full_disk_says_so_without_a_traceback(args: list[str]) -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run(cli_command(*args), stdout=full, stderr=subprocess.PIPE,
                                timeout=60, check=False)
    assert result.returncode == 1, result.stderr.decode()
    assert b"Traceback" not in result.stderr and b"Exception ignored" not in result.stderr
    assert b"No space left on device" in result.stderr and b"standard output" in result.stderr


def test_demo_into_a_directory_of_ones_own_files_is_refused_cleanly(tmp_path: Path) -> None:
    (tmp_path / "dm").mkdir()
    (tmp_path / "dm" / "notes.txt").write_text("mine\n")
    result = invoke_cli("demo", "--out", str(tmp_path / "dm"))
    assert result.returncode == 2 and b"notes.txt" in result.stderr
    assert b"new or empty directory" in result.stderr and b"--allow-other-files" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "dm").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("where", ["proc", "full"])
def test_demo_where_it_cannot_write_is_a_clean_error(tmp_path: Path, where: str) -> None:
    if where == "proc":
        result = run_cli("demo", "--out", "/proc/bulkgene-demo")
    else:
        with small_filesystem(tmp_path / "small", "200k") as mount:
            result = run_cli("demo", "--out", str(mount / "demo"))
    assert result.returncode == 1, result.stderr.decode()
    assert b"Traceback" not in result.stderr and b"bulkgene: error:" in result.stderr


@pytest.mark.parametrize("command", ["fetch", "status"])
def test_an_empty_budget_dir_is_refused(emulator: EmulatorThread, tmp_path: Path,
                                        command: str) -> None:
    """--budget-dir '' made ./127.0.0.1/anonymous wherever the run was started."""
    write_ids(tmp_path / "ids.txt", [7157])
    args = (["fetch", "ids.txt", "--out", "out"] if command == "fetch" else ["status", "."])
    result = subprocess.run(cli_command(*args, "--budget-dir", ""), cwd=tmp_path,
                            env=cli_env(emulator.base_url), capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 2, result.stderr.decode()
    assert b"--budget-dir" in result.stderr and b"is empty" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt"]


def test_a_slurm_step_of_zero_is_refused(tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [7157])
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4",
           "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "0"}
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--split", "slurm",
                        "--dry-run", env=env)
    assert result.returncode == 2, result.stderr.decode()
    assert b"SLURM_ARRAY_TASK_STEP=0" in result.stderr
