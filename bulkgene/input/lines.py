"""Stream GeneIDs out of input files, stdin or .gz, yielding valid IDs and rejected lines.

One GeneID per line: the first whitespace-, tab- or comma-separated field. Blank lines and
``#`` comments are skipped, a UTF-8 BOM and CRLF are tolerated. Anything else that is not an
integer in 1..2**31-1 is a rejected line with its line number, never a crash. Lines are read
with a length limit, so a 100 MB line costs no more memory than a short one.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from bulkgene.errors import InputError
from bulkgene.input.idset import MAX_GENE_ID, IdBitmap

STDIN = "-"
_MAX_LINE_BYTES = 64 * 1024
_SHOWN_TEXT_CHARS = 80
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_FIELD_END = re.compile(rb"[\s,]")


@dataclass(frozen=True, slots=True)
class Reject:
    """An input line that holds no valid GeneID."""

    source: str
    line_number: int
    text: str
    reason: str


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """Open a file (or ``-`` for stdin) for binary reading, un-gzipping by magic number."""
    if path == STDIN:
        yield sys.stdin.buffer
        return
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, after maybe wrapping in gzip
    except OSError as exc:
        raise InputError(f"cannot read input {path!r}: {exc.strerror}; check the path") from None
    try:
        if raw.peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw
    except (OSError, EOFError) as exc:
        raise InputError(
            f"input {path!r} could not be read to the end ({exc}); "
            "if it is gzip, check that it is complete (gzip -t)"
        ) from None
    finally:
        raw.close()


def file_digest(path: str) -> str:
    """BLAKE2b of a file's raw bytes: the identity of an input in the checkpoint."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "blake2b").hexdigest()[:32]
    except OSError as exc:
        raise InputError(f"cannot read input {path!r}: {exc.strerror}; check the path") from None


def shown_text(raw: bytes) -> str:
    """A line as it may appear in a report: truncated, escaped, one TSV field."""
    text = raw[: _SHOWN_TEXT_CHARS * 4].decode("utf-8", "backslashreplace")
    if len(text) > _SHOWN_TEXT_CHARS:
        text = text[:_SHOWN_TEXT_CHARS] + "..."
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, at most _MAX_LINE_BYTES of the line, whether it was longer)."""
    line_number = 0
    readline = handle.readline
    while True:
        line = readline(_MAX_LINE_BYTES)
        if not line:
            return
        line_number += 1
        overlong = False
        if len(line) == _MAX_LINE_BYTES and not line.endswith(b"\n"):
            overlong = True
            while True:  # skip the rest of the line without holding it
                rest = readline(_MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
        if line_number == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        yield line_number, line, overlong


def _parse(source: str, line_number: int, line: bytes, overlong: bool) -> int | Reject | None:
    """A GeneID, a Reject, or None for a blank or comment line."""
    stripped = line.strip()
    if stripped.isdigit() and len(stripped) <= 10 and not overlong:  # the common case first
        value = int(stripped)
        if 1 <= value <= MAX_GENE_ID:
            return value
        return Reject(source, line_number, shown_text(stripped), "OUT_OF_RANGE")
    if not stripped or stripped.startswith(b"#"):
        return None
    end = _FIELD_END.search(stripped)
    field = stripped[: end.start()] if end else stripped
    if overlong and end is None:
        return Reject(source, line_number, shown_text(stripped), "LINE_TOO_LONG")
    if not field.isdigit():
        return Reject(source, line_number, shown_text(stripped), "NOT_A_GENE_ID")
    if len(field) > 10 or not 1 <= int(field) <= MAX_GENE_ID:
        return Reject(source, line_number, shown_text(stripped), "OUT_OF_RANGE")
    return int(field)


def read_ids(paths: tuple[str, ...], names: tuple[str, ...] | None = None) -> Iterator[int | Reject]:
    """Every valid GeneID (duplicates included) and every rejected line, in input order.

    ``names`` are what rejects report as the source (e.g. ``-`` for a spooled stdin copy).
    """
    for index, path in enumerate(paths):
        name = names[index] if names else path
        with open_input(path) as handle:
            for line_number, line, overlong in _lines(handle):
                parsed = _parse(name, line_number, line, overlong)
                if parsed is not None:
                    yield parsed


@dataclass
class InputCounts:
    """What a full pass over the input found."""

    requested: int = 0
    duplicates: int = 0
    rejected: int = 0


def scan_ids(
    paths: tuple[str, ...],
    names: tuple[str, ...],
    on_reject: Callable[[Reject], None] | None = None,
) -> tuple[InputCounts, IdBitmap]:
    """Count the input and collect the set of requested IDs; rejects go to ``on_reject``."""
    counts = InputCounts()
    requested = IdBitmap()
    add = requested.add
    for item in read_ids(paths, names):
        if isinstance(item, int):
            if add(item):
                counts.requested += 1
            else:
                counts.duplicates += 1
        else:
            counts.rejected += 1
            if on_reject is not None:
                on_reject(item)
    return counts, requested
