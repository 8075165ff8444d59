"""Issue #14's race, reproduced deterministically: the loop reads the checkpoint mid-commit.

The old writer applied a commit to the Checkpoint inside ``asyncio.to_thread``, right after
fsyncing the shards, while the event loop iterated ``checkpoint.failed`` for a progress
snapshot: now and then "dictionary changed size during iteration". Here the writer thread
is held inside its fsync (``os.fsync`` patched to wait on an Event: the OS is scripted,
not our code), the loop starts iterating the checkpoint's collections, the thread is let go
and the commit runs to its end, and only then does the iteration go on. On the old design
the thread had popped batch 1 from ``failed`` by then, and the iteration raised; on this one
the thread only returns a receipt and the loop adopts a new checkpoint once it is saved.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from helpers import make_config, write_ids

from bulkgene.layout import CHECKPOINT_NAME
from bulkgene.model import Batch, BatchFailure, BatchOutcome, BatchResult, Record
from bulkgene.net.client import GeneClient
from bulkgene.net.pacer import AdaptiveRateLimiter
from bulkgene.run.pipeline import Pipeline
from bulkgene.run.prepare import prepare

BATCH_IDS = 10


def _ids(index: int) -> tuple[int, ...]:
    return tuple(range(index * BATCH_IDS + 1, (index + 1) * BATCH_IDS + 1))


def _found(index: int) -> BatchOutcome:
    records = [Record(g, (g,), b'{"gene":{"gene_id":"%d"}}\n' % g) for g in _ids(index)]
    return BatchOutcome(Batch(index, _ids(index)), records, BATCH_IDS, [])


def _failed(index: int) -> BatchFailure:
    return BatchFailure(Batch(index, _ids(index)), "HTTP 500")


class HeldFsync:
    """``os.fsync`` that, once armed, holds the first caller until ``release`` is set."""

    def __init__(self) -> None:
        self.armed = False
        self.holding = threading.Event()
        self.release = threading.Event()
        self.held_thread: str | None = None
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        if self.armed and not self.release.is_set():
            self.held_thread = threading.current_thread().name
            self.holding.set()
            assert self.release.wait(timeout=60), "the test never let the writer go"
        self._real(fd)


async def test_the_loop_iterates_the_checkpoint_through_a_commit_in_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config([str(write_ids(tmp_path / "ids.txt", range(1, 81)))], tmp_path / "out",
                         batch_size=BATCH_IDS, progress_interval_s=0)
    prepared = await asyncio.to_thread(prepare, config)
    fsync = HeldFsync()
    monkeypatch.setattr(os, "fsync", fsync)
    try:
        async with aiohttp.ClientSession() as session:  # never sends: no batch is fetched
            run = Pipeline(config, prepared, GeneClient(session, AdaptiveRateLimiter(10.0), config),
                       on_progress=None)
            first: list[BatchResult] = [_found(0), _failed(1), _found(2), _failed(3),
                                        _found(5)]
            await run._commit(first)
            checkpoint = prepared.checkpoint
            assert checkpoint.failed == {1: BATCH_IDS, 3: BATCH_IDS}
            assert checkpoint.done_above == {5}
            before = checkpoint.to_bytes()
            saved_before = (config.work_dir / CHECKPOINT_NAME).read_bytes()

            # batches 1 and 3 succeed on their retry (the old writer popped them from
            # `failed`), batch 4 fails (it added it) and 6 joins `done_above`
            fsync.armed = True
            commit = asyncio.create_task(run._commit([_found(1), _found(3), _failed(4),
                                                      _found(6)]))
            assert await asyncio.to_thread(fsync.holding.wait, 60), "the writer never fsynced"
            assert fsync.held_thread != threading.current_thread().name

            # the write is paused mid-flight: the loop reads what a progress snapshot reads
            reading: list[Iterator[object]] = [iter(checkpoint.failed),
                                               iter(checkpoint.done_above),
                                               iter(checkpoint.file_lengths.items())]
            seen = [next(iterator) for iterator in reading]
            assert run.snapshot(1.0, 0).batches_failed == 2
            assert prepared.checkpoint is checkpoint and checkpoint.to_bytes() == before

            fsync.release.set()
            await commit  # the shards, the receipt, the checkpoint saved and adopted

            # the old design raised here: "dictionary changed size during iteration"
            for iterator in reading:
                seen.extend(iterator)
    finally:
        prepared.store.close()
        prepared.lock.release()

    assert seen[:2] == [1, 5] and 3 in seen
    assert checkpoint.to_bytes() == before, "the state the loop was reading never changed"
    adopted = prepared.checkpoint
    assert adopted is not checkpoint, "the loop adopted a new checkpoint after the save"
    assert adopted.failed == {4: BATCH_IDS}
    assert [adopted.is_committed(b) for b in range(7)] == [True] * 4 + [False] + [True] * 2
    assert adopted.totals.found == 6 * BATCH_IDS
    saved = (config.work_dir / CHECKPOINT_NAME).read_bytes()
    assert saved != saved_before and saved == adopted.to_bytes()
