"""Everything before the first request: the output directory, the input's identity and counts, resume state.

Runs synchronously (in a worker thread): move an old run aside on ``--restart``, copy stdin
and every other input that can be read only once (a pipe, ``<(zcat ids.gz)``, a FIFO) to a
spool file so it can be fingerprinted and re-read, digest the inputs, refuse a mismatched
checkpoint, count the input and write ``rejects.tsv``, cut files back. An input error leaves
nothing behind: no spool, no temporary file, no directory this run created.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulkgene import checkpoint as ckpt
from bulkgene import idplan
from bulkgene.checkpoint import Checkpoint
from bulkgene.config import DownloadConfig
from bulkgene.errors import ConfigError, InputError, StateError
from bulkgene.idplan import IdPlan
from bulkgene.ids import STDIN, InputCounts, Reject, file_digest, parse_column, scan_ids
from bulkgene.lock import LOCK_NAME, RunLock
from bulkgene.writer import (
    MISSING_NAME,
    REJECTS_HEADER,
    REJECTS_NAME,
    REPLACED_NAME,
    SHARD_PATTERN,
    SUMMARY_NAME,
    OutputStore,
)

STDIN_SPOOL_NAME = "stdin.spool"
SPOOL_PATTERN = re.compile(r"input-\d+\.spool")


@dataclass
class PreparedRun:
    """The input, the directory and the state a download starts from."""

    plan: IdPlan
    checkpoint: Checkpoint
    store: OutputStore
    resumed: bool
    lock: RunLock


def output_params(config: DownloadConfig) -> dict[str, Any]:
    """The parameters that change what lands in the directory (the checkpoint's fingerprint)."""
    return {
        "batch_size": config.batch_size,
        "shards": config.shards,
        "format": config.format,
        "endpoint": config.endpoint,
        "record": config.record,
        "compress": config.compress,
        "returned_content": config.returned_content,
        "locus_tags": list(config.locus_tags),
        "sort": [config.sort_field, config.sort_direction],
        "tax_search_subtree": config.tax_search_subtree,
        "table_fields": list(config.table_fields),
        "accession_filter": list(config.accession_filter),
        "include_tabular_header": config.include_tabular_header,
        "task_index": config.task.index,
        "task_count": config.task.count,
    } | ({"column": config.column} if config.column is not None else {})


def _is_ours(path: Path) -> bool:
    names = {ckpt.CHECKPOINT_NAME, MISSING_NAME, REPLACED_NAME, REJECTS_NAME, SUMMARY_NAME,
             STDIN_SPOOL_NAME, LOCK_NAME, *idplan.PLAN_FILES}
    return (path.name in names or bool(SHARD_PATTERN.fullmatch(path.name))
            or bool(SPOOL_PATTERN.fullmatch(path.name)))


def move_aside(work_dir: Path, out_dir: Path) -> Path | None:
    """``--restart``: move the old run next to ``out_dir`` (never delete); its new place.

    A task's directory goes to ``DIR.restarted-<time>/task-000i``, outside ``DIR``, so that
    globbing ``DIR/**/*.ndjson`` never reads an old run's shards.
    """
    if not work_dir.is_dir() or not any(_is_ours(p) for p in work_dir.iterdir()):
        return None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    parent = out_dir.with_name(f"{out_dir.name}.restarted-{stamp}")
    target = parent if work_dir == out_dir else parent / work_dir.name
    suffix = 1
    while target.exists():
        parent = out_dir.with_name(f"{out_dir.name}.restarted-{stamp}-{suffix}")
        target = parent if work_dir == out_dir else parent / work_dir.name
        suffix += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        work_dir.rename(target)
    except OSError as exc:
        raise StateError(f"--restart could not move {work_dir} aside to {target}: {exc.strerror}; "
                         "move or remove it yourself, or choose another --out") from None
    return target


def _needs_spool(name: str) -> bool:
    """Whether an input can be read only once: stdin, a pipe, ``<(...)``, a FIFO, a device."""
    if name == STDIN:
        return True
    try:
        mode = os.stat(name).st_mode
    except OSError:
        return False  # reading it says what is wrong
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def spool_files(config: DownloadConfig) -> dict[int, Path]:
    """The inputs (by position) that are copied into the directory, and their copies.

    The copy is what a resumed run reads: ``bulkgene fetch DIR/stdin.spool ...`` resumes a
    run whose input was piped in, without piping the same bytes again.
    """
    return {position: config.work_dir / (STDIN_SPOOL_NAME if name == STDIN
                                     else f"input-{position + 1}.spool")
            for position, name in enumerate(config.inputs) if _needs_spool(name)}


def _spool(name: str, target: Path) -> Path:
    """Copy a read-once input beside its old copy, so it can be digested and re-read."""
    incoming = target.with_name(target.name + ".new")
    try:
        source = sys.stdin.buffer if name == STDIN else open(name, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read input {name!r}: {exc.strerror}; check the path") from None
    try:
        with open(incoming, "wb") as handle:
            shutil.copyfileobj(source, handle, 1 << 20)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    return incoming


def _read_input(out_dir: Path, paths: tuple[str, ...], names: tuple[str, ...],
                plan_key: list[str], column: str | None) -> IdPlan:
    """The input's plan: reused when it matches, else made while writing rejects.tsv."""
    if (out_dir / REJECTS_NAME).exists() and (plan := idplan.load(out_dir, plan_key)):
        return plan
    tmp = out_dir / (REJECTS_NAME + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(REJECTS_HEADER)

            def record(reject: Reject) -> None:
                source = reject.source.replace("\t", " ").replace("\n", " ")
                handle.write(f"{source}\t{reject.line_number}\t{reject.text}\t{reject.reason}\n"
                             .encode())

            plan = idplan.build(out_dir, paths, names, plan_key, record, parse_column(column))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out_dir / REJECTS_NAME)
    return plan


def _absent_dirs(directory: Path) -> list[Path]:
    """``directory`` and those of its parents that don't exist yet, innermost first."""
    absent = []
    while not directory.exists() and directory != directory.parent:
        absent.append(directory)
        directory = directory.parent
    return absent


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def prepare(config: DownloadConfig) -> PreparedRun:
    """Get the directory ready to resume or start; nothing has been sent yet."""
    out_dir = config.work_dir
    created = _absent_dirs(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the output directory {out_dir}: {exc.strerror}") from None
    lock = RunLock(out_dir)
    lock.acquire()
    try:
        return _prepare_locked(config, lock, created)
    except BaseException as exc:
        lock.release()
        if isinstance(exc, InputError | ConfigError):  # a bad input leaves no empty --out
            _remove_empty(created)
        raise


def _prepare_locked(config: DownloadConfig, lock: RunLock, created: list[Path]) -> PreparedRun:
    out_dir = config.work_dir
    if config.restart and (moved := move_aside(out_dir, config.out_dir)) is not None:
        (moved / LOCK_NAME).unlink(missing_ok=True)  # our lock moved away with the old run
        out_dir.mkdir(parents=True, exist_ok=True)
        created.insert(0, out_dir)
        lock.acquire()
    if config.inputs.count(STDIN) > 1:
        raise ConfigError("stdin (-) can be given only once as input")
    names = config.inputs
    spools = spool_files(config)
    incoming: dict[int, Path] = {}
    try:  # until the input proved good, new copies sit beside the old ones
        for position, target in spools.items():
            incoming[position] = _spool(names[position], target)
        paths = tuple(str(incoming.get(position, name)) for position, name in enumerate(names))
        inputs = [{"name": name, "digest": file_digest(path)}
                  for name, path in zip(names, paths, strict=True)]
        params = output_params(config)
        digests = [entry["digest"] for entry in inputs]
        fingerprint = ckpt.fingerprint(params, digests)
        existing = ckpt.load(out_dir)
        if existing is not None:
            ckpt.check_compatible(existing, params, inputs, fingerprint)
            state = existing
        else:
            state = Checkpoint(fingerprint=fingerprint, params=params, inputs=inputs)
        # the column is in the plan's key too: a killed first run has no checkpoint yet
        plan_key = digests + ([f"column={config.column}"] if config.column is not None else [])
        plan = _read_input(out_dir, paths, names, plan_key, config.column)
    except BaseException:
        for path in incoming.values():  # keep an old run's copies, drop the new ones
            path.unlink(missing_ok=True)
        raise
    for position, path in incoming.items():
        os.replace(path, spools[position])
    state.run_started_at = time.time()  # saved with the first commit of this run
    state.run_ids_at_start = state.ids_done
    store = OutputStore(out_dir, config.shards, state, plan.requested,
                        gzipped=config.compress == "gzip", tsv=config.format == "tsv")
    store.open()
    return PreparedRun(plan, state, store, existing is not None, lock)


@dataclass(frozen=True)
class DryRun:
    """What a run would do, from the input alone (``fetch --dry-run``)."""

    counts: InputCounts
    batches: int
    task_batches: int
    task_ids: int
    requests_per_s: float
    seconds: float


def dry_run(config: DownloadConfig, rejects: list[Reject] | None = None) -> DryRun:
    """Read and validate the input and work out batches and time; writes and sends nothing."""
    counts, _ = scan_ids(config.inputs, config.inputs,
                         rejects.append if rejects is not None else None,
                         parse_column(config.column))
    task_batches, task_ids = config.task.share(counts.requested, config.batch_size)
    pages_per_batch = -(-min(config.batch_size, max(counts.requested, 1)) // config.page_size)
    rate = config.effective_requests_per_second
    return DryRun(counts, -(-counts.requested // config.batch_size), task_batches, task_ids,
                  rate, task_batches * pages_per_batch / rate)
