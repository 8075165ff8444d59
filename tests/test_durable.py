"""The output directory is not trusted: no link is followed, no path from a state file leaves it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import cli_env, invoke_cli, rewrite_checkpoint, run_cli, small_filesystem, write_ids

from bulkgene import durable
from bulkgene.errors import StateError
from bulkgene.testing import EmulatorThread

PRECIOUS = b"precious data that is not bulkgene's\n"


def _fetch(emulator: EmulatorThread, source: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "50", *extra,
                     env=cli_env(emulator.base_url), stdin=b"7157\n672\n")
    return result.returncode, result.stderr.decode()


@pytest.mark.parametrize("name", [
    "shard-0000.ndjson", "missing.tsv", "replaced.tsv", "checkpoint.json.tmp", "plan.ids.tmp",
    "plan.bitmap.tmp", "plan.json.tmp", "rejects.tsv.tmp", "summary.json.tmp",
])
def test_a_symlink_in_the_output_directory_is_refused_not_followed(
        emulator: EmulatorThread, tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    code, stderr = _fetch(emulator, source, out)
    assert victim.read_bytes() == PRECIOUS
    assert code == 1, stderr
    assert f"{out / name} is a symbolic link" in stderr
    assert "Traceback" not in stderr


def test_a_symlinked_stdin_spool_is_refused(emulator: EmulatorThread, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stdin.spool.new").symlink_to(victim)
    code, stderr = _fetch(emulator, Path("-"), out)
    assert victim.read_bytes() == PRECIOUS
    assert code == 1 and "stdin.spool.new is a symbolic link" in stderr, stderr


def test_a_symlinked_shard_of_a_resumed_run_is_refused(emulator: EmulatorThread,
                                                       tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    out = tmp_path / "out"
    code, stderr = _fetch(emulator, source, out)
    assert code == 0, stderr
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS * 1000)  # longer than any committed length
    shard = out / "shard-0000.ndjson"
    shard.unlink()
    shard.symlink_to(victim)
    code, stderr = _fetch(emulator, source, out)
    assert victim.read_bytes() == PRECIOUS * 1000
    assert code == 1 and f"{shard} is a symbolic link" in stderr, stderr


@pytest.mark.parametrize("name", ["../victim.txt", "/{victim}", "sub/victim.txt", ".", "..",
                                  "a\0b", ""])
def test_a_checkpoint_naming_a_file_outside_the_directory_is_not_obeyed(
        emulator: EmulatorThread, tmp_path: Path, name: str) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    out = tmp_path / "out"
    code, stderr = _fetch(emulator, source, out)
    assert code == 0, stderr
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    (out / "sub").mkdir()
    (out / "sub" / "victim.txt").write_bytes(PRECIOUS)
    rewrite_checkpoint(out, lambda state: state["file_lengths"].__setitem__(
        name.format(victim=str(victim).lstrip("/")), 0))
    code, stderr = _fetch(emulator, source, out)
    assert victim.read_bytes() == PRECIOUS
    assert (out / "sub" / "victim.txt").read_bytes() == PRECIOUS
    assert code == 1, stderr
    assert "not a shard or report" in stderr and "--restart" in stderr, stderr


def test_a_negative_committed_length_is_refused(emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    out = tmp_path / "out"
    assert _fetch(emulator, source, out)[0] == 0
    rewrite_checkpoint(out, lambda state: state["file_lengths"].__setitem__("missing.tsv", -1))
    code, stderr = _fetch(emulator, source, out)
    assert code == 1 and "not a byte count" in stderr, stderr


def test_a_fifo_under_a_managed_name_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "missing.tsv")
    with pytest.raises(StateError, match="not a regular file"):
        durable.open_append(tmp_path / "missing.tsv")
    with pytest.raises(StateError, match="not a regular file"):
        durable.cut_to(tmp_path / "missing.tsv", 0)


def test_atomic_writes_replace_a_leftover_temp_file_and_a_linked_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    target = tmp_path / "summary.json"
    target.symlink_to(victim)  # the rename replaces the link itself
    (tmp_path / "summary.json.tmp").write_bytes(b"a killed run's half write")
    durable.write_atomically(target, b"{}")
    assert target.read_bytes() == b"{}" and not target.is_symlink()
    assert victim.read_bytes() == PRECIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "victim.txt"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), durable.atomic_file(target) as handle:
        handle.write(b"new, half")
        raise RuntimeError("disk gone")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]


def test_appending_continues_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "shard-0000.ndjson"
    path.write_bytes(b"12345\n")
    with durable.open_append(path) as handle:
        assert handle.tell() == 6
        handle.write(b"6\n")
    assert path.read_bytes() == b"12345\n6\n"


def test_a_plan_garbled_to_the_same_size_is_a_clear_error(emulator: EmulatorThread,
                                                          tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    out = tmp_path / "out"
    assert _fetch(emulator, source, out)[0] == 0
    plan_ids = out / "plan.ids"
    data = bytearray(plan_ids.read_bytes())
    data[0:4], data[4:8] = data[4:8], data[0:4]  # the same IDs, another order: same size
    plan_ids.write_bytes(bytes(data))
    code, stderr = _fetch(emulator, source, out)
    assert code == 1 and "checksum" in stderr and "plan.ids" in stderr, stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["checkpoint.json", "plan.json", "missing.tsv",
                                  "shard-0000.ndjson", "summary.json", "bulkgene.lock"])
def test_a_fifo_planted_in_a_finished_directory_is_an_error_for_every_command_not_a_hang(
        emulator: EmulatorThread, tmp_path: Path, name: str) -> None:
    """Reads of checkpoint.json, plan.json, reports and the lock blocked on a FIFO forever
    (fetch then even ignored SIGTERM); every read of the directory is now regular-file-only."""
    out = tmp_path / "out"
    fetch = ("fetch", str(write_ids(tmp_path / "ids.txt", range(1, 41))), "--out", str(out),
             "--rate", "1000")
    assert invoke_cli(*fetch, env=cli_env(emulator.base_url)).returncode == 0
    (out / name).unlink(missing_ok=True)
    os.mkfifo(out / name)
    for command in (("verify", str(out)), ("status", str(out)), fetch):
        result = invoke_cli(*command, env=cli_env(emulator.base_url))
        if command[0] == "status" and name in ("missing.tsv", "shard-0000.ndjson"):
            continue  # status doesn't read these
        if command[0] == "fetch" and name == "summary.json":
            assert result.returncode == 0  # never read, only replaced (rename over it)
            continue
        assert result.returncode != 0, (command, name)
        assert b"Traceback" not in result.stderr


def test_a_disk_full_before_the_first_commit_ends_cleanly(emulator: EmulatorThread,
                                                         tmp_path: Path) -> None:
    """3 of 3 tries on a 2 MB filesystem: the right message, then a traceback from closing
    the shards, "internal error", the lock left behind and no summary.json."""
    with small_filesystem(tmp_path / "small", "2m") as disk:
        out = disk / "out"
        source = write_ids(tmp_path / "ids.txt", range(1, 3001))
        result = run_cli("fetch", str(source), "--out", str(out), "--rate", "1000",
                         env=cli_env(emulator.base_url))
        assert result.returncode == 1, result.stderr.decode()
        assert b"No space left on device" in result.stderr and b"free some" in result.stderr
        assert b"Traceback" not in result.stderr and b"internal error" not in result.stderr
        assert not (out / "bulkgene.lock").exists()
        summary = json.loads((out / "summary.json").read_bytes())
        assert summary["found"] == 0 and "No space left on device" in summary["error"]
        shards = sorted(out.glob("shard-*"))
        assert all(shard.stat().st_size == 0 for shard in shards)  # no uncommitted tail left
