"""The output directory's files: NDJSON shards and the missing/replaced reports, committed per batch.

One writer (this class, driven by one task) owns every file, so no locks are needed for
correctness, which matters on NFS and Lustre. ``commit`` appends the finished batches,
fsyncs what it touched, then saves the checkpoint: the order the resume invariants rest on.
"""

from __future__ import annotations

import gzip
import os
import re
import time
from pathlib import Path
from typing import BinaryIO

from bulkgene import checkpoint as ckpt
from bulkgene import durable
from bulkgene.checkpoint import Checkpoint
from bulkgene.fetcher import BatchFailure, BatchOutcome, BatchResult
from bulkgene.idset import IdBitmap

MISSING_NAME = "missing.tsv"
REPLACED_NAME = "replaced.tsv"
REJECTS_NAME = "rejects.tsv"
SUMMARY_NAME = "summary.json"
MISSING_HEADER = b"gene_id\treason\n"
REPLACED_HEADER = b"requested_gene_id\treturned_gene_id\n"
REJECTS_HEADER = b"file\tline\ttext\treason\n"
SHARD_PATTERN = re.compile(r"shard-\d{4,}\.(ndjson|tsv)(\.gz)?")


def shard_name(shard_index: int, gzipped: bool = False, tsv: bool = False) -> str:
    """The name of shard ``shard_index``: integers only, sortable."""
    return f"shard-{shard_index:04d}.{'tsv' if tsv else 'ndjson'}{'.gz' if gzipped else ''}"


class OutputStore:
    """Appends committed batches to shards and side reports; the single writer of a directory."""

    def __init__(self, out_dir: Path, shard_count: int, checkpoint: Checkpoint,
                 requested: IdBitmap, gzipped: bool = False, tsv: bool = False) -> None:
        self.out_dir = out_dir
        self.shard_count = shard_count
        self.gzipped = gzipped
        self.tsv = tsv
        self.checkpoint = checkpoint
        self._requested = requested
        self._handles: dict[str, BinaryIO] = {}
        self._replacements_written: set[int] = set()

    def managed_files(self) -> list[Path]:
        """Every file whose length the checkpoint governs, present or not."""
        names = {MISSING_NAME, REPLACED_NAME} | set(self.checkpoint.file_lengths)
        names.update(p.name for p in self.out_dir.iterdir() if SHARD_PATTERN.fullmatch(p.name))
        return [self.out_dir / name for name in sorted(names)]

    def open(self) -> None:
        """Cut every file back to its committed length and learn what is already written."""
        ckpt.cut_back(self.out_dir, self.checkpoint, self.managed_files())
        replaced = self.out_dir / REPLACED_NAME
        if replaced.exists():
            with durable.open_read(replaced) as handle:
                handle.readline()  # header
                for row in handle:
                    returned = int(row.split(b"\t")[1])
                    # a replacement's record was written iff its new ID wasn't itself requested
                    if returned not in self._requested:
                        self._replacements_written.add(returned)

    def _handle(self, name: str, header: bytes = b"") -> BinaryIO:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = durable.open_append(self.out_dir / name)
            if header and handle.tell() == 0:
                handle.write(header)
        return handle

    def commit(self, results: list[BatchResult], network: dict[str, int]) -> None:
        """Write ``results`` durably, then record them in the checkpoint."""
        touched: set[str] = {MISSING_NAME, REPLACED_NAME}
        missing = self._handle(MISSING_NAME, MISSING_HEADER)
        replaced = self._handle(REPLACED_NAME, REPLACED_HEADER)
        for result in results:
            if isinstance(result, BatchFailure):
                self.checkpoint.mark_failed(result.batch.index, len(result.batch.gene_ids))
            else:
                self._write_outcome(result, missing, replaced, touched)
        for name in touched:
            handle = self._handles[name]
            handle.flush()
            os.fsync(handle.fileno())
            self.checkpoint.file_lengths[name] = handle.tell()
        self.checkpoint.add(**network)
        self.checkpoint.updated_at = time.time()
        ckpt.save(self.out_dir, self.checkpoint)

    def _write_outcome(self, outcome: BatchOutcome, missing: BinaryIO, replaced: BinaryIO,
                       touched: set[str]) -> None:
        shard = shard_name(outcome.batch.index % self.shard_count, self.gzipped, self.tsv)
        lines: list[bytes] = []
        replaced_rows = 0
        for record in outcome.records:
            if record.is_replacement and record.gene_id is not None:
                for query in record.queries:
                    if query != record.gene_id:
                        replaced.write(b"%d\t%d\n" % (query, record.gene_id))
                        replaced_rows += 1
                # the new gene is written once: not if it was requested itself, not twice
                if (record.gene_id in self._requested
                        or record.gene_id in self._replacements_written):
                    continue
                self._replacements_written.add(record.gene_id)
            lines.append(record.line)
        if lines:
            handle = self._handle(shard)
            # a TSV header once, at the very top of each shard
            top = outcome.header + b"\n" if outcome.header and handle.tell() == 0 else b""
            data = top + b"".join(lines)
            if self.gzipped:
                # one gzip member per batch: cutting a shard back to a committed length
                # always leaves whole members, so zcat reads clean NDJSON or TSV
                data = gzip.compress(data, compresslevel=6, mtime=0)
            handle.write(data)
            touched.add(shard)
        for gene_id, reason in outcome.missing:
            missing.write(b"%d\t%s\n" % (gene_id, reason.encode()))
        records = len(lines)
        self.checkpoint.add(found=outcome.found, missing=len(outcome.missing),
                            replaced=replaced_rows, records=records,
                            unverified=outcome.unverified)
        self.checkpoint.mark_committed(outcome.batch.index)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
