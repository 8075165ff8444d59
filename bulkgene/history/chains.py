"""Each GeneID followed through the gene_history to its end: a live successor, a discontinuation, or nothing.

    A  not a Discontinued_GeneID anywhere        NOT_IN_HISTORY
    A -> -                                       DISCONTINUED
    A -> B, B no Discontinued_GeneID             REPLACED by B (B is live)
    A -> B -> C, A -> B -> -, ...                followed to the end, whatever the order of rows

The first pass over the file keeps the rows of the run's IDs and the sets of every
discontinued GeneID and of every GeneID named as a successor, so a successor outside the
first set is known to be live at once, and a one-step chain needs nothing more. When some
chain goes on (a successor was itself discontinued), a second pass keeps the successor and
date of every GeneID in both sets, the only ones that can be a chain's middle (few in a real
file, 8 bytes each), and every chain, however long, is followed in memory: two passes at
most. A chain is followed for at most ``max_hops`` rows and a GeneID met twice ends it (the
file should hold no cycle, but nothing a file holds may hang a run): such a GeneID is called
DISCONTINUED, since no live successor can be told, and is reported apart.

``symbol`` and ``tax_id`` are those of the requested GeneID's own row; ``discontinued_on``
is the date of the chain's last row, the day its fate was sealed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bulkgene.errors import HistoryError
from bulkgene.history.rows import (
    GZIP_ERRORS,
    HistoryRow,
    Links,
    Scan,
    open_history,
    scan,
    scan_links,
)
from bulkgene.input.idset import IdBitmap

log = logging.getLogger("bulkgene")

HistoryClass = Literal["DISCONTINUED", "REPLACED", "NOT_IN_HISTORY"]
HISTORY_CLASSES: tuple[HistoryClass, ...] = ("DISCONTINUED", "REPLACED", "NOT_IN_HISTORY")
# chains exist and consumers cap them, a PHP loader at 30 (docs/ncbi-gene-history.md §7)
MAX_HOPS = 30


@dataclass(frozen=True, slots=True)
class Explanation:
    """What the history says about one GeneID."""

    history: HistoryClass
    current_gene_id: int | None = None  # the live GeneID at the chain's end, if any
    discontinued_on: str = ""  # YYYY-MM-DD of the chain's last row
    symbol: str = ""  # the requested GeneID's symbol when it was discontinued
    tax_id: int | None = None
    hops: int = 0  # rows followed
    problem: Literal["cycle", "too_long"] | None = None

    def fields(self) -> bytes:
        """The five TSV fields ``history current_gene_id discontinued_on symbol tax_id``."""
        return b"\t".join((self.history.encode(),
                           b"" if self.current_gene_id is None else b"%d" % self.current_gene_id,
                           self.discontinued_on.encode(), self.symbol.encode(),
                           b"" if self.tax_id is None else b"%d" % self.tax_id))


NOT_IN_HISTORY = Explanation("NOT_IN_HISTORY")


@dataclass
class Explained:
    """The explanations of a set of GeneIDs, and what reading the file met on the way."""

    by_id: dict[int, Explanation] = field(default_factory=dict)
    passes: int = 0
    rows: int = 0  # rows in the file
    malformed: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    too_long: list[int] = field(default_factory=list)

    def explanation(self, gene_id: int) -> Explanation:
        return self.by_id.get(gene_id, NOT_IN_HISTORY)

    def counts(self, gene_ids: Iterable[int]) -> dict[HistoryClass, int]:
        """How many of ``gene_ids`` fall in each class."""
        counts = dict.fromkeys(HISTORY_CLASSES, 0)
        for gene_id in gene_ids:
            counts[self.explanation(gene_id).history] += 1
        return counts


def _reading(path: Path, name: str) -> HistoryError:
    """What a damaged file is, as an error (to raise from the gzip reader's exception)."""
    return HistoryError(
        f"the gene history {name} is not a complete gzip file: it was cut short or damaged. "
        "Download it again, or pass another copy with --history.")


def _first_pass(path: Path, name: str, wanted: IdBitmap, stop: threading.Event | None) -> Scan:
    try:
        with open_history(path, name) as stream:
            return scan(stream, wanted, stop)
    except GZIP_ERRORS:
        raise _reading(path, name) from None
    except OSError as exc:
        raise HistoryError(f"reading the gene history {name} failed: {exc.strerror or exc}; "
                           "check the file and the disk, then run again") from None


def _second_pass(path: Path, name: str, middles: IdBitmap, stop: threading.Event | None
                 ) -> Links:
    try:
        with open_history(path, name) as stream:
            links, _ = scan_links(stream, middles, stop)
            return links
    except GZIP_ERRORS:
        raise _reading(path, name) from None
    except OSError as exc:
        raise HistoryError(f"reading the gene history {name} failed: {exc.strerror or exc}; "
                           "check the file and the disk, then run again") from None


def explain_ids(path: Path, name: str, gene_ids: IdBitmap, max_hops: int = MAX_HOPS,
                stop: threading.Event | None = None) -> Explained:
    """Explain every GeneID of ``gene_ids`` from the history file at ``path``.

    ``name`` names the file in messages (its URL, for a downloaded copy). Raises
    HistoryError if the file can't be read or holds no gene_history row at all, and
    Interrupted soon after ``stop`` is set.
    """
    first = _first_pass(path, name, gene_ids, stop)
    if first.lines == 0:
        shown = "; ".join(f"line {n}: {text!r}" for n, text in first.examples[:3])
        raise HistoryError(
            f"{name} holds no gene_history row ({first.malformed} lines, none of five "
            f"tab-separated fields: tax_id, GeneID, Discontinued_GeneID, Discontinued_Symbol, "
            f"Discontinue_Date){f'; {shown}' if shown else ''}. Is it NCBI's gene_history "
            "(https://ftp.ncbi.nlm.nih.gov/gene/DATA/gene_history.gz)?")
    discontinued, named = first.discontinued, first.successors
    assert discontinued is not None and named is not None
    result = Explained(passes=1, rows=first.lines, malformed=first.malformed,
                       examples=first.examples)
    rows = first.rows
    links = None
    if any(row.successor is not None and row.successor in discontinued for row in rows.values()):
        # some chain goes on: every GeneID both discontinued and named as a successor may be
        # its middle, and one more pass keeps just their successors and dates
        links = _second_pass(path, name, discontinued.intersection(named), stop)
        result.passes = 2
    for gene_id, row in rows.items():
        explanation = _follow(gene_id, row, rows, links, discontinued, max_hops, name)
        result.by_id[gene_id] = explanation
        if explanation.problem == "cycle":
            result.cycles.append(gene_id)
        elif explanation.problem == "too_long":
            result.too_long.append(gene_id)
    return result


def _follow(gene_id: int, first: HistoryRow, rows: dict[int, HistoryRow], links: Links | None,
            discontinued: IdBitmap, max_hops: int, name: str) -> Explanation:
    """Where ``gene_id``'s chain ends."""
    successor, date = first.successor, first.date
    seen = {gene_id}
    hops = 1

    def ending(history: HistoryClass, current: int | None,
               problem: Literal["cycle", "too_long"] | None = None) -> Explanation:
        return Explanation(history, current, date, first.symbol, first.tax_id, hops, problem)

    while True:
        if successor is None:
            return ending("DISCONTINUED", None)
        if successor not in discontinued:
            return ending("REPLACED", successor)
        if successor in seen:
            return ending("DISCONTINUED", None, "cycle")
        if hops >= max_hops:
            return ending("DISCONTINUED", None, "too_long")
        seen.add(successor)
        hops += 1
        known = rows.get(successor)
        if known is not None:
            successor, date = known.successor, known.date
            continue
        link = links.get(successor) if links is not None else None
        if link is None:
            raise HistoryError(
                f"{name} changed while it was being read (a row seen in the first pass is "
                "gone in the next): let whatever writes it finish, then run again")
        successor, date = link
