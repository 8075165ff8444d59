"""No link is followed inside a run directory: a planted .claims or task-000i is refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from helpers import EmulatorFactory, cli_env, invoke_cli, write_ids

from bulkgene.testing import GeneUniverse


def _merged() -> GeneUniverse:
    """IDs 1 and 2 (one in each task at --batch-size 1) merged into a gene nobody asked for."""
    return GeneUniverse(replaced={1: 1_700_000_000, 2: 1_700_000_000}, unknown_per_mille=0,
                        discontinued_per_mille=0, replaced_per_mille=0)


def _task(source: Path, out: Path, env: dict[str, str], index: int, *extra: str) -> bytes:
    result = invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "1",
                        "--task-index", str(index), "--task-count", "2", "--no-progress",
                        *extra, env=env)
    return b"%d " % result.returncode + result.stderr


def test_a_planted_claims_link_is_refused_and_its_target_left_alone(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    env = cli_env(make_emulator(_merged()).base_url)
    source = write_ids(tmp_path / "ids.txt", [1, 2, 7157, 672])
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / ".claims").symlink_to(elsewhere)
    result = _task(source, out, env, 0)
    assert result.startswith(b"1 ") and b".claims is a symbolic link" in result, result.decode()
    assert b"follows no link" in result and b"Traceback" not in result
    assert list(elsewhere.iterdir()) == []


def test_a_planted_task_directory_link_is_refused(make_emulator: EmulatorFactory,
                                                  tmp_path: Path) -> None:
    env = cli_env(make_emulator(_merged()).base_url)
    source = write_ids(tmp_path / "ids.txt", [1, 2, 7157, 672])
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "task-0001").symlink_to(elsewhere)
    result = _task(source, out, env, 1)
    assert result.startswith(b"1 ") and b"task-0001 is a symbolic link" in result, result.decode()
    assert list(elsewhere.iterdir()) == []


def test_a_finished_task_moved_away_and_linked_back_is_not_resumed_through_the_link(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    env = cli_env(make_emulator(_merged()).base_url)
    source = write_ids(tmp_path / "ids.txt", [1, 2, 7157, 672])
    out, moved = tmp_path / "out", tmp_path / "moved-task-0000"
    for index in (0, 1):
        assert _task(source, out, env, index).startswith(b"0 ")
    assert invoke_cli("verify", str(out)).returncode == 0
    shutil.move(out / "task-0000", moved)
    os.symlink(moved, out / "task-0000")
    before = sorted((p.name, p.stat().st_size) for p in moved.iterdir())
    result = _task(source, out, env, 0)
    assert result.startswith(b"1 ") and b"task-0000 is a symbolic link" in result
    assert b"move that directory back" in result
    assert sorted((p.name, p.stat().st_size) for p in moved.iterdir()) == before
    verdict = invoke_cli("verify", str(out))
    assert verdict.returncode == 1 and b"task-0000 is a symbolic link" in verdict.stderr
