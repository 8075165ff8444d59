"""export --to a device, a FIFO, /dev/stdout or >(gzip): a stream, never renamed over; run files refused."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

import pytest
from helpers import (
    EmulatorFactory,
    cli_command,
    cli_env,
    invoke_cli,
    small_filesystem,
    write_ids,
)

from bulkgene.testing import EmulatorThread


@pytest.fixture
def run(emulator: EmulatorThread, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    done = invoke_cli("fetch", str(write_ids(tmp_path / "ids.txt", range(1, 201))), "--out",
                      str(out), "-q", env=cli_env(emulator.base_url))
    assert done.returncode == 0, done.stderr.decode()
    return out


def _table(run: Path, tmp_path: Path) -> bytes:
    """The TSV export of ``run`` written to a regular file, for comparing."""
    reference = tmp_path / "reference.tsv"
    assert invoke_cli("export", str(run), "--to", str(reference)).returncode == 0
    return reference.read_bytes()


def _export(*args: str, stdout: BinaryIO | None = None) -> subprocess.CompletedProcess[bytes]:
    if stdout is None:
        return subprocess.run(cli_command("export", *args), capture_output=True, timeout=120,
                              check=False)
    return subprocess.run(cli_command("export", *args), stdout=stdout, stderr=subprocess.PIPE,
                          timeout=120, check=False)


# These tests name devices and /dev/stdout as targets. A bulkgene that wrongly renamed its
# table over them would, as root, replace this machine's own /dev/null or /dev/stdout (an
# older one did): as root they get nodes of their own, and /dev/stdout is tried in a mount
# namespace with a /dev of its own.
_PRIVATE_DEV = ("mount --make-rprivate / && mount -t tmpfs tmpfs /dev && "
                "ln -s /proc/self/fd /dev/fd && ln -s /proc/self/fd/0 /dev/stdin && "
                "ln -s /proc/self/fd/1 /dev/stdout && ln -s /proc/self/fd/2 /dev/stderr && "
                "mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/full c 1 7 && exec \"$@\"")


def _with_own_dev(argv: list[str]) -> list[str]:
    """``argv`` run with a throwaway /dev when root (a mount namespace of its own)."""
    if os.geteuid() != 0:
        return argv  # another user can't replace /dev's entries
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("needs a mount namespace (unshare --mount) to try /dev/stdout as root")
    return ["unshare", "--mount", "sh", "-c", _PRIVATE_DEV, "sh", *argv]


def _device(tmp_path: Path, name: str) -> Path:
    """/dev/``name``, or as root a node of the same device in ``tmp_path``."""
    if os.geteuid() != 0:
        return Path("/dev") / name
    node = tmp_path / name
    os.mknod(node, 0o666 | stat.S_IFCHR, os.stat(Path("/dev") / name).st_rdev)
    return node


def test_a_device_is_written_to_not_replaced_and_a_full_one_is_a_clean_error(
        run: Path, tmp_path: Path) -> None:
    """As root, `--to /dev/full` used to replace the device with a regular file."""
    full = _device(tmp_path, "full")
    before = os.stat(full)
    result = _export(str(run), "--to", str(full))
    assert result.returncode == 1, result.stderr.decode()
    assert b"No space left on device" in result.stderr and b"Traceback" not in result.stderr
    assert b"wrote" not in result.stderr
    after = os.stat(full)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert not list(full.parent.glob(".full.*"))
    null = _device(tmp_path, "null")
    assert _export(str(run), "--to", str(null)).returncode == 0
    assert stat.S_ISCHR(os.stat(null).st_mode)


def test_a_fifo_gets_the_table_and_stays_a_fifo(run: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "table.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = _export(str(run), "--to", str(fifo), "--format", "tsv")
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got == [_table(run, tmp_path)]


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_dev_stdout_is_standard_output(run: Path, tmp_path: Path, user: str) -> None:
    """Not root: a PermissionError traceback on /dev/.stdout.NNN.tmp."""
    table = _table(run, tmp_path)
    prefix: list[str] = []
    if user == "nobody":
        if os.geteuid() != 0:
            pytest.skip("needs root to run as another user")
        # pytest's own directory is root's alone: a copy the other user can read
        shared = Path(tempfile.mkdtemp(prefix="bulkgene-export-"))
        shared.chmod(0o755)
        run = Path(shutil.copytree(run, shared / "run"))
        for path in [run, *run.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o005)
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    try:
        command = cli_command("export", str(run), "--to", "/dev/stdout", "--format", "tsv")
        result = subprocess.run([*prefix, *command] if prefix else _with_own_dev(command),
                                capture_output=True, timeout=120, check=False,
                                env={**os.environ, "HOME": "/nonexistent"})
    finally:
        if user == "nobody":
            shutil.rmtree(run.parent)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == table


def test_dev_stdout_appended_to_a_file_keeps_what_was_there(run: Path, tmp_path: Path) -> None:
    log = tmp_path / "log.tsv"
    log.write_bytes(b"kept\n")
    with open(log, "ab") as appended:
        result = subprocess.run(_with_own_dev(cli_command(
            "export", str(run), "--to", "/dev/stdout", "--format", "tsv")), stdout=appended,
            timeout=120, check=False)
    assert result.returncode == 0
    assert log.read_bytes() == b"kept\n" + _table(run, tmp_path)


def test_process_substitution_gets_the_table(run: Path, tmp_path: Path) -> None:
    """`--to >(gzip > t.gz)`: "the directory of --to /dev/fd/63 does not exist"."""
    zipped = tmp_path / "t.tsv.gz"
    command = " ".join(cli_command("export", str(run), "--format", "tsv", "--to"))
    result = subprocess.run(["bash", "-c", f"{command} >(gzip -c > {zipped}); wait"],
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()
    deadline = 60.0
    while deadline > 0 and not (zipped.exists() and zipped.stat().st_size > 20):
        threading.Event().wait(0.05)  # gzip of the substitution ends after the export
        deadline -= 0.05
    assert gzip.decompress(zipped.read_bytes()) == _table(run, tmp_path)


def test_standard_output_on_a_full_device_is_a_clean_error(run: Path) -> None:
    with open("/dev/full", "wb") as full:
        result = _export(str(run), "--to", "-", stdout=full)
    assert result.returncode == 1
    assert b"standard output" in result.stderr and b"No space left" in result.stderr
    assert b"Traceback" not in result.stderr


def test_parquet_to_a_stream_is_refused(run: Path, tmp_path: Path) -> None:
    result = _export(str(run), "--to", str(_device(tmp_path, "null")), "--format", "parquet")
    assert result.returncode == 2 and b"can't be streamed" in result.stderr


@pytest.mark.parametrize("suffix", ["tsv", "jsonl"])
def test_a_full_disk_leaves_the_old_table_and_no_temporary(run: Path, tmp_path: Path,
                                                           suffix: str) -> None:
    with small_filesystem(tmp_path / "full", "64k") as mount:
        target = mount / f"x.{suffix}"
        target.write_bytes(b"old table\n")
        filler = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        with contextlib.suppress(OSError):
            while True:  # the disk full to its last block
                os.write(filler, b"\0" * 4096)
        os.close(filler)
        result = _export(str(run), "--to", str(target))
        assert result.returncode == 1, result.stderr.decode()
        assert b"No space left on device" in result.stderr and b"Traceback" not in result.stderr
        assert target.read_bytes() == b"old table\n"
        assert sorted(p.name for p in mount.iterdir()) == ["filler", f"x.{suffix}"]


def test_a_link_to_a_table_keeps_the_link(run: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.tsv"
    real.write_bytes(b"old\n")
    link = tmp_path / "link.tsv"
    link.symlink_to(real)
    assert _export(str(run), "--to", str(link)).returncode == 0
    assert link.is_symlink() and real.read_bytes() == _table(run, tmp_path)


@pytest.mark.parametrize("name", ["shard-0000.ndjson", "missing.tsv", "summary.json",
                                  "checkpoint.json", ".claims/x", "."])
def test_a_file_of_the_run_itself_is_refused(run: Path, name: str) -> None:
    """`export EX --to EX/shard-0000.ndjson --format jsonl` overwrote one of its own shards."""
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = invoke_cli("export", str(run), "--to", str(run / name), "--format", "jsonl")
    assert result.returncode == 2, result.stderr.decode()
    assert b"run" in result.stderr and b"Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert invoke_cli("verify", str(run)).returncode == 0


def test_a_task_directorys_file_is_refused_and_a_name_of_ones_own_is_not(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    env = cli_env(make_emulator().base_url)
    source = write_ids(tmp_path / "ids.txt", range(1, 41))
    out = tmp_path / "arr"
    for index in (0, 1):
        assert invoke_cli("fetch", str(source), "--out", str(out), "--task-index", str(index),
                          "--task-count", "2", "--batch-size", "10", "-q",
                          env=env).returncode == 0
    refused = invoke_cli("export", str(out), "--to", str(out / "task-0001" / "shard-0001.ndjson"),
                         "--format", "jsonl")
    assert refused.returncode == 2
    assert invoke_cli("export", str(out), "--to", str(out / "genes.tsv")).returncode == 0


def test_a_run_another_users_permissions_hide_is_a_clean_error(run: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    shared = Path(tempfile.mkdtemp(prefix="bulkgene-export-"))
    try:
        shared.chmod(0o777)  # the other user may write the table; the run it can't read
        target = shared / "never.tsv"
        result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup",
                                 "--clear-groups",
                                 *cli_command("export", str(run), "--to", str(target))],
                                capture_output=True, timeout=120, check=False)
        assert result.returncode == 1 and b"Permission denied" in result.stderr
        assert b"Traceback" not in result.stderr and not target.exists()
    finally:
        shutil.rmtree(shared)
