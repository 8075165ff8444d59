"""A --restart that will be refused moves nothing: every check that can refuse it comes first."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import EmulatorFactory, cli_command, cli_env, invoke_cli, write_ids


def _tree(root: Path) -> list[tuple[str, int]]:
    """Every path beside and below ``root`` (a moved-aside run shows), with file sizes."""
    return sorted((str(p.relative_to(root.parent)), p.stat().st_size if p.is_file() else -1)
                  for p in root.parent.rglob("*"))


def test_restarting_an_array_as_another_task_count_moves_nothing(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    env = cli_env(make_emulator().base_url)
    source = write_ids(tmp_path / "ids.txt", range(1, 61))
    out = tmp_path / "A33"
    for index in range(3):
        assert invoke_cli("fetch", str(source), "--out", str(out), "--task-index", str(index),
                          "--task-count", "3", "--batch-size", "5", env=env).returncode == 0
    before = _tree(out)
    result = invoke_cli("fetch", str(source), "--out", str(out), "--task-index", "0",
                        "--task-count", "2", "--batch-size", "5", "--restart", env=env)
    assert result.returncode == 1, result.stderr.decode()
    assert b"split into 3 tasks" in result.stderr and b"nothing was moved" in result.stderr
    assert f"mv {out} {out}.old".encode() in result.stderr
    assert _tree(out) == before and not list(tmp_path.glob("A33.restarted-*"))
    assert invoke_cli("verify", str(out)).returncode == 0


def test_restarting_with_an_input_inside_the_run_moves_nothing(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    env = cli_env(make_emulator().base_url)
    out = tmp_path / "MR"
    assert invoke_cli("fetch", str(write_ids(tmp_path / "ids.txt", range(1, 301))), "--out",
                      str(out), env=env).returncode == 0
    before = _tree(out)
    result = invoke_cli("fetch", str(out / "missing.tsv"), "--out", str(out), "--restart",
                        env=env)
    assert result.returncode == 1, result.stderr.decode()
    assert b"moves aside" in result.stderr and b"cp " in result.stderr
    assert _tree(out) == before and not list(tmp_path.glob("MR.restarted-*"))


def test_restarting_with_an_input_that_is_not_there_moves_nothing(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    env = cli_env(make_emulator().base_url)
    out = tmp_path / "R"
    assert invoke_cli("fetch", str(write_ids(tmp_path / "ids.txt", range(1, 31))), "--out",
                      str(out), env=env).returncode == 0
    before = _tree(out)
    result = invoke_cli("fetch", str(tmp_path / "typo.txt"), "--out", str(out), "--restart",
                        env=env)
    assert result.returncode == 1 and b"typo.txt" in result.stderr
    assert _tree(out) == before and not list(tmp_path.glob("R.restarted-*"))


def test_restarting_beside_files_of_ones_own_moves_nothing(make_emulator: EmulatorFactory,
                                                           tmp_path: Path) -> None:
    env = cli_env(make_emulator().base_url)
    source = write_ids(tmp_path / "ids.txt", range(1, 31))
    out = tmp_path / "R"
    assert invoke_cli("fetch", str(source), "--out", str(out), env=env).returncode == 0
    (out / "notes.txt").write_text("mine\n")
    before = _tree(out)
    result = invoke_cli("fetch", str(source), "--out", str(out), "--restart", env=env)
    assert result.returncode == 1 and b"notes.txt" in result.stderr
    assert _tree(out) == before and not list(tmp_path.glob("R.restarted-*"))
    allowed = invoke_cli("fetch", str(source), "--out", str(out), "--restart",
                         "--allow-other-files", env=env)
    assert allowed.returncode == 0 and (out / "notes.txt").read_text() == "mine\n"


def test_restarting_in_the_current_directory_never_calls_its_own_lock_stale(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """`fetch ids.txt --out . --restart --allow-other-files` took over "the stale lock of
    pid N (that process is gone)", N being itself."""
    env = cli_env(make_emulator().base_url)
    write_ids(tmp_path / "ids.txt", range(1, 31))
    for extra in ((), ("--restart",)):
        result = subprocess.run(cli_command("fetch", "ids.txt", "--out", ".", "--rate", "1000",
                                            "--allow-other-files", *extra),
                                cwd=tmp_path, env=env, capture_output=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr.decode()
        assert b"stale lock" not in result.stderr
    assert (tmp_path / "ids.txt").exists()
