"""``bulkgene.fetch`` and ``await bulkgene.fetch_async``: GeneIDs in, records or a frame out.

The one-call API for notebooks and pipelines, in the style of mygene's ``querymany`` and
httpx's sync/async twins. Both run ``bulkgene.download`` (the CLI's pipeline: the same
budget leases, checkpoint and exactly-once guarantee) into a directory, then read it back
with ``bulkgene.open``: rows in the order of the IDs given, one per ID. Without ``out`` the
directory is a cache entry named after the IDs and the options, so asking again (after a
kill, a restarted kernel) resumes or reuses it. A run that could not fetch every ID raises
(``IncompleteRun``) unless ``partial=True``; Ctrl-C stops it as the CLI's would, then
raises KeyboardInterrupt.

``fetch`` is safe where an event loop already runs (Jupyter): it then runs the download
in a thread with its own loop instead of calling ``asyncio.run`` inside the running one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from bulkgene import durable, layout
from bulkgene.config import ApiQuery, DownloadConfig, NetworkSpec, OutputSpec, RetryPolicy, Secret
from bulkgene.errors import (
    BulkgeneError,
    ConfigError,
    FingerprintMismatch,
    IncompleteRun,
    MissingExtra,
    in_library_words,
)
from bulkgene.facade.arguments import (
    OPTIONS,
    Inputs,
    Progress,
    check_keywords,
    check_types,
    read_ids,
    with_environment,
)
from bulkgene.facade.interrupts import run_in_thread, sigint_stops
from bulkgene.model import Snapshot, Summary
from bulkgene.processes import process_alive
from bulkgene.results.reader import RunResults
from bulkgene.results.table import choose_columns
from bulkgene.run.interrupt import Interrupter

_PROGRESS_INTERVAL_S = 1.0
# options that don't change what lands in the directory: not part of a cache entry's name
_NOT_IN_CACHE_KEY = frozenset({"api_key", "rate", "concurrency", "budget_dir", "restart",
                               "max_attempts"})
Fields = list[str] | tuple[str, ...] | str | None


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bulkgene" / "runs"


@dataclass(frozen=True)
class _Request:
    """One fetch, its arguments checked: what to fetch, where, and the result's shape."""

    inputs: Inputs
    out: str | PathLike[str] | None
    options: dict[str, Any]
    as_frame: bool
    fields: Fields
    with_missing: bool
    explode: str | None
    partial: bool
    progress: Progress


def _request(ids: Any, out: Any, options: dict[str, Any], *, as_frame: Any, fields: Any,
             with_missing: Any, explode: Any, partial: Any, progress: Any) -> _Request:
    """The arguments checked before anything is sent or written: a mistake found after a
    long download costs the download."""
    try:
        return _checked(ids, out, options, as_frame=as_frame, fields=fields,
                        with_missing=with_missing, explode=explode, partial=partial,
                        progress=progress)
    except BulkgeneError as exc:
        raise in_library_words(exc) from None


def _checked(ids: Any, out: Any, options: dict[str, Any], *, as_frame: Any, fields: Any,
             with_missing: Any, explode: Any, partial: Any, progress: Any) -> _Request:
    check_keywords(options)
    check_types(out, options, as_frame, False if with_missing is None else with_missing,
                partial, progress)
    inputs = read_ids(ids)
    if explode is not None and not isinstance(explode, str):
        raise TypeError(f"explode must be a field name (str), not {type(explode).__name__}")
    if as_frame:
        try:
            import pandas  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError:
            raise MissingExtra("pandas and pyarrow", "pandas",
                               "bulkgene.fetch(as_frame=True)") from None
        # an unknown field, or one the reports asked for can't fill, is named now
        choose_columns(fields, str(options.get("returned_content") or "COMPLETE"))
    elif fields is not None or with_missing is not None or explode is not None:
        raise ConfigError("fields, with_missing and explode shape a frame: pass as_frame=True "
                          "(records are the API's own objects), or read bulkgene.open(out) "
                          "yourself")
    return _Request(inputs, out, with_environment(options), as_frame, fields,
                    True if with_missing is None else with_missing, explode, partial, progress)


def _file_digest(path: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _out_dir(request: _Request) -> Path:
    if request.out is not None:
        return Path(os.fspath(request.out))
    # the cache entry is named after what decides the output: the IDs and the options
    material = [request.inputs.ids_text or b"",
                *[_file_digest(f).encode() for f in request.inputs.files],
                repr(sorted((k, str(v)) for k, v in request.options.items()
                            if k not in _NOT_IN_CACHE_KEY)).encode()]
    return _cache_root() / hashlib.blake2b(b"\0".join(material), digest_size=12).hexdigest()


def _remove_stale_staged(out_dir: Path) -> None:
    """Lists staged by fetches that were killed before their run took them in."""
    with contextlib.suppress(OSError):
        for entry in out_dir.iterdir():
            pid = layout.staged_ids_pid(entry.name)
            if pid is not None and not process_alive(pid):
                entry.unlink(missing_ok=True)


def _id_file(out_dir: Path, ids_text: bytes) -> Path:
    """The file the run reads the in-memory IDs from: requested-ids.txt when it holds them
    already, else a new file beside it that the run adopts once it holds the directory's
    lock and matches its checkpoint (a refused run leaves the old list as it was)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staged(out_dir)
    current = out_dir / layout.LIBRARY_IDS_NAME
    with contextlib.suppress(OSError, BulkgeneError):
        if current.is_file() and durable.read_bytes(current) == ids_text:
            return current
    staged = out_dir / layout.staged_ids_name(os.getpid(), secrets.token_hex(6))
    with durable.create_new(staged) as handle:
        handle.write(ids_text)
        handle.flush()
        os.fsync(handle.fileno())
    return staged


def _config(request: _Request, progress_s: float) -> DownloadConfig:
    groups: dict[str, dict[str, Any]] = {"network": {}, "retry": {}, "query": {}, "output": {},
                                         "top": {}}
    for name, value in request.options.items():
        group, field_name = OPTIONS[name]
        if value is not None:
            groups[group][field_name] = value
    if isinstance(groups["network"].get("api_key"), str):
        groups["network"]["api_key"] = Secret(groups["network"]["api_key"])
    if groups["retry"]:
        groups["network"]["retry"] = RetryPolicy(**groups["retry"])
    query = ApiQuery(**groups["query"])
    output = OutputSpec(**groups["output"])
    network = NetworkSpec(**groups["network"])
    out_dir = _out_dir(request)
    files = request.inputs.files
    if request.inputs.ids_text is not None:
        files = (str(_id_file(out_dir, request.inputs.ids_text)),)
    return DownloadConfig(inputs=files, out_dir=out_dir, query=query, output=output,
                          network=network, progress_interval_s=progress_s, **groups["top"])


def _progress_callback(progress: Progress) -> tuple[Callable[[Snapshot], None] | None,
                                                    Callable[[], None]]:
    """The download's progress callback for ``progress``, and what closes it."""
    if callable(progress) and not isinstance(progress, bool):
        return progress, lambda: None
    if not progress:
        return None, lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None, lambda: None  # the download logs a line now and then instead
    bar: Any = None
    lock = threading.Lock()

    def show(snapshot: Snapshot) -> None:
        nonlocal bar
        with lock:
            if bar is None:
                bar = tqdm(total=snapshot.ids_total, unit="ID", desc="bulkgene")
            bar.n = snapshot.ids_done
            bar.set_postfix(found=snapshot.found, requests=snapshot.requests, refresh=False)
            bar.refresh()

    def close() -> None:
        with lock:
            if bar is not None:
                bar.close()

    return show, close


def _stopped(summary: Summary, out_dir: Path) -> KeyboardInterrupt:
    stop = KeyboardInterrupt(
        f"bulkgene.fetch stopped by Ctrl-C; what finished is committed in {out_dir} "
        f"({summary.line()}). Call bulkgene.fetch again with the same arguments to resume, or "
        f"read what is there with bulkgene.open({str(out_dir)!r}, partial=True)")
    stop.summary = summary  # type: ignore[attr-defined]  # the account, as errors carry it
    return stop


def _unfinished(summary: Summary, out_dir: Path) -> IncompleteRun:
    failed = (f"{summary.batches_failed} batches ({summary.failed} GeneIDs) failed after every "
              "retry (the log says why)" if summary.failed else
              f"{summary.pending} GeneIDs are still pending")
    error = IncompleteRun(
        f"the run in {out_dir} could not fetch every GeneID: {failed}; {summary.line()}. "
        "Call bulkgene.fetch again with the same arguments: it fetches exactly those (what was "
        "fetched is kept); or pass partial=True to take what was fetched", [failed])
    error.summary = summary
    error.exit_code = summary.exit_code
    return error


def _result(out_dir: Path, request: _Request) -> Any:
    run = RunResults(out_dir, partial=request.partial)
    if request.as_frame:
        return run.to_frame(request.fields, explode=request.explode,
                            with_missing=request.with_missing, by_query=True)
    return list(run.records(list_order=True))


async def _fetch(request: _Request, interrupter: Interrupter) -> Any:
    from bulkgene.run.download import download  # aiohttp loads here, not on import bulkgene

    on_progress, close = _progress_callback(request.progress)
    progress_s = _PROGRESS_INTERVAL_S if request.progress else 0
    config = None
    try:
        config = await asyncio.to_thread(_config, request, progress_s)
        summary = await download(config, on_progress=on_progress, interrupter=interrupter)
        if summary.interrupted:
            raise _stopped(summary, config.out_dir)
        if not summary.complete and not request.partial:
            raise _unfinished(summary, config.out_dir)
        return await asyncio.to_thread(_result, config.out_dir, request)
    except BulkgeneError as exc:
        if isinstance(exc, FingerprintMismatch) and request.inputs.ids_text is not None:
            exc.args = (re.sub(r"the ID file\(s\) differ in content from the checkpoint's "
                               r"\(([^)]*)\)", r"the GeneIDs given are not the list this "
                               r"directory was fetched with (\1)", str(exc)),)
        raise in_library_words(exc) from None
    finally:
        close()
        if config is not None:
            _drop_staged(config)


def _drop_staged(config: DownloadConfig) -> None:
    """A staged list the run did not take in (it was refused) goes again."""
    for name in config.inputs:
        if layout.staged_ids_pid(Path(name).name) is not None:
            Path(name).unlink(missing_ok=True)


async def fetch_async(ids: Any, out: str | PathLike[str] | None = None, *,
                      as_frame: bool = False, fields: Fields = None,
                      with_missing: bool | None = None, explode: str | None = None,
                      progress: Progress = True, partial: bool = False,
                      **options: Any) -> Any:
    """Fetch the gene reports of ``ids`` and return them; the async twin of ``fetch``.

    Await it from code that runs in an event loop (a notebook cell can ``await`` it too).
    """
    request = _request(ids, out, options, as_frame=as_frame, fields=fields,
                       with_missing=with_missing, explode=explode, partial=partial,
                       progress=progress)
    interrupter = Interrupter()
    with sigint_stops(interrupter):
        return await _fetch(request, interrupter)


def fetch(ids: Any, out: str | PathLike[str] | None = None, *, as_frame: bool = False,
          fields: Fields = None, with_missing: bool | None = None, explode: str | None = None,
          progress: Progress = True, partial: bool = False, **options: Any) -> Any:
    """Fetch the gene reports of ``ids`` (GeneIDs, or ID file paths) and return them.

    Returns the records as the API sent them (report matches, or genes with
    ``record="gene"``) in the order of the IDs given, or with ``as_frame=True`` a pandas
    DataFrame as mygene's ``querymany(..., as_dataframe=True)`` shapes it: one row per
    GeneID given (a repeated one once), in that order, indexed by it (``query``), with
    ``fields`` as columns (NCBI mnemonics; ``bulkgene export --list-fields``) and, unless
    ``with_missing=False``, a row with its ``missing_reason`` for each GeneID NCBI has no
    record for. ``explode`` gives
    one row per value of a list field. ``out`` is the run's directory (a str or Path);
    without it a cache directory is used, and asking again resumes or reuses it.
    ``progress``: a tqdm bar when tqdm is installed, or a callable that hears a
    ``bulkgene.Snapshot`` every second. Other options are the CLI's: api_key, base_url,
    rate, endpoint, returned_content, record, compress, shards, max_attempts, ...;
    api_key, base_url and budget_dir default to NCBI_API_KEY, BULKGENE_BASE_URL and
    BULKGENE_BUDGET_DIR, as for the CLI.

    >>> genes = bulkgene.fetch([7157, 672], base_url=EMULATOR, progress=False)
    >>> [g["gene"]["symbol"] for g in genes]
    ['TP53', 'BRCA1']

    Raises ``bulkgene.IncompleteRun`` (with ``.summary``) when some GeneIDs could not be
    fetched (``partial=True`` returns what was), another ``bulkgene.BulkgeneError`` when the
    run can't go on, and KeyboardInterrupt after Ctrl-C stopped it (committed work stays:
    calling it again resumes).
    """
    request = _request(ids, out, options, as_frame=as_frame, fields=fields,
                       with_missing=with_missing, explode=explode, partial=partial,
                       progress=progress)
    interrupter = Interrupter()
    with sigint_stops(interrupter):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_fetch(request, interrupter))
        # an event loop runs in this thread (Jupyter): asyncio.run can't nest, so the
        # download runs in a thread of its own with its own loop, and this one waits for it
        return run_in_thread(_fetch(request, interrupter), interrupter)
