"""Stream GeneIDs out of input files, stdin or .gz, yielding valid IDs and rejected lines.

One GeneID per line: the first whitespace-, tab- or comma-separated field, or the column
``--column`` names, or the ``GeneID`` column a header line names. A line with more numbers
than that one (``1,2,3``) is rejected, never half-read. LF, CRLF and CR-only line ends are
all line ends; blank lines and ``#`` comments are skipped, a UTF-8 BOM is tolerated. Anything
else that is not an integer in 1..2**31-1 is a rejected line with its line number, never a
crash. Lines are read with a length limit, so a 100 MB line costs no more memory than a short
one. An input that yields no GeneID at all is an InputError that says why.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from bulkgene.errors import InputError
from bulkgene.input.advice import SHOWN_REJECTS, FileReport, LineShape, Reject, no_ids_error
from bulkgene.input.columns import FIELD_QUOTES, parse_column, shown_text
from bulkgene.input.encoding import Utf16Reader, utf16_encoding
from bulkgene.input.header import FirstLine, RowNumbers, first_line
from bulkgene.input.idset import MAX_GENE_ID, IdBitmap
from bulkgene.input.spool import STDIN, refuse_device_stream

__all__ = ["STDIN", "InputCounts", "Reject", "file_digest", "open_input", "parse_column",
           "read_ids", "scan_ids", "shown_text"]

_MAX_LINE_BYTES = 64 * 1024
_READ_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_COMMENT = re.compile(rb"(?:^|[\s,])#")
# other compressions read as junk lines; name them instead (gzip alone is un-packed)
_PACKED = ((b"\xfd7zXZ\x00", "xz", "xz -dc"), (b"BZh", "bzip2", "bzip2 -dc"),
           (b"PK\x03\x04", "zip", "unzip -p"), (b"\x28\xb5\x2f\xfd", "zstd", "zstd -dc"),
           (b"7z\xbc\xaf\x27\x1c", "7z", "7z x -so"))
# an Office file is a zip (xlsx, ods) or an OLE2 compound file (xls): unzipping gives XML
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")
_SPREADSHEET_MEMBERS = (b"[Content_Types].xml", b"xl/", b"docProps/", b"spreadsheet")
# one value in more than half of a file's IDs, or a few values repeated over and over, is a
# column like tax_id (one species, or the 9 of a mixed table), not GeneIDs
_REPEAT_SAMPLE = 10_000
_REPEAT_MIN_IDS = 10
_FEW_VALUES = 32
_FEW_VALUES_REPEATS = 4

log = logging.getLogger("bulkgene")


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """Open a file (or ``-`` for stdin) for binary reading, un-gzipping by magic number."""
    if path == STDIN:
        refuse_device_stream(path, sys.stdin.buffer)
        yield sys.stdin.buffer
        return
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, after maybe wrapping in gzip
    except OSError as exc:
        raise InputError(f"cannot read input {path!r}: {exc.strerror}; check the path") from None
    try:
        refuse_device_stream(path, raw)
        start = raw.peek(64)[:64]
        if _is_spreadsheet(path, start):
            raise InputError(
                f"input {path!r} is an Excel workbook (or another spreadsheet), not text: open it, "
                "save the sheet as CSV or TSV (File > Save As), and give that file, with "
                "--column naming the GeneID column if it is not the first")
        for magic, kind, command in _PACKED:
            if start.startswith(magic):
                raise InputError(f"input {path!r} is {kind}-compressed; bulkgene un-packs only "
                                 f"gzip: run `{command} {path} | bulkgene fetch - ...` instead")
        if start[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        elif (encoding := utf16_encoding(start)) is not None:
            log.info("%s: reading it as UTF-16 text (Excel's \"Unicode Text\", PowerShell)", path)
            yield Utf16Reader(raw, encoding)  # type: ignore[misc]  # the reader only read()s
        else:
            yield raw
    except (OSError, EOFError) as exc:
        raise InputError(
            f"input {path!r} could not be read to the end ({exc}); "
            "if it is gzip, check that it is complete (gzip -t)"
        ) from None
    finally:
        raw.close()


def _is_spreadsheet(path: str, start: bytes) -> bool:
    if start.startswith(_OLE2):
        return True
    if not start.startswith(b"PK\x03\x04"):
        return False
    return path.lower().endswith(_SPREADSHEET_SUFFIXES) or any(
        member in start for member in _SPREADSHEET_MEMBERS)


def file_digest(path: str) -> str:
    """BLAKE2b of a file's raw bytes: the identity of an input in the checkpoint."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "blake2b").hexdigest()[:32]
    except OSError as exc:
        raise InputError(f"cannot read input {path!r}: {exc.strerror}; check the path") from None


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, at most _MAX_LINE_BYTES of the line, whether it was longer).

    LF, CRLF and a lone CR each end a line (a CR-only file from old Mac software is lines,
    not one long line). Read in blocks: a line never costs more than _MAX_LINE_BYTES.
    """
    line_number = 0
    partial = b""  # the kept start of a line that continues into the next block
    overlong = False
    held_cr = False  # a block's last CR, kept back in case the next block starts with LF
    first = True
    read = handle.read
    while True:
        data = read(_READ_BYTES)
        at_end = not data
        if first:
            first = False
            if data.startswith(_BOM):
                data = data[len(_BOM):]
        if held_cr:
            data = b"\r" + data
            held_cr = False
        if not at_end and data.endswith(b"\r"):
            data = data[:-1]
            held_cr = True
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pieces = data.split(b"\n")
        tail = pieces.pop()
        for piece in pieces:
            line_number += 1
            if partial or overlong:
                room = _MAX_LINE_BYTES - len(partial)
                yield line_number, partial + piece[:room], overlong or len(piece) > room
                partial = b""
                overlong = False
            elif len(piece) > _MAX_LINE_BYTES:
                yield line_number, piece[:_MAX_LINE_BYTES], True
            else:
                yield line_number, piece, False
        if tail:
            room = _MAX_LINE_BYTES - len(partial)
            if len(tail) > room:
                overlong = True
            partial += tail[:room]
        if at_end:
            if partial or overlong:
                yield line_number + 1, partial, overlong
            return


def _fields(stripped: bytes) -> list[bytes]:
    """A line's fields: tab-separated if it has a tab, else comma-, else space-separated."""
    comment = _COMMENT.search(stripped)
    if comment is not None:
        stripped = stripped[: comment.start()]
    if b"\t" in stripped:
        return [f.strip(FIELD_QUOTES) for f in stripped.split(b"\t")]
    if b"," in stripped:
        return [f.strip(FIELD_QUOTES) for f in stripped.split(b",")]
    return [f.strip(FIELD_QUOTES) for f in stripped.split()]


def _gene_id(field: bytes) -> int | str:
    """The GeneID in ``field``, or the reason it is none."""
    if not field.isdigit():
        return "NOT_A_GENE_ID"
    if len(field) > 10 or not 1 <= int(field) <= MAX_GENE_ID:
        return "OUT_OF_RANGE"
    return int(field)


def _parse_first(line: bytes, overlong: bool) -> int | str | None:
    """Without a column: the line's one GeneID, a reject reason, or None (blank, comment)."""
    stripped = line.strip()
    if stripped.isdigit() and len(stripped) <= 10 and not overlong:  # the common case first
        value = int(stripped)
        return value if 1 <= value <= MAX_GENE_ID else "OUT_OF_RANGE"
    if not stripped or stripped.startswith(b"#"):
        return None
    fields = _fields(stripped)
    if overlong and len(fields) == 1:
        return "LINE_TOO_LONG"
    found = _gene_id(fields[0])
    if isinstance(found, int) and any(f.isdigit() for f in fields[1:]):
        return "SEVERAL_IDS"
    return found


def _parse_column(line: bytes, overlong: bool, index: int) -> int | str | None:
    """With a column: the GeneID in field ``index``, a reject reason, or None."""
    content = line.rstrip()
    stripped = content.lstrip()
    if not stripped or stripped.startswith(b"#"):
        return None
    fields = _fields(content if content[:1] == b"\t" else stripped)  # an empty first cell counts
    if len(fields) <= index:
        return "LINE_TOO_LONG" if overlong else "MISSING_COLUMN"
    return _gene_id(fields[index])


def _shape(line: bytes) -> LineShape:
    """Which fields of a rejected line hold a number: what ``--column`` could read instead."""
    stripped = line.strip()
    fields = _fields(stripped)
    separator = b"\t" if b"\t" in stripped else b"," if b"," in stripped else b" "
    return LineShape(separator, tuple(isinstance(_gene_id(f), int) for f in fields),
                     fields[0] if fields else b"")


def _masked(line: bytes, secret: bytes | None) -> bytes:
    """``line`` with the API key replaced by ``***``: an input that holds the key (the key
    file given as an input by a glob, or a notes file) must not copy it into rejects.tsv or
    a message."""
    return line.replace(secret, b"***") if secret and secret in line else line


def _read_file(handle: BinaryIO, name: str, column: int | str | None,
               report: FileReport, secret: bytes | None = None) -> Iterator[int | Reject]:
    index: int | None = column if isinstance(column, int) else None
    sample: Counter[int] = Counter()  # the first IDs; then only the commonest one is counted
    common, common_count = 0, 0
    data_lines = valid = 0
    looked_for_header = False
    row_numbers: RowNumbers | None = None
    for line_number, read, overlong in _lines(handle):
        line = read
        if not looked_for_header and line.strip():
            report.nonblank = True
            line = _masked(line, secret)
            first = first_line(name, line, column)
            if first.comment:
                report.names = first.names or report.names
                continue  # `# exported by tool X`: the header may be on the next line
            looked_for_header = True
            report.names = first.names
            index = first.index
            row_numbers = RowNumbers.watching(name, first)
            if first.header:
                _say_column(name, first, column)
                continue
        elif row_numbers is not None and row_numbers.alive and line.strip():
            row_numbers.see(line)
        parsed = (_parse_first(line, overlong) if index is None
                  else _parse_column(line, overlong, index))
        if parsed is None:
            continue
        data_lines += 1
        if isinstance(parsed, int):
            valid += 1
            if valid <= _REPEAT_SAMPLE:
                sample[parsed] += 1
                if valid == _REPEAT_SAMPLE:
                    common, common_count = sample.most_common(1)[0]
            elif parsed == common:
                common_count += 1
            yield parsed
        else:
            line = _masked(line, secret)
            if b"\x00" in line:
                report.binary = True
            if column is None and parsed in ("NOT_A_GENE_ID", "SEVERAL_IDS"):
                report.keep_shape(_shape(line))
            yield Reject(name, line_number, shown_text(line.strip()), parsed)
    report.data_lines, report.valid = data_lines, valid
    report.column = index
    if row_numbers is not None:
        row_numbers.check()
    if valid < _REPEAT_SAMPLE and sample:
        common, common_count = sample.most_common(1)[0]
    if valid >= _REPEAT_MIN_IDS:
        _warn_if_not_gene_ids(name, (index or 0) + 1, valid, common, common_count, sample)


def _warn_if_not_gene_ids(name: str, column_number: int, valid: int, common: int,
                          common_count: int, sample: Counter[int]) -> None:
    """A column that one value dominates, or that holds a few values over and over, is more
    likely tax_id (one species, or a mixed table's few) than GeneIDs: say so once."""
    advice = ("if so, choose the GeneID column with --column N (1-based) or --column GeneID "
              "(with --restart if the run has begun)")
    sampled = min(valid, _REPEAT_SAMPLE)
    if 2 * common_count > valid:
        log.warning("%s: %d makes up %d%% of its %d GeneIDs, so column %d looks like tax_id "
                    "(9606 is human) or another repeated value, not GeneIDs; %s", name, common,
                    100 * common_count // valid, valid, column_number, advice)
    elif len(sample) <= _FEW_VALUES and sampled >= _FEW_VALUES_REPEATS * len(sample):
        shown = ", ".join(str(value) for value, _ in sample.most_common(5))
        log.warning("%s: column %d holds only %d distinct values in %d GeneIDs (%s%s), so it "
                    "looks like tax_id (a table of several species) or another category, not "
                    "GeneIDs; %s", name, column_number, len(sample), sampled, shown,
                    ", ..." if len(sample) > 5 else "", advice)


def _say_column(name: str, first: FirstLine, column: int | str | None) -> None:
    assert first.index is not None
    if isinstance(column, str):
        log.info("%s: reading GeneIDs from column %d (%s)", name, first.index + 1, column)
    elif column is None:
        log.info("%s: reading GeneIDs from column %d (%s), the one its header line names",
                 name, first.index + 1, first.names[first.index])


def read_ids(paths: tuple[str, ...], names: tuple[str, ...] | None = None,
             column: int | str | None = None, secret: str | None = None
             ) -> Iterator[int | Reject]:
    """Every valid GeneID (duplicates included) and every rejected line, in input order.

    ``names`` are what rejects report as the source (e.g. ``-`` for a spooled stdin copy);
    ``column`` is what :func:`parse_column` made of ``--column``; ``secret`` (the API key)
    is masked in every rejected line and message. Raises InputError at the end when no line
    held a GeneID.
    """
    reports: list[FileReport] = []
    first_rejects: list[Reject] = []
    valid = 0
    for position, path in enumerate(paths):
        report = FileReport(names[position] if names else path)
        reports.append(report)
        with open_input(path) as handle:
            for item in _read_file(handle, report.name, column, report,
                                   secret.encode() if secret else None):
                if isinstance(item, int):
                    valid += 1
                elif len(first_rejects) < SHOWN_REJECTS:
                    first_rejects.append(item)
                yield item
    if valid == 0:
        raise no_ids_error(reports, first_rejects)


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
    column: int | str | None = None,
    secret: str | None = None,
) -> tuple[InputCounts, IdBitmap]:
    """Count the input and collect the set of requested IDs; rejects go to ``on_reject``."""
    counts = InputCounts()
    requested = IdBitmap()
    add = requested.add
    for item in read_ids(paths, names, column, secret):
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
