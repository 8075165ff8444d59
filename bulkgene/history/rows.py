"""NCBI's gene_history read as a stream: the rows asked about, every discontinued GeneID, bad lines counted.

The format (docs/ncbi-gene-history.md): five tab-separated fields per line, ``tax_id GeneID
Discontinued_GeneID Discontinued_Symbol Discontinue_Date``; ``-`` as GeneID for a record
discontinued without a replacement; the date as ``YYYYMMDD``; a ``#`` line is the header
(older copies had a ``#Format:`` line). Row order means nothing: rows are matched by
GeneID, never by position.

One pass reads the file once, however large, and keeps only what the run needs: the full
rows of the GeneIDs asked about, and (on the first pass) the set of every discontinued
GeneID, a roaring bitmap of a few bytes per ID, so that a successor is known to be live
without reading the file again. A line that is not such a row is skipped and counted, never
a crash; a file with no row at all is an error (it is not NCBI's gene_history).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bulkgene.errors import HistoryError
from bulkgene.input.idset import MAX_GENE_ID, IdBitmap

GZIP_MAGIC = b"\x1f\x8b"
HEADER = b"#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\tDiscontinue_Date\n"
_CHUNK_BYTES = 1 << 20
_EXAMPLES = 5  # malformed lines quoted in the warning
_MAX_SYMBOL_CHARS = 100
_MAX_ID_DIGITS = 10


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
    discontinued: IdBitmap | None = None  # every Discontinued_GeneID, when asked for
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


def scan(stream: BinaryIO, wanted: Container[int], collect_discontinued: bool) -> Scan:
    """Read ``stream`` once: keep the rows of ``wanted`` GeneIDs, and with
    ``collect_discontinued`` the set of every discontinued GeneID.

    Every field of every row is checked (numbers where numbers belong, a plausible date): a
    line that fails is skipped and counted, and its GeneID is not taken as discontinued.
    Raises zlib.error, EOFError or gzip.BadGzipFile (GZIP_ERRORS) for a
    damaged gzip stream.
    """
    result = Scan(discontinued=IdBitmap() if collect_discontinued else None)
    seen = result.discontinued
    rows = result.rows
    tail = b""
    number = 0

    def bad(line: bytes) -> None:
        result.malformed += 1
        if len(result.examples) < _EXAMPLES:
            result.examples.append((number, line[:80].decode("utf-8", "replace")))

    while True:
        chunk = stream.read(_CHUNK_BYTES)
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop() if chunk else b""
        numbers: list[int] = []
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
                date = date[:-1]
            # the same checks as parse_row's, inline: this loop runs for every row of the file
            if not (disc.isdigit() and len(disc) <= _MAX_ID_DIGITS and tax.isdigit()
                    and (gene == b"-" or (gene.isdigit() and len(gene) <= _MAX_ID_DIGITS))
                    and len(date) == 8 and date.isdigit()
                    and 0 < int(date[4:6]) <= 12 and 0 < int(date[6:]) <= 31):
                bad(line)
                continue
            disc_id = int(disc)
            if not 0 < disc_id <= MAX_GENE_ID or (gene != b"-" and not 0 < int(gene) <= MAX_GENE_ID):
                bad(line)
                continue
            result.lines += 1
            numbers.append(disc_id)
            if disc_id in wanted:
                rows[disc_id] = _row(parts)
        if seen is not None:
            seen.update(numbers)
        if not chunk:
            return result


GZIP_ERRORS = (zlib.error, EOFError, gzip.BadGzipFile)
