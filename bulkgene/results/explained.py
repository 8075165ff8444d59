"""The explanation columns of missing.tsv and replaced.tsv checked for consistency (``bulkgene verify``).

A report is either as a fetch writes it (its own columns) or explained: five more columns,
``history current_gene_id discontinued_on symbol tax_id``, on every row. A row's fields must
agree with its class: REPLACED names a live GeneID and a day, DISCONTINUED a day but no
GeneID, NOT_IN_HISTORY and REFUSED nothing else (REFUSED only for a REJECTED_BY_SERVER row,
NOT_IN_HISTORY never for one), and a row added after the last explain has all five
empty. missing.tsv's rows by class must add up to the checkpoint's counts.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from bulkgene import durable, layout
from bulkgene.output.checkpoint import Checkpoint

_DAY = re.compile(rb"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])")
_MAX_PROBLEMS = 20


def row_problem(fields: list[bytes], missing: bool = False) -> str | None:
    """What is wrong with an explained row's fields (all of them), or None; ``missing``: a
    missing.tsv row, whose second field is the reason."""
    if len(fields) != 2 + len(layout.EXPLANATION_COLUMNS):
        return f"{len(fields)} columns, not {2 + len(layout.EXPLANATION_COLUMNS)}"
    history, current, day, symbol, tax_id = fields[2:]
    if history == b"":
        return None if not (current or day or symbol or tax_id) else (
            "explanation fields without a history class")
    if history in (b"NOT_IN_HISTORY", b"REFUSED"):
        if current or day or symbol or tax_id:
            return f"{history.decode()} with other explanation fields set"
        if history != layout.class_for_reason(history, fields[1] if missing else b""):
            return (f"{history.decode()} for a GeneID whose reason is "
                    f"{fields[1].decode(errors='replace')!r} (REFUSED goes with "
                    f"{layout.REFUSED_REASON.decode()}, NOT_IN_HISTORY with any other)")
        return None
    if history not in (b"DISCONTINUED", b"REPLACED"):
        return f"history {history.decode(errors='replace')!r} is not a class"
    if history == b"REPLACED" and not current.isdigit():
        return "REPLACED without a current_gene_id"
    if history == b"DISCONTINUED" and current:
        return "DISCONTINUED with a current_gene_id"
    if not _DAY.fullmatch(day):
        return f"discontinued_on {day.decode(errors='replace')!r} is not YYYY-MM-DD"
    if not tax_id.isdigit():
        return f"tax_id {tax_id.decode(errors='replace')!r} is not a number"
    return None


def problems(directory: Path, state: Checkpoint) -> list[str]:
    """Every inconsistency of ``directory``'s reports' explanations (the first 20 rows)."""
    found: list[str] = []
    classes: Counter[bytes] = Counter()
    explained_missing = False
    refused = 0
    for name, header in ((layout.MISSING_NAME, layout.MISSING_HEADER),
                         (layout.REPLACED_NAME, layout.REPLACED_HEADER)):
        path = directory / name
        if not path.exists():
            continue
        with durable.open_read(path) as handle:
            first = handle.readline()
            if first not in (header, layout.explained_header(header)):
                found.append(f"{path}: its header is neither a fetch's nor an explained one")
                continue
            explained = first != header
            explained_missing = explained_missing or (explained and name == layout.MISSING_NAME)
            missing = name == layout.MISSING_NAME
            for number, line in enumerate(handle, 2):
                fields = line.rstrip(b"\n").split(b"\t")
                problem = (row_problem(fields, missing) if explained
                           else None if len(fields) == 2 else f"{len(fields)} columns, not 2")
                refused += missing and fields[1:2] == [layout.REFUSED_REASON]
                if problem is not None:
                    if len(found) < _MAX_PROBLEMS:
                        found.append(f"{path}:{number}: {problem}")
                elif explained and name == layout.MISSING_NAME:
                    classes[fields[2]] += 1
    totals = state.totals
    counted = {b"DISCONTINUED": totals.missing_discontinued, b"REPLACED": totals.missing_replaced,
               b"NOT_IN_HISTORY": totals.missing_not_in_history,
               b"REFUSED": totals.missing_refused}
    if refused != totals.refused:
        found.append(f"{directory / layout.MISSING_NAME}: {refused} rows REJECTED_BY_SERVER, "
                     f"the checkpoint counted {totals.refused}")
    if explained_missing or any(counted.values()):
        for history, count in counted.items():
            if classes[history] != count:
                found.append(f"{directory / layout.MISSING_NAME}: {classes[history]} rows "
                             f"{history.decode()}, the checkpoint counted {count}")
    return found
