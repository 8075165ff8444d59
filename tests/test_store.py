"""The shard store: it writes and fsyncs, says what it wrote, and never touches the checkpoint."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from bulkgene.input.idset import IdBitmap
from bulkgene.model import Batch, BatchFailure, BatchOutcome, BatchResult, CommitReceipt, Record
from bulkgene.output.checkpoint import Checkpoint
from bulkgene.output.store import OutputStore


def _outcome(index: int, gene_ids: tuple[int, ...]) -> BatchOutcome:
    records = [Record(g, (g,), b'{"gene":{"gene_id":"%d"}}\n' % g) for g in gene_ids]
    return BatchOutcome(Batch(index, gene_ids), records, len(gene_ids), [])


def _store(tmp_path: Path, requested: list[int]) -> OutputStore:
    ids = IdBitmap()
    for gene_id in requested:
        ids.add(gene_id)
    store = OutputStore(tmp_path, shard_count=2, requested=ids)
    store.open(None)
    return store


async def test_the_writer_thread_never_changes_the_checkpoint_the_loop_reads(
        tmp_path: Path) -> None:
    # the old writer marked batches in the checkpoint from its thread while the progress
    # snapshot iterated checkpoint.failed on the loop ("dictionary changed size during
    # iteration"); now the thread only returns a receipt, and only the loop applies it
    # (test_checkpoint_race.py reproduces the race itself, with the writer held mid-fsync)
    checkpoint = Checkpoint(fingerprint="f", params={}, inputs=[])
    before = checkpoint.to_bytes()
    store = _store(tmp_path, list(range(1, 101)))
    results: list[BatchResult] = [_outcome(b, tuple(range(b * 10 + 1, b * 10 + 11)))
                                  for b in range(0, 9, 2)]
    results += [BatchFailure(Batch(b, tuple(range(b * 10 + 1, b * 10 + 11))), "HTTP 500")
                for b in range(1, 10, 2)]
    threads: set[str] = set()

    def write() -> CommitReceipt:
        threads.add(threading.current_thread().name)
        return store.write(results)

    receipt = await asyncio.to_thread(write)
    store.close()
    assert threads and threading.main_thread().name not in threads
    assert checkpoint.to_bytes() == before, "the writer must not touch the checkpoint"
    assert [w.batch_index for w in receipt.written] == [0, 2, 4, 6, 8]
    assert receipt.failed == [(b, 10) for b in range(1, 10, 2)]
    lengths = receipt.file_lengths
    assert lengths["shard-0000.ndjson"] == (tmp_path / "shard-0000.ndjson").stat().st_size
    assert (tmp_path / "shard-0000.ndjson").read_bytes().count(b"\n") == 50


def test_an_old_id_merged_into_a_requested_one_gets_its_replaced_row(tmp_path: Path) -> None:
    # input 163 and 164, where 163 was merged into 164: one gene line, and the 163 -> 164 row
    store = _store(tmp_path, [163, 164])
    gene = Record(164, (163, 164), b'{"gene":{"gene_id":"164"}}\n')
    receipt = store.write([BatchOutcome(Batch(0, (163, 164)), [gene], 2, [])])
    store.close()
    assert receipt.written[0].replaced == 1 and receipt.written[0].records == 1
    assert (tmp_path / "replaced.tsv").read_text().splitlines()[1:] == ["163\t164"]
    assert (tmp_path / "shard-0000.ndjson").read_bytes().count(b"\n") == 1
