"""Everything before the first request: the output directory, the input's identity and counts, resume state.

Runs synchronously (in a worker thread): move an old run aside on ``--restart``, copy stdin
and every other input that can be read only once (a pipe, ``<(zcat ids.gz)``, a FIFO) to a
spool file so it can be fingerprinted and re-read, digest the inputs, refuse a mismatched
checkpoint, count the input and write ``rejects.tsv``, cut files back. An input error leaves
nothing behind: no spool, no temporary file, no directory this run created.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulkgene import durable, layout
from bulkgene.config import DownloadConfig
from bulkgene.errors import ConfigError, StateError
from bulkgene.input import plan as idplan
from bulkgene.input.lines import STDIN, Reject, file_digest, parse_column
from bulkgene.input.plan import IdPlan
from bulkgene.input.spool import needs_spool, spool
from bulkgene.layout import REJECTS_HEADER, REJECTS_NAME, STDIN_SPOOL_NAME
from bulkgene.output import checkpoint as ckpt
from bulkgene.output import rewrite
from bulkgene.output.checkpoint import Checkpoint, InputFile
from bulkgene.output.claims import (
    GeneClaims,
    claims_generation,
    current_generation,
    layout_key,
)
from bulkgene.output.contested import ContestedGenes
from bulkgene.output.lock import RunLock, acquire_waiting
from bulkgene.output.store import OutputStore
from bulkgene.run import growth, restart
from bulkgene.run.array import unsplit_lock_hint

log = logging.getLogger("bulkgene")


@dataclass
class PreparedRun:
    """The input, the directory and the state a download starts from."""

    plan: IdPlan
    checkpoint: Checkpoint
    store: OutputStore
    resumed: bool
    lock: RunLock


def _only_the_server_changed_on_nothing(existing: Checkpoint, params: dict[str, Any]) -> bool:
    """A first run against a wrong or unreachable server left a directory with no answer in
    it: another server may take it over (with data in it, the server is its identity)."""
    changed = {name for name in set(params) | set(existing.params)
               if existing.params.get(name) != params.get(name)}
    return (changed == {"server"} and existing.committed_batches == 0 and not existing.failed
            and not any(existing.file_lengths.values()))


def _refuse_orphan_data(out_dir: Path) -> None:
    """Output files without a checkpoint would be truncated by a fresh start: refuse instead."""
    data = sorted(p.name for p in out_dir.iterdir()
                  if (layout.is_shard_name(p.name) or p.name in _DATA_NAMES)
                  and not p.is_symlink() and p.is_file() and p.stat().st_size > 0)
    if data:
        shown = ", ".join(data[:5]) + (", ..." if len(data) > 5 else "")
        raise StateError(
            f"{out_dir} holds bulkgene output ({shown}) but no checkpoint.json to resume it "
            "from, so bulkgene can't tell what in it is complete and won't overwrite it. Pass "
            "--restart to move it aside (nothing is deleted) and start over, or use another "
            "--out directory.")


_DATA_NAMES = frozenset({layout.MISSING_NAME, layout.REPLACED_NAME})


def resume_state(config: DownloadConfig, inputs: list[InputFile] | None,
                 existing: Checkpoint | None) -> Checkpoint | None:
    """The checkpoint (``existing``, as loaded) that a run of ``inputs`` resumes, None if it
    starts afresh; raises what the run must refuse: other settings or input, bulkgene data
    without a checkpoint. Writes nothing: ``fetch --dry-run`` asks it too, with ``inputs``
    None when it can't read them twice (only the settings are compared then)."""
    out_dir = config.work_dir
    params = config.fingerprint_params()
    if existing is not None and _only_the_server_changed_on_nothing(existing, params):
        log.info("the run in %s never got an answer from %s (nothing committed): "
                 "starting it afresh against %s", out_dir, existing.params.get("server"),
                 params["server"])
        existing = None
    if existing is None:
        if out_dir.is_dir():
            _refuse_orphan_data(out_dir)
        return None
    inputs = existing.inputs if inputs is None else inputs
    # a run that grew is the same run: its fingerprint covers the growths too
    digests = [entry.digest for entry in inputs]
    ckpt.check_compatible(existing, params, inputs,
                          ckpt.fingerprint(params, digests + existing.segments),
                          _another_list_advice(config, existing, params, digests))
    return existing


def spool_files(config: DownloadConfig) -> dict[int, Path]:
    """The inputs (by position) that are copied into the directory, and their copies.

    The copy is what a resumed run reads: ``bulkgene fetch DIR/stdin.spool ...`` resumes a
    run whose input was piped in, without piping the same bytes again.
    """
    return {position: config.work_dir / (STDIN_SPOOL_NAME if name == STDIN
                                     else f"input-{position + 1}.spool")
            for position, name in enumerate(config.inputs) if needs_spool(name)}


def staged_lists(config: DownloadConfig) -> dict[int, Path]:
    """The inputs (by position) that are lists ``bulkgene.fetch`` staged in the directory,
    to become its requested-ids.txt once this run is known to be the directory's."""
    staged = {}
    for position, name in enumerate(config.inputs):
        path = Path(name)
        if layout.staged_ids_pid(path.name) is not None and path.parent == config.work_dir:
            staged[position] = path
    return staged


def _refuse_another_list(directory: Path, plan_key: list[str]) -> None:
    """An array's tasks share DIR's plan: a task given another input list is refused."""
    header = idplan.read_header(directory)
    if header is not None and header.digests != plan_key:
        raise StateError(
            f"the tasks of the array in {directory} fetch another list (its input plan was "
            "made from files with other contents): every task of an array must be given the "
            "same input. Use another --out for this list.")


def plan_directory(config: DownloadConfig) -> Path:
    """Where the input's plan (and rejects.tsv) lives: DIR, shared by all tasks of an array."""
    return config.out_dir if config.task.count > 1 else config.work_dir


def _plan(config: DownloadConfig, paths: tuple[str, ...], names: tuple[str, ...],
          plan_key: list[str]) -> IdPlan:
    """The plan of the input, parsed once per list: an array's tasks share one in DIR, made
    by whichever comes first while the others wait for it."""
    directory = plan_directory(config)
    if directory == config.work_dir:
        return _read_input(directory, paths, names, plan_key, config)
    lock = RunLock(directory)
    acquire_waiting(lock, timeout_s=_PLAN_WAIT_S)
    try:
        _refuse_another_list(directory, plan_key)
        return _read_input(directory, paths, names, plan_key, config)
    finally:
        lock.release()


_PLAN_WAIT_S = 3600.0  # parsing all of NCBI Gene's 60 M IDs takes minutes, not hours


def _read_input(out_dir: Path, paths: tuple[str, ...], names: tuple[str, ...],
                plan_key: list[str], config: DownloadConfig) -> IdPlan:
    """The input's plan: reused when it matches, else made while writing rejects.tsv."""
    if (out_dir / REJECTS_NAME).exists() and (plan := idplan.load(out_dir, plan_key)):
        return plan
    with durable.atomic_file(out_dir / REJECTS_NAME) as handle:  # removed again on errors
        handle.write(REJECTS_HEADER)

        def record(reject: Reject) -> None:
            handle.write(reject.row())

        plan = idplan.build(out_dir, paths, names, plan_key, record,
                            parse_column(config.column), config.network.secret)
    return plan


def _absent_dirs(directory: Path) -> list[Path]:
    """``directory`` and those of its parents that don't exist yet, innermost first."""
    absent = []
    while not directory.exists() and directory != directory.parent:
        absent.append(directory)
        directory = directory.parent
    return absent


def _run_directories(config: DownloadConfig) -> None:
    """An array task's own directory made (or found) below DIR, never through a link, with
    DIR's group bits; DIR's shared .claims/ and taxa/ refused if they are links."""
    if config.work_dir != config.out_dir:
        durable.make_run_directories(config.out_dir, config.work_dir)
    for name in (layout.CLAIMS_DIR_NAME, layout.TAXA_DIR_NAME):
        if (config.out_dir / name).is_symlink():
            durable.make_run_directories(config.out_dir, config.out_dir / name)  # says why


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def prepare(config: DownloadConfig, cancel: threading.Event | None = None) -> PreparedRun:
    """Get the directory ready to resume or start; nothing has been sent yet.

    ``cancel`` (set by SIGTERM/SIGINT) stops the copying of a read-once input.
    """
    out_dir = config.work_dir
    created = _absent_dirs(out_dir)
    try:
        config.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the output directory {config.out_dir}: "
                         f"{exc.strerror}") from None
    try:
        _run_directories(config)
    except BaseException:
        _remove_empty(created)
        raise
    lock = RunLock(out_dir)
    try:
        lock.acquire()
    except StateError as exc:
        _remove_empty(created)
        hint = unsplit_lock_hint() if config.task.count == 1 else ""
        if not hint:
            raise
        raise StateError(f"{exc}{hint}") from None
    try:
        return _prepare_locked(config, lock, created, cancel)
    except BaseException:
        lock.release()
        _remove_empty(created)  # a refused run leaves no empty directory of its own behind
        raise


def _prepare_locked(config: DownloadConfig, lock: RunLock, created: list[Path],
                    cancel: threading.Event | None) -> PreparedRun:
    out_dir = config.work_dir
    old_generation = None
    if config.restart:
        restart.refuse_before_moving(config)
        old_generation = restart.old_claims_generation(out_dir)
    if config.restart and (moved := restart.move_aside(out_dir, config.out_dir)) is not None:
        log.info("--restart: moved the old run in %s aside to %s (nothing was deleted)",
                 out_dir, moved)
        (moved / layout.LOCK_NAME).unlink(missing_ok=True)  # our lock moved away with the old run
        if not out_dir.exists():
            config.out_dir.mkdir(parents=True, exist_ok=True)
            _run_directories(config)
            created.insert(0, out_dir)
        lock.acquire()
        for path in staged_lists(config).values():  # the new list belongs to the new run
            if not path.exists() and (moved / path.name).exists():
                os.replace(moved / path.name, path)
    if not (out_dir / layout.CHECKPOINT_NAME).exists():
        restart.refuse_other_files(config)
    if config.inputs.count(STDIN) > 1:
        raise ConfigError("stdin (-) can be given only once as input")
    restart.refuse_mixed_runs(config)
    if config.add or config.from_directory:
        return _prepare_grown(config, lock)
    spools = spool_files(config)
    incoming: dict[int, Path] = {}
    # a list bulkgene.fetch staged beside requested-ids.txt replaces it only now, with the
    # lock held, and only once the checks below pass: a refused run leaves the old list
    staged = staged_lists(config)
    incoming.update(staged)
    names = tuple(str(out_dir / layout.LIBRARY_IDS_NAME) if position in staged else name
                  for position, name in enumerate(config.inputs))
    targets = {**spools, **dict.fromkeys(staged, out_dir / layout.LIBRARY_IDS_NAME)}
    try:  # until the input proved good, new copies sit beside the old ones
        for position, target in spools.items():
            incoming[position] = target.with_name(target.name + ".new")
            spool(names[position], incoming[position], cancel)
        paths = tuple(str(incoming.get(position, name)) for position, name in enumerate(names))
        inputs = [InputFile(name, file_digest(path))
                  for name, path in zip(names, paths, strict=True)]
        params = config.fingerprint_params()
        digests = [entry.digest for entry in inputs]
        existing = ckpt.load(out_dir)
        if existing is not None:  # a report rewrite a kill interrupted is finished first
            existing = rewrite.finish(out_dir, existing)
        existing = resume_state(config, inputs, existing)
        if existing is not None:
            _warn_if_left_out_of_a_restart(config, existing)
        state = existing or Checkpoint(
            fingerprint=ckpt.fingerprint(params, digests), params=params, inputs=inputs,
            claims_generation=(claims_generation(config.out_dir, old_generation)
                               if config.task.count > 1 else 0))
        # the column is in the plan's key too: a killed first run has no checkpoint yet
        plan_key = digests + ([f"column={config.column}"] if config.column is not None else [])
        plan = _plan(config, paths, names, plan_key)
    except BaseException:
        for path in incoming.values():  # keep an old run's copies, drop the new ones
            path.unlink(missing_ok=True)
        raise
    for position, path in incoming.items():
        os.replace(path, targets[position])
    committed: Checkpoint | None = existing
    if len(state.segments) < len(plan.segments):  # the run grew since this task last ran
        state = committed = growth.absorb(out_dir, state, plan, config.task)
    return _ready(config, plan, plan_key, state, committed, lock)


def _warn_if_left_out_of_a_restart(config: DownloadConfig, state: Checkpoint) -> None:
    """A task resuming its run from before the array's other tasks were restarted."""
    if config.task.count == 1:
        return
    newest = current_generation(config.out_dir / layout.CLAIMS_DIR_NAME)
    if state.claims_generation < newest:
        log.warning("other tasks of the array in %s were restarted since this task's run "
                    "began: it goes on with its old run, and a gene merged from IDs of both "
                    "may be written twice or by none (`bulkgene verify` fails). --restart this "
                    "task too", config.out_dir)


def _another_list_advice(config: DownloadConfig, existing: Checkpoint, params: dict[str, Any],
                         digests: list[str]) -> str | None:
    """When only the input differs from the run's: what --add would do with it (None: the
    usual advice)."""
    if existing.params != params or [entry.digest for entry in existing.inputs] == digests:
        return None
    names = " ".join(config.inputs)
    try:
        finished = not growth.unfinished(config.out_dir)
    except StateError:
        finished = False
    add = (f"To add the GeneIDs of {names} to this finished run, pass --add: only those it "
           "doesn't have are fetched. " if finished else
           f"To add the GeneIDs of {names} to this run, finish it first (the original input "
           "and options), then pass --add. ")
    return (f"{add}Re-run with the original input and options to resume it, or pass "
            "--restart to move the old run aside (nothing is deleted) and start over, or use "
            "another --out directory")


def _ready(config: DownloadConfig, plan: IdPlan, plan_key: list[str], state: Checkpoint,
           committed: Checkpoint | None, lock: RunLock) -> PreparedRun:
    """The store opened on the committed state (files cut back to it), the run's start noted."""
    out_dir = config.work_dir
    state.run_started_at = time.time()  # saved with the first commit of this run
    state.run_ids_at_start = state.ids_done
    state.base_url = config.network.api_root
    claims_dir = config.out_dir / layout.CLAIMS_DIR_NAME / layout_key(
        plan_key, config.output.batch_size, config.task.count, config.network.server,
        state.claims_generation)
    claims = (GeneClaims(claims_dir, config.task.index, config.out_dir)
              if config.task.count > 1 else None)
    siblings = [config.out_dir / layout.task_dir_name(index)
                for index in range(config.task.count) if index != config.task.index]
    contested = ContestedGenes(claims_dir, config.task.index, out_dir,
                               siblings if config.task.count > 1 else (), config.out_dir)
    store = OutputStore(out_dir, config.output.shards, plan.requested,
                        gzipped=config.output.compress == "gzip", tsv=config.query.format == "tsv",
                        claims=claims, contested=contested)
    store.open(committed)
    if committed is None:
        # state before any data: a kill before the first commit leaves a directory that
        # resumes (cut back to nothing), never data without a checkpoint
        state.updated_at = time.time()
        ckpt.save(out_dir, state)
    return PreparedRun(plan, state, store, committed is not None, lock)


def _prepare_grown(config: DownloadConfig, lock: RunLock) -> PreparedRun:
    """A run that goes on from its own plan: with IDs added (``--add``), or with nothing new
    from the command line (``retry``, ``--follow-replaced``, which grew it before)."""
    out_dir = config.work_dir
    existing = ckpt.load(out_dir)
    if existing is None:
        doing = "add to" if config.add else "go on with"
        raise StateError(f"{out_dir} holds no run to {doing} (no checkpoint.json): fetch a "
                         "list into it first (without --add)")
    growth.check_server(out_dir, existing, config.network)
    existing = rewrite.finish(out_dir, existing)
    params = config.fingerprint_params()
    digests = [entry.digest for entry in existing.inputs]
    ckpt.check_compatible(
        existing, params, existing.inputs, ckpt.fingerprint(params, digests + existing.segments),
        "--add goes on with the run as it was fetched: give it the run's own options (and "
        "no others that change what is written); nothing was changed" if config.add else
        "Nothing was changed.")
    plan_dir = plan_directory(config)
    with growth.plan_lock(plan_dir, out_dir):
        plan = growth.load_plan(plan_dir, existing)
        if config.add:
            growth.check_added_inputs(config.inputs)
            plan = growth.grow_add(config, plan)
    state = growth.absorb(out_dir, existing, plan, config.task)
    plan_key = digests + ([f"column={config.column}"] if config.column is not None else [])
    return _ready(config, plan, plan_key, state, state, lock)
