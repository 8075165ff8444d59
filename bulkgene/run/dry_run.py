"""What a run would do, said without doing it (``fetch --dry-run``): writes and sends nothing.

It reads the input as a run would, takes the output directory's resume state into account
(what is committed is not fetched again; what a real run would refuse, it says now), counts
the requests as a run packs them (a GET batch of long GeneIDs takes two or more: about 780
nine-digit IDs fit in a URL, all 1000 of five digits), and estimates the time the rate
implies and the disk the output will take, against the free space.
"""

from __future__ import annotations

import shutil
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bulkgene.config import DownloadConfig
from bulkgene.errors import BulkgeneError
from bulkgene.input.idset import IdBitmap
from bulkgene.input.lines import InputCounts, Reject, file_digest, parse_column, read_ids
from bulkgene.input.spool import needs_spool
from bulkgene.layout import CHECKPOINT_NAME
from bulkgene.ncbi.requests import id_path_budget, pack
from bulkgene.output import checkpoint as ckpt
from bulkgene.output.checkpoint import Checkpoint, InputFile
from bulkgene.run.growth import would_add
from bulkgene.run.prepare import plan_directory, resume_state
from bulkgene.run.restart import refuse_mixed_runs, refuse_other_files

# bytes one record takes on disk, by what is asked for (NCBI's COMPLETE gene reports are
# ~4.5 KB of JSON each; IDS_ONLY and COUNTS_ONLY lines ~100 bytes), and gzip's share of that
_RECORD_BYTES = {"COMPLETE": 4500, "IDS_ONLY": 100, "COUNTS_ONLY": 120}
_TSV_FIELD_BYTES = 16  # a TSV cell, on average
_GZIP_FRACTION = 0.15


@dataclass(frozen=True)
class DryRun:
    """What a run would do: the input, the batches and requests left, time and disk."""

    counts: InputCounts
    batches: int  # of the whole list
    task_batches: int  # this task's
    task_ids: int
    batches_to_fetch: int  # this task's not committed yet (failed ones are fetched again)
    ids_to_fetch: int
    requests: int  # for those, as packed, one page each
    requests_per_s: float
    resumed: Checkpoint | None  # the state a real run would resume, None: a fresh start
    refusal: BulkgeneError | None  # what a real run would refuse to do, said now
    inputs_compared: bool  # False: an input read once (stdin, a pipe) can't be compared
    disk_bytes: int
    disk_free_bytes: int | None
    disk_where: Path
    added: int | None = None  # --add: the new GeneIDs a real run would fetch

    @property
    def seconds(self) -> float:
        return self.requests / self.requests_per_s

    @property
    def requests_per_batch(self) -> float:
        return self.requests / self.batches_to_fetch if self.batches_to_fetch else 0.0


def _batches(config: DownloadConfig, counts: InputCounts, rejects: list[Reject] | None
             ) -> Iterator[tuple[int, array[int]]]:
    """The input's batches (index, IDs) as a run cuts them: unique IDs in input order."""
    seen = IdBitmap()
    batch: array[int] = array("I")
    index = 0
    for item in read_ids(config.inputs, config.inputs, parse_column(config.column),
                         config.network.secret):
        if isinstance(item, Reject):
            counts.rejected += 1
            if rejects is not None:
                rejects.append(item)
        elif seen.add(item):
            counts.requested += 1
            batch.append(item)
            if len(batch) == config.output.batch_size:
                yield index, batch
                index, batch = index + 1, array("I")
        else:
            counts.duplicates += 1
    if batch:
        yield index, batch


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _record_bytes(config: DownloadConfig) -> float:
    query = config.query
    per_record = float(len(query.table_fields) * _TSV_FIELD_BYTES if query.format == "tsv"
                       else _RECORD_BYTES[query.returned_content])
    return per_record * (_GZIP_FRACTION if config.output.compress == "gzip" else 1.0)


def _resume(config: DownloadConfig, inputs: list[InputFile] | None
            ) -> tuple[Checkpoint | None, BulkgeneError | None]:
    """The state a real run would start from, or what it would refuse."""
    if config.restart:
        return None, None  # the old run would be moved aside
    work_dir = config.work_dir
    try:
        if not (work_dir / CHECKPOINT_NAME).exists():
            refuse_other_files(config)
        refuse_mixed_runs(config)
        existing = ckpt.load(work_dir) if work_dir.is_dir() else None
        # --add grows the run by IDs of its own: the options are what must match
        return resume_state(config, None if config.add else inputs, existing), None
    except BulkgeneError as exc:
        return None, exc


def dry_run(config: DownloadConfig, rejects: list[Reject] | None = None) -> DryRun:
    """Read and validate the input and work out what a run would do; writes and sends nothing."""
    inputs_compared = not any(needs_spool(name) for name in config.inputs)
    inputs = ([InputFile(name, file_digest(name)) for name in config.inputs]
              if inputs_compared else None)
    resumed, refusal = _resume(config, inputs)
    endpoint = config.query.endpoint
    budget = id_path_budget(config.query, endpoint, config.network.base_url)
    page_size = config.query.page_size
    task = config.task
    counts = InputCounts()
    batches = batches_to_fetch = ids_to_fetch = requests = 0
    # --add to a run: what it fetches is the input's IDs the run does not have yet, in batches
    # of their own (batch j of them to task j mod N); the input is still read and counted
    added = (would_add(config, resumed, plan_directory(config))
             if config.add and resumed is not None and refusal is None else None)
    batch_size = config.output.batch_size
    fetched = (_batches(config, counts, rejects) if added is None else enumerate(
        added[start:start + batch_size] for start in range(0, len(added), batch_size)))
    for index, gene_ids in fetched:
        batches += 1
        if not task.takes(index) or (added is None and resumed is not None
                                     and resumed.is_committed(index // task.count)):
            continue
        batches_to_fetch += 1
        ids_to_fetch += len(gene_ids)
        for part in pack(endpoint, tuple(gene_ids), budget):
            requests += 1 if config.query.format != "json" else -(-len(part) // page_size)
    if added is not None:
        for _ in _batches(config, counts, rejects):  # the input's counts, as printed
            pass
    # --add: the batches are those of the new IDs, not of the whole input
    task_batches, task_ids = task.share(counts.requested if added is None else len(added),
                                        config.output.batch_size)
    where = _existing(config.work_dir)
    try:
        free: int | None = shutil.disk_usage(where).free
    except OSError:
        free = None
    return DryRun(counts, batches, task_batches, task_ids, batches_to_fetch, ids_to_fetch,
                  requests, config.effective_requests_per_second, resumed, refusal,
                  inputs_compared, round(ids_to_fetch * _record_bytes(config)), free, where,
                  None if added is None else len(added))
