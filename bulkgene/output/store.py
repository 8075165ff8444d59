"""The output directory's files: NDJSON/TSV shards and the missing/replaced reports, per batch.

One writer (this class, driven from one thread at a time) owns every file, so no locks are
needed for correctness, which matters on NFS and Lustre. ``write`` appends finished batches,
fsyncs what it touched and returns a CommitReceipt saying what is now durable; it never
touches the checkpoint, which belongs to the event loop. The loop applies the receipt and
saves the checkpoint afterwards: the order the resume invariants rest on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
from collections import Counter
from pathlib import Path
from typing import BinaryIO

from bulkgene import durable, layout
from bulkgene.errors import StateError
from bulkgene.input.idset import IdBitmap
from bulkgene.model import BatchFailure, BatchOutcome, BatchResult, BatchWritten, CommitReceipt
from bulkgene.output import checkpoint as ckpt
from bulkgene.output import on_behalf
from bulkgene.output.claims import GeneClaims
from bulkgene.output.contested import ContestedGenes
from bulkgene.output.on_behalf import Answered

_CHUNK_BYTES = 1 << 20


def _write_in_chunks(handle: BinaryIO, lines: list[bytes]) -> None:
    """Write ``lines`` in joins of about 1 MiB: one join of a whole batch would copy its ~5 MB
    once more, and a write per line would cost a system call per line."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line)
        if size >= _CHUNK_BYTES:
            handle.write(b"".join(chunk))
            chunk.clear()
            size = 0
    if chunk:
        handle.write(b"".join(chunk))


class OutputStore:
    """Appends committed batches to shards and side reports; the single writer of a directory."""

    def __init__(self, out_dir: Path, shard_count: int, requested: IdBitmap,
                 gzipped: bool = False, tsv: bool = False,
                 claims: GeneClaims | None = None,
                 contested: ContestedGenes | None = None) -> None:
        self.out_dir = out_dir
        self._claims = claims  # array tasks: who writes a gene merged from several tasks' IDs
        # who writes a requested gene another requested ID was replaced by (output/contested.py)
        self._contested = contested
        self.shard_count = shard_count
        self.gzipped = gzipped
        self.tsv = tsv
        self._requested = requested
        self._handles: dict[str, BinaryIO] = {}
        self._replacements_written: set[int] = set()
        # after `bulkgene explain` a report has five more columns: rows added later leave
        # them empty until the next explain
        self._row_end = {layout.MISSING_NAME: b"\n", layout.REPLACED_NAME: b"\n"}

    def managed_files(self, committed_names: set[str]) -> list[Path]:
        """Every file whose length the checkpoint governs, present or not."""
        names = {layout.MISSING_NAME, layout.REPLACED_NAME} | committed_names
        names.update(p.name for p in self.out_dir.iterdir() if layout.is_shard_name(p.name))
        return [self.out_dir / name for name in sorted(names)]

    def open(self, checkpoint: ckpt.Checkpoint | None) -> None:
        """Cut every file back to its committed length and learn what is already written."""
        committed = set(checkpoint.file_lengths) if checkpoint else set()
        ckpt.cut_back(self.out_dir, checkpoint, self.managed_files(committed))
        for name, header in ((layout.MISSING_NAME, layout.MISSING_HEADER),
                             (layout.REPLACED_NAME, layout.REPLACED_HEADER)):
            if (self.out_dir / name).exists():
                with durable.open_read(self.out_dir / name) as handle:
                    if handle.readline() == layout.explained_header(header):
                        self._row_end[name] = layout.NOT_EXPLAINED + b"\n"
        replaced = self.out_dir / layout.REPLACED_NAME
        if replaced.exists():
            with durable.open_read(replaced) as handle:
                handle.readline()  # header
                for row in handle:
                    returned = int(row.split(b"\t")[1])
                    # a replacement's record was written iff its new ID wasn't itself
                    # requested (a requested one: output/contested.py knows)
                    if returned not in self._requested:
                        self._replacements_written.add(returned)
        if self._contested is not None:
            self._contested.open(checkpoint.is_committed if checkpoint else lambda _: False)

    def _handle(self, name: str, header: bytes = b"") -> BinaryIO:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = durable.open_append(self.out_dir / name)
            if header and handle.tell() == 0:
                handle.write(header)
        return handle

    def write(self, results: list[BatchResult]) -> CommitReceipt:
        """Append ``results`` and make them durable; say what was written."""
        touched: set[str] = {layout.MISSING_NAME, layout.REPLACED_NAME}
        missing = self._handle(layout.MISSING_NAME, layout.MISSING_HEADER)
        replaced = self._handle(layout.REPLACED_NAME, layout.REPLACED_HEADER)
        written: list[BatchWritten] = []
        failed: list[tuple[int, int]] = []
        vacant: list[tuple[BatchOutcome, list[int]]] = []
        if self._contested is not None:
            self._contested.begin_commit()
        for result in results:
            if isinstance(result, BatchFailure):
                failed.append((result.batch.index, len(result.batch.gene_ids)))
            else:
                written.append(self._write_outcome(result, missing, replaced, touched, vacant))
        self._sync(touched)
        if vacant:
            # only now, the rows saying these IDs weren't answered by themselves on disk:
            # a task parking one of them after this looks and finds them (contested.py)
            written = self._write_parked(vacant, written, touched)
        return CommitReceipt(written, failed, self._sync(touched))

    def _sync(self, touched: set[str]) -> dict[str, int]:
        lengths: dict[str, int] = {}
        for name in touched:
            handle = self._handles[name]
            handle.flush()
            os.fsync(handle.fileno())
            lengths[name] = handle.tell()
        return lengths

    def _write_parked(self, vacant: list[tuple[BatchOutcome, list[int]]],
                      written: list[BatchWritten], touched: set[str]) -> list[BatchWritten]:
        """Write the parked record of each requested gene these batches didn't answer with
        itself, where this task is the one to write it (output/contested.py)."""
        assert self._contested is not None
        extra: Counter[int] = Counter()
        for outcome, gene_ids in vacant:
            index = outcome.batch.index
            lines = [line for gene in self._contested.parked(gene_ids)
                     if (line := self._contested.take_parked(gene, index)) is not None]
            if lines:
                self._append_lines(outcome, lines, touched)
                extra[index] += len(lines)
        return [dataclasses.replace(w, records=w.records + extra[w.batch_index])
                if extra[w.batch_index] else w for w in written]

    def _append_lines(self, outcome: BatchOutcome, lines: list[bytes], touched: set[str]) -> None:
        shard = layout.shard_name(outcome.batch.index % self.shard_count, self.gzipped, self.tsv)
        handle = self._handle(shard)
        # a TSV header once, at the very top of each shard
        top = outcome.header + b"\n" if outcome.header and handle.tell() == 0 else b""
        if self.gzipped:
            # one gzip member per batch: cutting a shard back to a committed length
            # always leaves whole members, so zcat reads clean NDJSON or TSV
            handle.write(gzip.compress(top + b"".join(lines), compresslevel=6, mtime=0))
        else:
            handle.write(top)
            _write_in_chunks(handle, lines)
        touched.add(shard)

    def _write_outcome(self, outcome: BatchOutcome, missing: BinaryIO, replaced: BinaryIO,
                       touched: set[str], vacant: list[tuple[BatchOutcome, list[int]]]
                       ) -> BatchWritten:
        missing_end = self._row_end[layout.MISSING_NAME]
        replaced_end = self._row_end[layout.REPLACED_NAME]
        behalf = outcome.batch.behalf
        rows = behalf.rows if behalf is not None else {}
        answered = Answered(outcome.found)
        records = outcome.records
        if behalf is not None and behalf.rekey:
            records, answered = on_behalf.rekeyed(outcome, behalf)
        lines: list[bytes] = []
        replaced_rows = 0
        contested = self._contested if behalf is None or not behalf.rekey else None
        answered_itself: set[int] = set()
        if contested is not None:
            answered_itself = {r.gene_id for r in records
                               if r.gene_id is not None and r.gene_id in r.queries}
            others = [g for g in outcome.batch.gene_ids
                      if g not in answered_itself and g in self._requested]
            if others:
                contested.note_vacant(others)
                vacant.append((outcome, others))
        for record in records:
            if record.gene_id is not None:
                # every other ID this gene answers was merged into it, also when the new ID
                # was asked for in the same request (then the gene is written as itself)
                for query in record.queries:
                    if query != record.gene_id:
                        end = replaced_end
                        if behalf is not None and behalf.rekey and len(replaced_end) > 1:
                            end = on_behalf.explanation(answered.rows.get(query)) + b"\n"
                        replaced.write(b"%d\t%d%s" % (query, record.gene_id, end))
                        replaced_rows += 1
            gene = record.gene_id
            if record.is_replacement and gene is not None:
                # the new gene is written once: a requested one by its own answer, or else
                # by one of the IDs replaced by it (contested.py); another not twice
                if gene in self._requested:
                    if (contested is None or gene in answered_itself
                            or not contested.replacement(gene, record.line, outcome.batch.index)):
                        continue
                else:
                    if gene in self._replacements_written:
                        continue
                    if self._claims is not None and not self._claims.owns(gene):
                        continue  # another task of the array writes it
                    self._replacements_written.add(gene)
            elif (gene is not None and contested is not None and gene in self._requested
                  and contested.written_by_another(gene)):
                continue  # answered by silence before, and written from a parked record then
            lines.append(record.line)
        if lines:
            self._append_lines(outcome, lines, touched)
        classes: Counter[bytes] = Counter()
        missing_rows = refused = 0
        for gene_id, reason in outcome.missing:
            earlier = rows.get(gene_id, ())
            if behalf is not None and behalf.rekey:
                # the successor is unknown to the API after all: the rows it stood for return
                for _, row in earlier:
                    missing.write(row + b"\n")
                    classes[on_behalf.history_class(row)] += 1
                    refused += on_behalf.reason(row) == layout.REFUSED_REASON
                missing_rows += len(earlier)
                continue
            end = missing_end
            code = reason.encode()
            if earlier and len(missing_end) > 1:  # fetched again: its explanation still holds
                explanation = on_behalf.explanation(earlier[0][1], code)
                end = explanation + b"\n"
                classes[explanation.split(b"\t", 2)[1]] += 1
            missing.write(b"%d\t%s%s" % (gene_id, code, end))
            missing_rows += 1
            refused += code == layout.REFUSED_REASON
        return BatchWritten(outcome.batch.index, found=answered.found,
                            missing=missing_rows, replaced=replaced_rows,
                            records=len(lines), unverified=outcome.unverified,
                            followed=answered.followed,
                            missing_discontinued=classes[b"DISCONTINUED"],
                            missing_replaced=classes[b"REPLACED"],
                            missing_not_in_history=classes[b"NOT_IN_HISTORY"],
                            missing_refused=classes[b"REFUSED"], refused=refused)

    def close(self, checkpoint: ckpt.Checkpoint | None = None) -> None:
        """Close every file; with ``checkpoint``, also cut them back to what it committed.

        Never raises: on a full disk a close can't flush, and what it loses was not committed
        anyway. Cutting back frees the space uncommitted bytes took (a first batch that filled
        a small disk), so that summary.json can still be written; a resume would cut them too.
        """
        for handle in self._handles.values():
            with contextlib.suppress(OSError):
                handle.close()  # closed even when its flush fails
        self._handles.clear()
        if checkpoint is not None:
            with contextlib.suppress(OSError, StateError):
                ckpt.cut_back(self.out_dir, checkpoint,
                              self.managed_files(set(checkpoint.file_lengths)))
