"""Why an input held no GeneID at all: the error, its first rejected lines, and advice that fits them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bulkgene.errors import InputError
from bulkgene.input.columns import not_gene_ids

SHOWN_REJECTS = 5
_SHAPES_KEPT = 20
# model organisms' taxonomy IDs: human, mouse, rat, zebrafish, fly, worm, arabidopsis,
# yeast (two), E. coli K-12 (two), cow, chicken, pig, frog, macaque, chimpanzee
_COMMON_TAXA = frozenset({9606, 10090, 10116, 7955, 7227, 6239, 3702, 559292, 4932, 511145,
                          83333, 9913, 9031, 9823, 8364, 9544, 9598})
_ENSEMBL = re.compile(r"ENS[A-Z]*G\d{6,}", re.IGNORECASE)
_SYMBOL = re.compile(r"[A-Za-z][A-Za-z0-9@._/-]{0,39}(?:$|\s|\\t|,|;)")
_TR = {b"\t": "tr '\\t' '\\n'", b",": "tr ',' '\\n'", b" ": "tr ' ' '\\n'"}


@dataclass(frozen=True, slots=True)
class Reject:
    """An input line that holds no valid GeneID."""

    source: str
    line_number: int
    text: str
    reason: str

    def row(self) -> bytes:
        """Its rejects.tsv row: file, line, text (escaped by the reader), reason."""
        source = self.source.replace("\t", " ").replace("\n", " ")
        return f"{source}\t{self.line_number}\t{self.text}\t{self.reason}\n".encode()


@dataclass(frozen=True, slots=True)
class LineShape:
    """A rejected line's fields: which hold a number that could be a GeneID."""

    separator: bytes
    numeric: tuple[bool, ...]
    first: bytes


@dataclass
class FileReport:
    """What one file held, for the errors and warnings after it is read."""

    name: str
    nonblank: bool = False
    data_lines: int = 0
    valid: int = 0
    binary: bool = False
    shapes: list[LineShape] = field(default_factory=list)  # of the first rejected lines
    names: list[str] = field(default_factory=list)  # its header line's (or first line's)
    column: int | None = None  # the column read (0-based), None: the first field

    def keep_shape(self, shape: LineShape) -> None:
        if len(self.shapes) < _SHAPES_KEPT:
            self.shapes.append(shape)


def shown(reject: Reject) -> str:
    """A rejected line in a message: its text is escaped already, so it is quoted, not repr'd."""
    return f"{reject.source}:{reject.line_number}: '{reject.text}' ({reject.reason})"


def _column_advice(shapes: list[LineShape], names: list[str] | None = None,
                   read: int | None = None) -> str | None:
    """For lines with a number in some field: which ``--column`` (or ``tr``) would read them.
    A header line's ``names`` rule out columns they say are something else (a date, a
    tax_id) and name those that are left; ``read`` is the column that held no GeneID."""
    if not shapes:
        return None
    widths = {len(s.numeric) for s in shapes}
    always = [j for j in range(max(widths))
              if all(j < len(s.numeric) and s.numeric[j] for s in shapes)]
    if not always:
        return None
    if names and read is not None:  # a header picked a column that held none: name others
        return _named_column_advice(always, names, read)
    if always[0] != 0:  # a name first, a number further on: a table of symbols and GeneIDs
        columns = " or ".join(f"--column {j + 1}" for j in always)
        return (f"the first field of these lines is not a number, but column {always[0] + 1} "
                f"holds one on every line: if those are GeneIDs, pass {columns}")
    firsts = {s.first for s in shapes}
    others = [j for j in always if j != 0]
    # one value first on every line, or a model organism's taxonomy ID: gene_info-like rows
    tax_like = (len(firsts) == 1 and len(shapes) > 1) or all(
        f.isdigit() and int(f) in _COMMON_TAXA for f in firsts)
    if tax_like and others:
        columns = " or ".join(f"--column {j + 1}" for j in others)
        example = ", ".join(f.decode("ascii", "replace") for f in sorted(firsts)[:3])
        return (f"these lines are table rows whose first number ({example}) looks like a "
                f"tax_id: if the GeneIDs are in the next column, pass {columns}")
    if all(all(s.numeric) for s in shapes):
        tr = _TR.get(shapes[0].separator, _TR[b","])
        return ("a line holds several numbers and bulkgene never guesses which one is the "
                f"GeneID: if each line is a list of GeneIDs, put one GeneID per line (e.g. "
                f"`{tr}`); if each line is a table row, choose its GeneID column with "
                "--column N")
    columns = ", ".join(f"--column {j + 1}" for j in always)
    return (f"these lines are table rows with numbers in more than one column, and bulkgene "
            f"never guesses which one is the GeneID: choose its column ({columns})")


def _named_column_advice(always: list[int], names: list[str], read: int) -> str:
    """The GeneID column a header named held none: the numeric columns its names don't rule
    out (gene_history's GeneID is '-' for a discontinued gene: its Discontinued_GeneID, not
    its Discontinue_Date)."""
    held = f"column {read + 1} ({names[read]})" if read < len(names) else f"column {read + 1}"
    usable = [j for j in always if j != read and (j >= len(names) or not_gene_ids(names[j]) is None)]
    if not usable:
        return (f"{held} holds no GeneID on these lines, and no other column holds GeneIDs on "
                "every line: check the file, or choose the column with --column N")
    named = " or ".join(f"--column {j + 1}" + (f" ({names[j]})" if j < len(names) else "")
                        for j in usable)
    return (f"{held} holds no GeneID on these lines; if the GeneIDs you want are in another "
            f"column, pass {named}")


def no_ids_error(reports: list[FileReport], rejects: list[Reject]) -> InputError:
    """Why the input held no GeneID at all, with its first rejected lines and what to do."""
    where = ", ".join(r.name for r in reports)
    if not any(r.nonblank for r in reports):
        return InputError(f"the input ({where}) is empty: give a file with one GeneID per "
                          "line, e.g. 7157 for TP53")
    if not any(r.data_lines for r in reports):
        return InputError(f"the input ({where}) holds only blank lines, # comments and "
                          "headers, no GeneIDs: give a file with one GeneID per line, e.g. 7157 for TP53")
    lines = "\n".join(f"  {shown(r)}" for r in rejects)
    rejected = sum(r.data_lines for r in reports)
    advice: list[str] = []
    if any(r.binary for r in reports):
        advice.append("the input looks binary, not text: give a plain-text (or gzip) list of "
                      "GeneIDs")
    if any(_ENSEMBL.match(r.text) for r in rejects):
        advice.append("Ensembl IDs (ENSG...) aren't GeneIDs: convert them first, e.g. with "
                      "NCBI's gene2ensembl file (Ensembl_gene_identifier -> GeneID)")
    named = next((r for r in reports if r.names and r.column is not None), None)
    column = _column_advice([s for r in reports for s in r.shapes],
                            named.names if named else None, named.column if named else None)
    if column is not None:
        advice.append(column)
    elif any(r.reason == "NOT_A_GENE_ID" and _SYMBOL.match(r.text) and not _ENSEMBL.match(r.text)
             for r in rejects):
        advice.append("gene symbols aren't GeneIDs: convert them first, e.g. with NCBI's "
                      "gene_info (Symbol -> GeneID) or `datasets summary gene symbol TP53 "
                      "--taxon human`")
    if column is None and any(r.reason == "SEVERAL_IDS" for r in rejects):
        advice.append("a line holds several numbers and bulkgene never guesses which one is "
                      "the GeneID: choose the column with --column N, or put one GeneID per line")
    if any(r.reason == "MISSING_COLUMN" for r in rejects):
        advice.append("lines have fewer fields than the GeneID column: check --column")
    advice.append("bulkgene reads NCBI GeneIDs (positive integers such as 7157): one per "
                  "line, the first field, or the column --column N names")
    return InputError(f"no GeneID in the input ({where}): all {rejected} data lines were "
                      f"rejected. The first ones:\n{lines}\n" + "\n".join(advice))
