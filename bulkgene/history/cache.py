"""The downloaded gene_history in the cache: one entry per URL, its validators, a partial body, a lock.

    <cache>/gene_history/<host>-<digest of the URL>/
        gene_history.gz          the last complete copy, checked to be whole gzip
        gene_history.json        its URL, ETag, Last-Modified, size, when last checked
        gene_history.gz.part     a download under way (or killed): resumed from its length
        gene_history.part.json   the validators that partial body came with
        bulkgene.lock            held while the entry is checked or written

A complete copy is replaced only by a whole, checked one, through a rename; its metadata is
written after it, and trusted only if it names this URL and this file's size. A partial
download is appended to as bytes arrive and is only ever resumed with the validators its
first bytes came with.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import orjson

from bulkgene import durable
from bulkgene.errors import Interrupted
from bulkgene.history.rows import GZIP_ERRORS, GZIP_MAGIC

FILE_NAME = "gene_history.gz"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bulkgene``, else ``~/.cache/bulkgene`` (where the budget lives too)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bulkgene"


@dataclass(frozen=True)
class Validators:
    """What a server said identifies the version of the file it sent."""

    etag: str | None = None
    last_modified: str | None = None

    def if_range(self) -> str | None:
        """The value for ``If-Range``: a strong ETag, else the date (RFC 9110 13.1.5)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


@dataclass(frozen=True)
class CopyMeta:
    """A complete copy: where from, which version, how big, when last found current."""

    url: str
    validators: Validators
    size: int
    checked_at: float


@dataclass(frozen=True)
class PartMeta:
    """A partial download: where from, which version, how big the whole will be."""

    url: str
    validators: Validators
    total: int | None


def _load(path: Path) -> dict[str, object] | None:
    try:
        data = orjson.loads(durable.read_bytes(path))
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _validators(data: dict[str, object]) -> Validators:
    etag, modified = data.get("etag"), data.get("last_modified")
    return Validators(etag if isinstance(etag, str) else None,
                      modified if isinstance(modified, str) else None)


class CacheEntry:
    """The cache's files for one URL."""

    def __init__(self, root: Path, url: str) -> None:
        host = urlsplit(url).hostname or "local"
        digest = hashlib.blake2b(url.encode(), digest_size=6).hexdigest()
        self.url = url
        self.directory = root / "gene_history" / f"{host}-{digest}"
        self.file = self.directory / FILE_NAME
        self.part = self.directory / (FILE_NAME + ".part")
        self._meta = self.directory / "gene_history.json"
        self._part_meta = self.directory / "gene_history.part.json"

    def copy(self) -> CopyMeta | None:
        """The complete copy, if there is one this URL's metadata vouches for."""
        data = _load(self._meta)
        if data is None or data.get("url") != self.url:
            return None
        size, checked_at = data.get("size"), data.get("checked_at")
        try:
            actual = self.file.stat().st_size
        except OSError:
            return None
        if not isinstance(size, int) or size != actual or not isinstance(checked_at, float | int):
            return None
        return CopyMeta(self.url, _validators(data), size, float(checked_at))

    def partial(self) -> tuple[PartMeta, int] | None:
        """The partial download and its length so far, if one of this URL is there."""
        data = _load(self._part_meta)
        if data is None or data.get("url") != self.url:
            return None
        try:
            length = self.part.stat().st_size
        except OSError:
            return None
        total = data.get("total")
        return PartMeta(self.url, _validators(data), total if isinstance(total, int) else None), length

    def start_part(self, meta: PartMeta) -> BinaryIO:
        """A new, empty partial download, its validators recorded before any byte of it."""
        self.drop_part()
        durable.write_atomically(self._part_meta, orjson.dumps(
            {"url": meta.url, **asdict(meta.validators), "total": meta.total}))
        return durable.open_append(self.part)

    def append_part(self) -> BinaryIO:
        return durable.open_append(self.part)

    def drop_part(self) -> None:
        self._part_meta.unlink(missing_ok=True)
        self.part.unlink(missing_ok=True)

    def commit(self, meta: PartMeta) -> None:
        """The checked partial download becomes the copy: renamed over it, then described."""
        size = self.part.stat().st_size
        os.replace(self.part, self.file)
        durable.fsync_directory(self.directory)
        self._write_meta(CopyMeta(self.url, meta.validators, size, time.time()))
        self._part_meta.unlink(missing_ok=True)

    def touch(self, copy: CopyMeta) -> None:
        """The server says the copy is still current: trust it for another while."""
        self._write_meta(CopyMeta(copy.url, copy.validators, copy.size, time.time()))

    def _write_meta(self, meta: CopyMeta) -> None:
        durable.write_atomically(self._meta, orjson.dumps(
            {"url": meta.url, **asdict(meta.validators), "size": meta.size,
             "checked_at": meta.checked_at}))


def gzip_problem(path: Path, stop: threading.Event | None = None) -> str | None:
    """Why ``path`` is not one whole gzip file (every member to its end), or None if it is;
    Interrupted soon after ``stop`` is set."""
    try:
        with open(path, "rb") as raw:
            if raw.read(2) != GZIP_MAGIC:
                return "it is not gzip"
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                while unzipped.read(1 << 20):
                    if stop is not None and stop.is_set():
                        raise Interrupted("the downloaded gene history was being checked")
    except GZIP_ERRORS as exc:
        return f"it is not a complete gzip file ({exc})"
    except OSError as exc:
        return f"it could not be read back ({exc.strerror or exc})"
    return None
