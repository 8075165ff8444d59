"""Where the gene_history comes from: a local file read as it is, or a URL downloaded once into the cache.

A URL's copy is reused for ``max_age_s`` (a day: NCBI rebuilds the file daily and dates it
anew even when unchanged, docs/ncbi-gene-history.md §2), then
revalidated with ``If-None-Match`` / ``If-Modified-Since`` (a 304 costs no body). A download
shows its progress, resumes a killed one with ``Range`` and ``If-Range`` when the server
honours them (a 200 instead starts over: what NCBI's HTTPS does was never recorded, §11),
retries a dropped connection, refuses a body over
``max_bytes``, and lands in the cache only once it is checked to be one whole gzip file: a
truncated or non-gzip body is an error that names the URL. When the server can't be reached
at all, a copy already in the cache is used with a warning rather than stopping the run.

This is not an NCBI Datasets request: it goes to NCBI's FTP host, not through the rate pacer
(whose budget is the API's), but like every request bulkgene makes it honours
``HTTPS_PROXY``/``NO_PROXY``, verifies TLS (``SSL_CERT_FILE`` honoured) and refuses to be
redirected from https to plain http.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urlsplit

import aiohttp

from bulkgene.errors import HistoryError, StateError
from bulkgene.history import DEFAULT_HISTORY_URL
from bulkgene.history.cache import CacheEntry, CopyMeta, PartMeta, Validators, default_cache_dir, gzip_problem
from bulkgene.history.rows import GZIP_MAGIC
from bulkgene.net.attempt import open_session, translate
from bulkgene.net.failures import TlsUnverified
from bulkgene.output.lock import RunLock, acquire_waiting
from bulkgene.version import __version__

log = logging.getLogger("bulkgene")

# far above the real file (hundreds of MB, docs/ncbi-gene-history.md §10), far below what a
# hostile server could fill
DEFAULT_MAX_BYTES = 4 << 30
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_CHUNK_BYTES = 1 << 16

Progress = Callable[[int, int | None], None]  # (bytes so far, bytes in all if known)
How = Literal["local", "cached", "not-modified", "downloaded", "resumed", "stale"]


@dataclass(frozen=True)
class HistorySource:
    """Where to read the gene_history from, and how a download behaves."""

    location: str = DEFAULT_HISTORY_URL  # a URL, or the path of a local file (gzip or not)
    cache_dir: Path | None = None  # None: ~/.cache/bulkgene ($XDG_CACHE_HOME honoured)
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age_s: float = 86400.0
    attempts: int = 5
    backoff_base_s: float = 1.0
    connect_timeout_s: float = 20.0
    read_timeout_s: float = 60.0
    lock_wait_s: float = 7200.0  # another process downloading the same file

    @property
    def is_url(self) -> bool:
        return urlsplit(self.location).scheme in ("http", "https")


@dataclass(frozen=True)
class LocalHistory:
    """The file to read, what to call it in messages, and how it was had."""

    path: Path
    name: str
    how: How


class _Retry(Exception):
    """A failure worth another attempt (a dropped connection, a 5xx, a cut body)."""


async def obtain(source: HistorySource, progress: Progress | None = None,
                 stop: threading.Event | None = None) -> LocalHistory:
    """The history as a local file: the path given, or the URL's cached copy, downloaded if
    need be. Raises HistoryError with what to do. Cancelling it (a signal) keeps what was
    downloaded for the next try; ``stop`` ends the work it does in threads (waiting for
    another process's download, checking the file)."""
    scheme = urlsplit(source.location).scheme.lower()
    if scheme in ("ftp", "ftps", "rsync", "sftp"):
        url = urlsplit(source.location)
        same = (f"https://{url.hostname}{url.path}" if url.hostname == "ftp.ncbi.nlm.nih.gov"
                else DEFAULT_HISTORY_URL)
        raise HistoryError(
            f"--history {source.location}: {scheme}:// is not supported; bulkgene downloads "
            f"over https (verified, resumable). Pass {same} (NCBI's FTP host serves the same "
            "files over https), or the path of a copy you fetched yourself.")
    if not source.is_url:
        path = Path(source.location).expanduser()  # noqa: ASYNC240 - one stat, no waiting
        if not path.is_file():
            raise HistoryError(f"the gene history {source.location} is not a file: pass the path "
                               "of NCBI's gene_history(.gz), or its URL, to --history")
        return LocalHistory(path, str(path), "local")
    root = source.cache_dir or default_cache_dir()
    entry = CacheEntry(root, source.location)
    try:
        entry.directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HistoryError(f"cannot create the cache directory {entry.directory}: "
                           f"{exc.strerror}; pass another --cache-dir") from None
    lock = RunLock(entry.directory)
    try:
        await asyncio.to_thread(acquire_waiting, lock, source.lock_wait_s, 0.1, stop)
    except StateError as exc:
        raise HistoryError(f"another bulkgene is downloading {source.location} into "
                           f"{entry.directory} and did not finish in time ({exc})") from None
    try:
        how = await _refresh(source, entry, progress, stop)
    finally:
        lock.release()
    return LocalHistory(entry.file, source.location, how)


async def _refresh(source: HistorySource, entry: CacheEntry, progress: Progress | None,
                   stop: threading.Event | None) -> How:
    copy = entry.copy()
    if copy is not None and time.time() - copy.checked_at < source.max_age_s:
        return "cached"
    url = source.location
    limits = aiohttp.ClientTimeout(total=None, connect=source.connect_timeout_s,
                                    sock_read=source.read_timeout_s)
    last = ""
    async with open_session(2, 3.0, f"bulkgene/{__version__} (+aiohttp)") as session:
        for attempt in range(source.attempts):
            if attempt:
                delay_s = random.uniform(0, source.backoff_base_s * 2 ** (attempt - 1))
                log.warning("downloading %s: %s; trying again in %.0f s", url, last, delay_s)
                await asyncio.sleep(delay_s)
            try:
                return await _attempt(session, limits, source, entry, copy, progress, stop)
            except _Retry as exc:
                last = str(exc)
    if copy is not None:
        day = time.strftime("%Y-%m-%d", time.localtime(copy.checked_at))
        log.warning("could not check %s for a newer gene history (%s): using the copy of %s in "
                    "%s", url, last, day, entry.file)
        return "stale"
    partial = entry.partial()
    kept = ("; what arrived so far is kept and the next try resumes it"
            if partial is not None and partial[1] > 0 else "")
    raise HistoryError(
        f"downloading the gene history from {url} failed {source.attempts} times (last: {last}). "
        "Check the network (a proxy goes in HTTPS_PROXY), or download the file yourself "
        f"(wget {url}) and pass its path (or URL) with --history or BULKGENE_HISTORY{kept}.")


async def _attempt(session: aiohttp.ClientSession, limits: aiohttp.ClientTimeout,
                   source: HistorySource, entry: CacheEntry, copy: CopyMeta | None,
                   progress: Progress | None, stop: threading.Event | None) -> How:
    url = source.location
    headers: dict[str, str] = {}
    partial = entry.partial()
    resume_from = 0
    if partial is not None and partial[1] > 0:
        part_meta, resume_from = partial
        headers["Range"] = f"bytes={resume_from}-"
        if (if_range := part_meta.validators.if_range()) is not None:
            headers["If-Range"] = if_range
    elif copy is not None:
        if copy.validators.etag:
            headers["If-None-Match"] = copy.validators.etag
        if copy.validators.last_modified:
            headers["If-Modified-Since"] = copy.validators.last_modified
    try:
        async with session.get(url, headers=headers, timeout=limits, max_redirects=5) as response:
            if urlsplit(url).scheme == "https" and response.url.scheme != "https":
                raise HistoryError(f"{url} redirected to plain http ({response.url}): bulkgene "
                                   "does not download over an unencrypted connection")
            status = response.status
            if status == 304 and copy is not None and "Range" not in headers:
                entry.touch(copy)
                return "not-modified"
            if status == 416 and resume_from:
                entry.drop_part()  # the partial body is no prefix of what the server has now
                raise _Retry("the server refused to resume the partial download (HTTP 416)")
            if status == 429 or status >= 500:
                raise _Retry(f"HTTP {status}")
            if status == 206 and resume_from:
                assert partial is not None
                meta = _resumed(partial[0], response, resume_from, entry)
            elif status == 200:
                meta = PartMeta(url, Validators(response.headers.get("ETag"),
                                                response.headers.get("Last-Modified")),
                                response.content_length)
                resume_from = 0
            else:
                raise HistoryError(
                    f"{url} answered HTTP {status} {response.reason or ''}: no gene history "
                    "there. Check --history (NCBI's is https://ftp.ncbi.nlm.nih.gov/gene/DATA/"
                    "gene_history.gz), or download the file yourself and pass its path.")
            if meta.total is not None and meta.total > source.max_bytes:
                entry.drop_part()
                raise _too_big(url, meta.total, source.max_bytes)
            handle = entry.append_part() if resume_from else entry.start_part(meta)
            with handle:
                await _receive(response, handle, resume_from, meta.total, source, entry, progress)
    except (aiohttp.ClientError, TimeoutError) as exc:
        failure = translate(exc, answered=False, reused_connection=False)  # net's one place
        if isinstance(failure, TlsUnverified):
            raise HistoryError(
                f"the TLS certificate of {urlsplit(url).hostname} could not be verified "
                f"({failure.kind}: {failure.detail}); bulkgene never skips verification. "
                "Behind a proxy that re-signs traffic, point SSL_CERT_FILE at your site's CA "
                "bundle.") from None
        raise _Retry(failure.reason) from None
    problem = await asyncio.to_thread(gzip_problem, entry.part, stop)
    if problem is not None:
        entry.drop_part()
        if resume_from:  # the resumed tail may belong to another version: start over
            raise _Retry(f"the resumed download did not make a whole file ({problem})")
        raise HistoryError(f"the gene history downloaded from {url} is unusable: {problem}. "
                           "Nothing was kept; try again later, or download the file yourself "
                           "and pass its path with --history.")
    entry.commit(meta)
    return "resumed" if resume_from else "downloaded"


def _resumed(meta: PartMeta, response: aiohttp.ClientResponse, resume_from: int,
             entry: CacheEntry) -> PartMeta:
    """Check a 206 continues the partial body where it stops; its whole length."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None or int(match.group(1)) != resume_from:
        entry.drop_part()
        raise _Retry("the server resumed the download at another place than asked")
    total = None if match.group(3) == "*" else int(match.group(3))
    return PartMeta(meta.url, meta.validators, total)


def _too_big(url: str, size: int, cap: int) -> HistoryError:
    return HistoryError(f"the gene history at {url} is {size} bytes, more than the {cap} "
                        "bytes bulkgene accepts from it: download it yourself if it is really "
                        "that big, and pass its path with --history")


async def _receive(response: aiohttp.ClientResponse, handle: BinaryIO, done: int,
                   total: int | None, source: HistorySource, entry: CacheEntry,
                   progress: Progress | None) -> None:
    """Append the body to the partial download, checking it is gzip and within the cap."""
    head = b""
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        if done < 2:  # the first two bytes say whether this is gzip at all
            head = (head + chunk)[:40]
            if len(head) >= 2 and head[:2] != GZIP_MAGIC:
                handle.close()
                entry.drop_part()
                raise HistoryError(
                    f"{source.location} did not send a gzip file (it starts with {head!r}): "
                    "the FTP host may be down, or a proxy or login page answered. Try again "
                    "later, or download the file yourself and pass its path with --history.")
        done += len(chunk)
        if done > source.max_bytes:
            handle.close()
            entry.drop_part()
            raise _too_big(source.location, done, source.max_bytes)
        handle.write(chunk)
        if progress is not None:
            progress(done, total)
    handle.flush()
    os.fsync(handle.fileno())
    if total is not None and done < total:
        raise _Retry(f"the body was cut short at {done} of {total} bytes")
