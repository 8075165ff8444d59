"""NCBI's gene_history read as a stream: the rows asked about, every discontinued GeneID, bad lines counted.

The format (docs/ncbi-gene-history.md): five tab-separated fields per line, ``tax_id GeneID
Discontinued_GeneID Discontinued_Symbol Discontinue_Date``; ``-`` as GeneID for a record
discontinued without a replacement; the date as ``YYYYMMDD``; a ``#`` line is the header
(older copies had a ``#Format:`` line). Row order means nothing: rows are matched by
GeneID, never by position.

A pass reads the file once, however large, and keeps only what the run needs: the full rows
of the GeneIDs asked about, and the sets of every discontinued GeneID and of every GeneID
named as a successor (roaring bitmaps of a few bytes per ID), so that a successor is known
to be live without reading the file again, and the few GeneIDs that are both (the possible
middles of a chain) are known before a second pass keeps just their successor and date.
A line that is not such a row is skipped and counted, never a crash; a file with no row at
all is an error (it is not NCBI's gene_history).
"""

from __future__ import annotations

import gzip
import threading
import zlib
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bulkgene.errors import HistoryError, Interrupted
from bulkgene.input.idset import MAX_GENE_ID, IdBitmap

GZIP_MAGIC = b"\x1f\x8b"
HEADER = b"#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\tDiscontinue_Date\n"
_CHUNK_BYTES = 1 << 20
# a real line is under 1 KB; past this a line is junk, skipped to its newline without being
# kept (held whole, a 600 MB line cost 1.9 GB, and each chunk copied all of it again)
MAX_LINE_BYTES = 64 << 10
_EXAMPLES = 5  # malformed lines quoted in the warning
_MAX_SYMBOL_CHARS = 100
_MAX_ID_DIGITS = 10
_BATCH_IDS = 1 << 16  # GeneIDs gathered before they join a set, in one call


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One line of the history: a GeneID that was discontinued, and what became of it."""

    tax_id: int
    successor: int | None  # the GeneID that replaced it; None: discontinued without one
    symbol: str
    date: str  # YYYY-MM-DD


@dataclass
class Scan:
    """What one pass over the file kept."""

    rows: dict[int, HistoryRow] = field(default_factory=dict)  # by discontinued GeneID
    discontinued: IdBitmap | None = None  # every Discontinued_GeneID (first pass)
    successors: IdBitmap | None = None  # every GeneID a row names as a successor (first pass)
    lines: int = 0  # rows read (header, comments and malformed lines aside)
    malformed: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)  # (line number, text)


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


@contextmanager
def open_history(path: Path, name: str) -> Iterator[BinaryIO]:
    """The history's bytes, gunzipped if it is gzip (told by its first bytes, not its name)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, or by the gzip reader
    except OSError as exc:
        raise HistoryError(f"cannot read the gene history {name}: {exc.strerror}; check the "
                           "path given to --history") from None
    with raw:
        if raw.read(2) == GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]  # GzipFile is a BinaryIO in all but name
        else:
            raw.seek(0)
            yield raw


def _symbol(raw: bytes) -> str:
    """The symbol as text: undecodable bytes replaced, control characters dropped, capped."""
    text = raw.decode("utf-8", "replace")
    if not text.isprintable():
        text = "".join(char for char in text if char.isprintable())
    return text[:_MAX_SYMBOL_CHARS]


def _row(parts: list[bytes]) -> HistoryRow:
    """The row of five fields that ``scan`` has checked."""
    tax, gene, _, symbol, raw_date = parts
    date = raw_date.rstrip(b"\r").decode()
    return HistoryRow(int(tax), None if gene == b"-" else int(gene), _symbol(symbol),
                      f"{date[:4]}-{date[4:6]}-{date[6:]}")


def _valid_rows(stream: BinaryIO, result: Scan, stop: threading.Event | None = None
                ) -> Iterator[tuple[int, list[bytes]]]:
    """(Discontinued_GeneID, fields) of every well-formed row; the rest counted in ``result``.

    Every field is checked (numbers where numbers belong, a plausible date): a line that
    fails, or is longer than MAX_LINE_BYTES, is skipped and counted, and its GeneID is not
    taken as discontinued. Memory stays flat and time linear whatever the lines' length.
    Raises Interrupted between two chunks once ``stop`` is set (a signal).
    """
    tail = b""
    skipping: bytes | None = None  # the start of an over-long line, while its rest is skipped
    number = 0

    def bad(line: bytes) -> None:
        result.malformed += 1
        if len(result.examples) < _EXAMPLES:
            result.examples.append((number, line[:80].decode("utf-8", "replace")))

    while True:
        if stop is not None and stop.is_set():
            raise Interrupted("the gene history was being read")
        chunk = stream.read(_CHUNK_BYTES)
        at_end = not chunk
        if skipping is not None:
            end = chunk.find(b"\n")
            if end < 0 and not at_end:
                continue
            number += 1
            bad(skipping)
            skipping = None
            chunk = chunk[end + 1:] if end >= 0 else b""
        lines = (tail + chunk).split(b"\n")
        tail = b"" if at_end else lines.pop()
        if len(tail) > MAX_LINE_BYTES:
            skipping, tail = tail[:80], b""
        for line in lines:
            number += 1
            if not line or line[:1] == b"#":
                continue
            parts = line.split(b"\t")
            if len(parts) != 5:
                bad(line)
                continue
            tax, gene, disc, _, date = parts
            if date[-1:] == b"\r":
                date = parts[4] = date[:-1]
            # inline, and comparing bytes: this loop runs for every row of the file
            if not (disc.isdigit() and len(disc) <= _MAX_ID_DIGITS and tax.isdigit()
                    and (gene == b"-" or (gene.isdigit() and len(gene) <= _MAX_ID_DIGITS))
                    and len(date) == 8 and date.isdigit()
                    and b"01" <= date[4:6] <= b"12" and b"01" <= date[6:] <= b"31"
                    and len(line) <= MAX_LINE_BYTES):
                bad(line)
                continue
            disc_id = int(disc)
            if not 0 < disc_id <= MAX_GENE_ID or (gene != b"-" and not 0 < int(gene) <= MAX_GENE_ID):
                bad(line)
                continue
            result.lines += 1
            yield disc_id, parts
        if at_end:
            return


def scan(stream: BinaryIO, wanted: IdBitmap, stop: threading.Event | None = None) -> Scan:
    """Read ``stream`` once: keep the rows of ``wanted`` GeneIDs, and collect the set of every
    discontinued GeneID and of every successor a row names.

    Raises zlib.error, EOFError or gzip.BadGzipFile (GZIP_ERRORS) for a damaged gzip stream.
    """
    discontinued, named = IdBitmap(), IdBitmap()
    result = Scan(discontinued=discontinued, successors=named)
    rows = result.rows
    discs: list[int] = []
    successors: list[int] = []
    is_wanted = wanted.fast_contains  # disc_id is in range: _valid_rows checked it
    for disc_id, parts in _valid_rows(stream, result, stop):
        discs.append(disc_id)
        if parts[1] != b"-":
            successors.append(int(parts[1]))
        if is_wanted(disc_id):
            rows[disc_id] = _row(parts)
        if len(discs) >= _BATCH_IDS:
            discontinued.update(discs)
            named.update(successors)
            discs.clear()
            successors.clear()
    discontinued.update(discs)
    named.update(successors)
    return result


@dataclass
class Links:
    """The successor and date of each GeneID of ``members``, held compactly (a chain's middle
    needs nothing else): arrays indexed by a GeneID's rank in the set."""

    members: IdBitmap
    successor: array[int]  # 0: discontinued without one
    date: array[int]  # YYYYMMDD; 0: no row was read for it

    def get(self, gene_id: int) -> tuple[int | None, str] | None:
        """(successor, YYYY-MM-DD) of ``gene_id``, or None if it has no row here."""
        if gene_id not in self.members:
            return None
        index = self.members.rank(gene_id) - 1
        day = self.date[index]
        if not day:
            return None
        successor = self.successor[index]
        return (successor or None), f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}"


def scan_links(stream: BinaryIO, members: IdBitmap, stop: threading.Event | None = None
               ) -> tuple[Links, Scan]:
    """Read ``stream`` once more, keeping the successor and date of every GeneID of
    ``members`` (and counting what a scan counts)."""
    result = Scan()
    size = len(members)
    links = Links(members, array("I", bytes(4 * size)), array("I", bytes(4 * size)))
    rank = members.rank
    is_member = members.fast_contains
    for disc_id, parts in _valid_rows(stream, result, stop):
        if is_member(disc_id):
            index = rank(disc_id) - 1
            links.successor[index] = 0 if parts[1] == b"-" else int(parts[1])
            links.date[index] = int(parts[4])
    return links, result


GZIP_ERRORS = (zlib.error, EOFError, gzip.BadGzipFile)
