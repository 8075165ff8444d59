"""A grown run's answers given for other GeneIDs: a successor's record taking the place of the replaced IDs.

``--follow-replaced`` fetches the live successor C of missing GeneIDs A1, A2... that NCBI's
gene history says were replaced (input/segments.py). C's record is then written as NCBI
writes the answer to a replaced GeneID: with the originals as its ``query``, the rows
``A -> C`` in replaced.tsv, and the A's counted found (and ``followed``). The rows the A's
had in missing.tsv carried their explanation, which the replaced.tsv rows keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from bulkgene.layout import EXPLANATION_COLUMNS, NOT_EXPLAINED, class_for_reason
from bulkgene.model import BatchOutcome, OnBehalf, Record


@dataclass
class Answered:
    """How many requested GeneIDs a batch's answer accounts for."""

    found: int
    followed: int = 0
    rows: dict[int, bytes] = field(default_factory=dict)  # original -> its earlier row


def explanation(row: bytes | None, reason: bytes | None = None) -> bytes:
    """The explanation fields of an earlier missing.tsv row (empty fields if it had none),
    with a tab before each; for a row now written with another ``reason``, its history
    class follows that reason (a refused GeneID the history doesn't list is REFUSED until
    the API answers it with silence: then it is NOT_IN_HISTORY, and back)."""
    if row is None:
        return NOT_EXPLAINED
    fields = row.split(b"\t")
    if len(fields) != 2 + len(EXPLANATION_COLUMNS):
        return NOT_EXPLAINED
    if reason is not None and fields[2]:
        fields[2] = class_for_reason(fields[2], reason)
    return b"\t" + b"\t".join(fields[2:])


def reason(row: bytes) -> bytes:
    """The ``reason`` field of a missing.tsv row."""
    fields = row.split(b"\t", 2)
    return fields[1] if len(fields) > 1 else b""


def history_class(row: bytes) -> bytes:
    """The ``history`` field of an explained row (empty if it has none)."""
    fields = row.split(b"\t")
    return fields[2] if len(fields) == 2 + len(EXPLANATION_COLUMNS) else b""


def _with_queries(line: bytes, originals: tuple[int, ...]) -> bytes:
    """A report line with ``query`` naming the originals; a gene-only or TSV line as it is."""
    if not line.startswith(b"{"):
        return line
    report = orjson.loads(line)
    if not isinstance(report, dict) or "query" not in report or "gene" not in report:
        return line
    report["query"] = [str(original) for original in originals]
    return orjson.dumps(report) + b"\n"


def rekeyed(outcome: BatchOutcome, behalf: OnBehalf) -> tuple[list[Record], Answered]:
    """The outcome's records as answers to the originals its GeneIDs were fetched for."""
    answered = Answered(0)
    records: list[Record] = []
    for record in outcome.records:
        originals: list[int] = []
        for query in record.queries:
            for original, row in behalf.rows.get(query, ()):
                originals.append(original)
                answered.rows[original] = row
        if not originals:  # an answer to no successor (a TSV row nobody asked for): as is
            records.append(record)
            continue
        answered.found += len(originals)
        answered.followed += len(originals)
        records.append(Record(record.gene_id, tuple(originals),
                              _with_queries(record.line, tuple(originals))))
    return records, answered
