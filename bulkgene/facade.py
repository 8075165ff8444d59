"""``bulkgene.fetch`` and ``await bulkgene.fetch_async``: GeneIDs in, records or a frame out.

The one-call API for notebooks and pipelines, in the style of mygene's ``querymany`` and
httpx's sync/async twins. Both run ``bulkgene.download`` (the CLI's pipeline: the same
budget leases, checkpoint and exactly-once guarantee) into a directory, then read it back
with ``bulkgene.open``. Without ``out`` the directory is a cache entry named after the IDs
and the options, so asking again (after a kill, a restarted kernel) resumes or reuses it.

``fetch`` is safe where an event loop already runs (Jupyter): it then runs the download
in a thread with its own loop instead of calling ``asyncio.run`` inside the running one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from bulkgene import durable
from bulkgene.config import ApiQuery, DownloadConfig, NetworkSpec, OutputSpec, Secret
from bulkgene.errors import ConfigError
from bulkgene.layout import LIBRARY_IDS_NAME
from bulkgene.model import Snapshot
from bulkgene.results.reader import RunResults

_PROGRESS_INTERVAL_S = 1.0

# fetch's options -> (config group, field); the CLI's names where they differ
_OPTIONS: dict[str, tuple[str, str]] = {
    "api_key": ("network", "api_key"),
    "base_url": ("network", "base_url"),
    "rate": ("network", "requests_per_second"),
    "concurrency": ("network", "concurrency"),
    "budget_dir": ("network", "budget_dir"),
    "endpoint": ("query", "endpoint"),
    "returned_content": ("query", "returned_content"),
    "page_size": ("query", "page_size"),
    "record": ("output", "record"),
    "compress": ("output", "compress"),
    "shards": ("output", "shards"),
    "batch_size": ("output", "batch_size"),
    "column": ("top", "column"),
    "restart": ("top", "restart"),
}
_OWN = ("as_frame", "fields", "with_missing", "progress")
Progress = bool | Callable[[Snapshot], None]


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bulkgene" / "runs"


@dataclass(frozen=True)
class _Inputs:
    """What to fetch: ID files, or GeneIDs given in memory (written to a file in ``out``)."""

    files: tuple[str, ...]
    ids_text: bytes | None  # the IDs as lines, for in-memory input


def _is_gene_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().isdigit()


def _inputs(ids: Any) -> _Inputs:
    """GeneIDs (ints or digit strings) or ID files (paths), as the user gave them."""
    if isinstance(ids, (str, PathLike)) and not _is_gene_id(ids):
        return _Inputs((os.fspath(ids),), None)
    if isinstance(ids, (int, str)):
        ids = [ids]
    if isinstance(ids, (bytes, dict)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be GeneIDs (a list of ints or digit strings) or the path "
                        f"of an ID file, not {type(ids).__name__}")
    items = list(ids)
    if items and all(_is_gene_id(item) for item in items):
        return _Inputs((), "".join(f"{str(item).strip()}\n" for item in items).encode())
    if items and all(isinstance(item, (str, PathLike)) for item in items):
        return _Inputs(tuple(os.fspath(item) for item in items), None)
    odd = next((item for item in items if not _is_gene_id(item)), None)
    raise TypeError(f"ids must all be GeneIDs (ints or digit strings) or all ID file paths; "
                    f"{odd!r} is neither a GeneID nor, among GeneIDs, a path" if items else
                    "ids is empty: give at least one GeneID")


def _file_digest(path: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        valid = ", ".join(sorted([*_OPTIONS, *_OWN, "out"]))
        raise TypeError(f"bulkgene.fetch() got unknown keyword argument(s) "
                        f"{', '.join(map(repr, unknown))}; valid ones: {valid}")


def _config(inputs: _Inputs, out: str | PathLike[str] | None, options: dict[str, Any],
            progress_s: float) -> DownloadConfig:
    groups: dict[str, dict[str, Any]] = {"network": {}, "query": {}, "output": {}, "top": {}}
    for name, value in options.items():
        group, field_name = _OPTIONS[name]
        groups[group][field_name] = value
    if isinstance(groups["network"].get("api_key"), str):
        groups["network"]["api_key"] = Secret(groups["network"]["api_key"])
    query = ApiQuery(**groups["query"])
    output = OutputSpec(**groups["output"])
    network = NetworkSpec(**groups["network"])
    if out is None:
        # the cache entry is named after what decides the output: the IDs and the options
        material = [inputs.ids_text or b"", *[_file_digest(f).encode() for f in inputs.files],
                    repr(sorted((k, str(v)) for k, v in options.items()
                                if k not in ("api_key", "rate", "concurrency", "budget_dir",
                                             "restart"))).encode()]
        key = hashlib.blake2b(b"\0".join(material), digest_size=12).hexdigest()
        out_dir = _cache_root() / key
    else:
        out_dir = Path(os.fspath(out))
    files = inputs.files
    if inputs.ids_text is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        ids_file = out_dir / LIBRARY_IDS_NAME
        if not ids_file.exists() or durable.read_bytes(ids_file) != inputs.ids_text:
            durable.write_atomically(ids_file, inputs.ids_text)
        files = (str(ids_file),)
    return DownloadConfig(inputs=files, out_dir=out_dir, query=query, output=output,
                          network=network, progress_interval_s=progress_s, **groups["top"])


def _progress_callback(progress: Progress) -> tuple[Callable[[Snapshot], None] | None,
                                                    Callable[[], None]]:
    """The download's progress callback for ``progress``, and what closes it."""
    if callable(progress):
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


def _result(out_dir: Path, as_frame: bool, fields: list[str] | tuple[str, ...] | None,
            with_missing: bool) -> Any:
    run = RunResults(out_dir)
    if as_frame:
        return run.to_frame(fields, with_missing=with_missing)
    if fields is not None or with_missing:
        raise ConfigError("fields and with_missing shape a frame: pass as_frame=True (records "
                          "are the API's own objects), or read bulkgene.open(out) yourself")
    return list(run.records())


async def fetch_async(ids: Any, out: str | PathLike[str] | None = None, *,
                      as_frame: bool = False, fields: list[str] | tuple[str, ...] | None = None,
                      with_missing: bool = False, progress: Progress = True,
                      **options: Any) -> Any:
    """Fetch the gene reports of ``ids`` and return them; the async twin of ``fetch``.

    Await it from code that runs in an event loop (a notebook cell can ``await`` it too).
    """
    _check_options(options)
    inputs = _inputs(ids)
    on_progress, close = _progress_callback(progress)
    config = await asyncio.to_thread(_config, inputs, out, options,
                                     _PROGRESS_INTERVAL_S if progress else 0)
    from bulkgene.run.download import download  # aiohttp loads here, not on import bulkgene

    try:
        await download(config, on_progress=on_progress)
    finally:
        close()
    return await asyncio.to_thread(_result, config.out_dir, as_frame, fields, with_missing)


def fetch(ids: Any, out: str | PathLike[str] | None = None, *, as_frame: bool = False,
          fields: list[str] | tuple[str, ...] | None = None, with_missing: bool = False,
          progress: Progress = True, **options: Any) -> Any:
    """Fetch the gene reports of ``ids`` (GeneIDs, or ID file paths) and return them.

    Returns the records as the API sent them (report matches, or genes with
    ``record="gene"``), or with ``as_frame=True`` a pandas DataFrame of ``fields`` (NCBI
    mnemonics and ``query``; ``bulkgene export --list-fields``). ``out`` is the run's
    directory (a str or Path); without it a cache directory is used, and asking again
    resumes or reuses it. ``progress``: a tqdm bar when tqdm is installed, or a callable
    that hears a ``bulkgene.Snapshot`` every second. Other options are the CLI's:
    api_key, base_url, rate, endpoint, returned_content, record, compress, shards, ...

    >>> genes = bulkgene.fetch([7157, 672], base_url=EMULATOR, progress=False)
    >>> sorted(g["gene"]["symbol"] for g in genes)
    ['BRCA1', 'TP53']

    Raises a ``bulkgene.BulkgeneError`` (with ``.summary``) when the run can't finish.
    """
    _check_options(options)
    coroutine = fetch_async(ids, out, as_frame=as_frame, fields=fields,
                            with_missing=with_missing, progress=progress, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # an event loop runs in this thread (Jupyter): asyncio.run can't nest, so the download
    # runs in a thread of its own with its own loop, and this one waits for it
    return _run_in_thread(coroutine)


def _run_in_thread(coroutine: Any) -> Any:
    loop = asyncio.new_event_loop()
    task_box: list[asyncio.Task[Any]] = []

    def run() -> Any:
        asyncio.set_event_loop(loop)
        task = loop.create_task(coroutine)
        task_box.append(task)
        try:
            return loop.run_until_complete(task)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bulkgene") as pool:
        future = pool.submit(run)
        try:
            return future.result()
        except KeyboardInterrupt:
            # stop the download as a kill would (committed work stays); then re-raise
            if task_box:
                loop.call_soon_threadsafe(task_box[0].cancel)
            concurrent.futures.wait([future])
            raise
