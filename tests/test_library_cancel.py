"""A library download cancelled (wait_for, task.cancel, Ctrl-C under asyncio.run) stops cleanly.

It used to hang for ever in the producer's last put after the workers were cancelled (the lock
held), and under a plain ``asyncio.run`` Ctrl-C was ignored: the run went on to its end and
returned exit_code 0 as if never interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from helpers import (
    EmulatorFactory,
    expected_for,
    gene_ids_written,
    invoke_cli,
    make_config,
    write_ids,
)

import bulkgene
from bulkgene.config import TaxonSelection
from bulkgene.errors import CorruptCheckpoint
from bulkgene.layout import CHECKPOINT_NAME
from bulkgene.output import checkpoint as ckpt
from bulkgene.output.lock import RunLock

IDS = range(1, 3001)


def _committed(out: Path) -> int:
    with contextlib.suppress(CorruptCheckpoint, FileNotFoundError):
        state = ckpt.load(out)
        return state.committed_batches if state else 0
    return 0


async def _download(out: Path, source: Path, base_url: str) -> bulkgene.Summary:
    return await bulkgene.download(make_config([str(source)], out, base_url=base_url,
                                               requests_per_second=10.0, batch_size=50,
                                               progress_interval_s=0))


async def _finish(out: Path, source: Path, base_url: str) -> bulkgene.Summary:
    return await bulkgene.download(make_config([str(source)], out, base_url=base_url,
                                               requests_per_second=1000.0, batch_size=50,
                                               progress_interval_s=0))


def _checked(out: Path) -> None:
    assert not (out / "bulkgene.lock").exists(), "the lock is released"
    lock = RunLock(out)
    lock.acquire()
    lock.release()
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["interrupted"] is True and summary["exit_code"] == 75, summary
    assert summary["pending"] > 0


async def test_a_cancelled_download_releases_the_lock_and_says_interrupted(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.02)
    source = write_ids(tmp_path / "ids.txt", IDS)
    out = tmp_path / "out"
    task = asyncio.create_task(_download(out, source, emulator.base_url))
    while _committed(out) < 1:  # driven by observed progress: a batch committed
        assert not task.done(), task
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)  # a hang guard; it returns at once
    _checked(out)
    summary = await _finish(out, source, emulator.base_url)
    assert summary.exit_code == 0
    expected = expected_for(emulator.state.universe, list(IDS))
    assert gene_ids_written(out) == dict.fromkeys(expected.genes, 1)
    assert invoke_cli("verify", str(out)).returncode == 0


def _checkpoint_inode(out: Path) -> int:
    with contextlib.suppress(FileNotFoundError):
        return (out / CHECKPOINT_NAME).stat().st_ino
    return 0


async def test_a_cancel_as_the_checkpoint_lands_never_leaves_the_files_behind_it(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """A cancel landing while the checkpoint's save ran in its thread left missing.tsv cut
    back to the older checkpoint (0 bytes of the 31 committed): the resume refused the run.
    Here each cancel lands the moment a new checkpoint.json is seen on disk, before the run
    could have learnt that its save was done."""
    emulator = make_emulator(latency_s=0.01)
    source = write_ids(tmp_path / "ids.txt", IDS)
    out = tmp_path / "out"
    for _ in range(5):
        task = asyncio.create_task(_download(out, source, emulator.base_url))
        seen = _checkpoint_inode(out)
        # the save's thread renames it: there is no event to wait on
        while _checkpoint_inode(out) == seen and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 60)  # a hang guard
        state = ckpt.load(out)
        assert state is not None
        for name, length in state.file_lengths.items():
            assert (out / name).stat().st_size >= length, f"{name} cut behind the checkpoint"
    summary = await _finish(out, source, emulator.base_url)
    assert summary.exit_code == 0
    expected = expected_for(emulator.state.universe, list(IDS))
    assert gene_ids_written(out) == dict.fromkeys(expected.genes, 1)


async def test_a_download_cancelled_while_it_lists_a_taxon_leaves_no_task_behind(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """Cancelled while wheat's parts were listed side by side, the chains went on after the
    session closed ('Session is closed' tracebacks, once a hang); and a request left on the
    wire warned of a silent proxy 15 s later."""
    emulator = make_emulator(latency_s=0.05)
    out = tmp_path / "out"
    config = make_config([], out, base_url=emulator.base_url, requests_per_second=100.0,
                         progress_interval_s=0, taxa=TaxonSelection(("4565",)))
    task = asyncio.create_task(bulkgene.download(config))
    taxa = out / "taxa"
    while len(list(taxa.glob("chain-*"))) < 3:  # page 1 listed and the parts begun
        assert not task.done(), task
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)  # a hang guard
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert left == [], left
    summary = await bulkgene.download(config)  # the listing resumes, and the run ends
    assert summary.exit_code == 0 and summary.requested == 100_000


async def test_wait_for_a_download_ends_at_its_timeout(make_emulator: EmulatorFactory,
                                                      tmp_path: Path) -> None:
    """`await asyncio.wait_for(bulkgene.download(cfg), timeout=4)` never returned."""
    emulator = make_emulator(latency_s=0.02)
    source = write_ids(tmp_path / "ids.txt", IDS)
    out = tmp_path / "out"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_download(out, source, emulator.base_url), timeout=0.5)
    _checked(out)


SCRIPT = """
import asyncio, sys
from pathlib import Path
import bulkgene
config = bulkgene.DownloadConfig(inputs=(sys.argv[1],), out_dir=Path(sys.argv[2]),
    network=bulkgene.NetworkSpec(base_url=sys.argv[3], requests_per_second=10.0),
    output=bulkgene.OutputSpec(batch_size=50))
summary = asyncio.run(bulkgene.download(config))
print("returned", summary.exit_code, flush=True)
"""


def test_ctrl_c_stops_a_download_under_a_plain_asyncio_run(make_emulator: EmulatorFactory,
                                                          tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.02)
    source = write_ids(tmp_path / "ids.txt", IDS)
    out = tmp_path / "out"
    script = subprocess.Popen([sys.executable, "-c", SCRIPT, str(source), str(out),
                               emulator.base_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120  # a hang guard only
    while _committed(out) < 1:
        assert script.poll() is None, script.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    script.send_signal(signal.SIGINT)
    stdout, stderr = script.communicate(timeout=60)
    assert b"returned" not in stdout, "it ran on to its end"
    assert script.returncode in (-signal.SIGINT, 130, 75), stderr.decode()
    assert b"KeyboardInterrupt" in stderr or script.returncode == 75
    _checked(out)
    summary = asyncio.run(_finish(out, source, emulator.base_url))
    assert summary.exit_code == 0
    assert invoke_cli("verify", str(out)).returncode == 0
