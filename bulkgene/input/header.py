"""A table's first lines: comments before the header skipped, the header found, row names told apart.

Exports put a comment before the header (``# exported by tool X``, then ``Symbol<TAB>GeneID``):
a ``#`` line that names no columns is a comment, and the header may follow it. R's
``write.csv`` and pandas' ``to_csv`` put the row names first, under an empty header name
(``"","symbol"`` / ``"1","TP53"``; ``,symbol`` / ``0,TP53``): read as GeneIDs, 1, 2, 3...
fetched the genes of the row numbers and said done.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from bulkgene.errors import InputError
from bulkgene.input.columns import (
    FIELD_QUOTES,
    gene_id_column_names,
    header_names,
    is_gene_id_name,
    is_tax_id_name,
    refuse_numbered_non_gene_column,
    shown_text,
)

_SYMBOL_NAMES = frozenset({"symbol", "genesymbol", "gene", "genename", "hgncsymbol", "name",
                           "externalgenename", "mgisymbol"})


@dataclass
class FirstLine:
    """What a file's first non-blank line is: a comment to look past, a header, or data."""

    comment: bool = False  # a prose ``#`` line: the header, if any, is on a later line
    header: bool = False  # names the columns: not data
    index: int | None = None  # the column to read (0-based); None: the first field
    names: list[str] = field(default_factory=list)  # the header's names (even if not one)


def first_line(source: str, line: bytes, column: int | str | None) -> FirstLine:
    """Judge a file's first non-blank line (``column`` as parse_column made it)."""
    names = header_names(line)
    index = column if isinstance(column, int) else None
    if _is_prose_comment(line, names):  # `# exported by tool X`: the header may follow
        return FirstLine(comment=True)
    if index is not None:
        refuse_numbered_non_gene_column(source, line, index)
    if isinstance(column, str):
        if column.lower() not in (n.lower() for n in names):
            raise InputError(
                f"--column {column!r}: the first line of {source} names no such column (it is "
                f"'{shown_text(line.strip())}'); give a column number (1, 2, ...) or a name "
                "from that header line")
        index = [n.lower() for n in names].index(column.lower())
        return FirstLine(header=True, index=index, names=names)
    if any(is_gene_id_name(n) for n in names):
        if index is None:
            index = next(i for i, n in enumerate(names) if is_gene_id_name(n))
        return FirstLine(header=True, index=index, names=names)
    first_name = next(iter(names), "")
    if column is None and is_tax_id_name(first_name):
        _refuse_tax_ids(source, first_name)
    return FirstLine(index=index, names=names)


def _is_prose_comment(line: bytes, names: list[str]) -> bool:
    """A ``#`` line that is words, not column names (NCBI's ``#tax_id<TAB>GeneID`` is a
    header): no tab, and no list of names without spaces (``# genes, from tool X``)."""
    stripped = line.lstrip()
    if not stripped.startswith(b"#"):
        return False
    return not names or (b"\t" not in stripped and any(" " in n.strip() for n in names))


def _refuse_tax_ids(source: str, first_name: str) -> None:
    raise InputError(
        f"{source}: its first line names the first column {first_name!r}: taxonomy "
        "IDs (9606 is human), not GeneIDs. Choose the GeneID column with --column "
        "N (counted from 1) or --column NAME (if column 1 does hold GeneIDs: "
        f"--column {shlex.quote(first_name)})")


class RowNumbers:
    """Watches a first column whose header name is empty: 1, 2, 3... (or 0, 1, 2...) on
    every data line, in order, is R's or pandas' row names, not GeneIDs."""

    def __init__(self, source: str, names: list[str]) -> None:
        self.source = source
        self.names = names
        self.alive = True
        self.first: int | None = None
        self.last = -1

    @classmethod
    def watching(cls, source: str, first: FirstLine) -> RowNumbers | None:
        """A watcher if ``first`` is such a header and the first column is the one read."""
        names = first.names
        if first.index in (None, 0) and len(names) >= 2 and not names[0] and any(names[1:]):
            return cls(source, names)
        return None

    def see(self, line: bytes) -> None:
        """A data line: its first field must go on counting."""
        stripped = line.strip()
        separator = b"\t" if b"\t" in stripped else b","
        value = stripped.split(separator, 1)[0].strip(FIELD_QUOTES)
        expected = self.last + 1 if self.first is not None else None
        if not value.isdigit() or len(value) > 12 or (
                expected is None and int(value) not in (0, 1)) or (
                expected is not None and int(value) != expected):
            self.alive = False
            return
        self.last = int(value)
        if self.first is None:
            self.first = self.last

    def check(self) -> None:
        """At the end of the file: row numbers all along are an InputError with advice."""
        if not self.alive or self.first is None:
            return
        others = [(i, n) for i, n in enumerate(self.names) if i and n]
        genes = gene_id_column_names(self.names)
        if genes:
            advice = (f"the GeneIDs are in column {genes[0] + 1} ({self.names[genes[0]]}): pass "
                      f"--column {genes[0] + 1}")
        else:
            shown = ", ".join(f"{i + 1} ({n})" for i, n in others[:5])
            advice = (f"if another column holds GeneIDs, choose it with --column N (counted "
                      f"from 1) or --column NAME (its columns: {shown})")
            if any("".join(c for c in n.lower() if c.isalnum()) in _SYMBOL_NAMES
                   for _, n in others):
                advice += ("; gene symbols aren't GeneIDs: convert them first, e.g. with "
                           "NCBI's gene_info (Symbol -> GeneID) or `datasets summary gene "
                           "symbol TP53 --taxon human`")
        raise InputError(
            f"{self.source}: its first column has no name in the header line and holds the "
            f"numbers {self.first} to {self.last} in order: the row numbers R's write.csv and "
            "pandas' to_csv put first, not GeneIDs. Nothing was fetched; "
            f"{advice}")
