"""A complete listing fixed: the union in genes.txt, taxa.tsv, missing_taxa.tsv, list.json last.

Also what ``status`` says of a listing that is not complete yet. The files are described in
input/taxon_list.py.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from bulkgene import durable
from bulkgene.config import TaxonSelection
from bulkgene.errors import StateError
from bulkgene.input.idset import IdBitmap
from bulkgene.input.taxon_list import (
    GENES_NAME,
    LIST_FORMAT,
    LIST_NAME,
    MISSING_TAXA_HEADER,
    TAXA_DIR,
    TAXA_REPORT_HEADER,
    Chain,
    ChainState,
    TaxonList,
    selection_record,
)
from bulkgene.layout import MISSING_TAXA_NAME, TAXA_REPORT_NAME


def _tsv_text(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def finalize(directory: Path, selection: TaxonSelection, chains: list[Chain], server: str = ""
             ) -> TaxonList:
    """Fix the list: the union of the chains in ``genes.txt``, the reports, ``list.json``
    last (bound to ``server``, the origin that listed it). Idempotent: a kill before
    ``list.json`` makes the next run do it again."""
    taxa_dir = directory / TAXA_DIR
    union = IdBitmap()
    shared = 0
    results = []
    with durable.atomic_file(taxa_dir / GENES_NAME) as handle:
        for chain in chains:
            lines = []
            own = IdBitmap()  # this taxon's GeneIDs: parts of a split taxon are disjoint
            for gene_id in chain.gene_ids():
                if not own.add(gene_id):
                    continue
                if union.add(gene_id):
                    lines.append(b"%d\n" % gene_id)
                else:
                    shared += 1
                if len(lines) >= 65536:
                    handle.write(b"".join(lines))
                    lines.clear()
            handle.write(b"".join(lines))
            results.append(chain.result(len(own)))
    done = TaxonList(LIST_FORMAT, selection_record(selection, server), results, len(union), shared)
    if not done.gene_ids:
        # a list of nothing is never fixed: the next run asks again (it may have been an
        # outage at NCBI, issue 373), and the reports below say what each taxon answered
        for path in taxa_dir.glob("chain-*"):
            path.unlink(missing_ok=True)
        (taxa_dir / GENES_NAME).unlink(missing_ok=True)
    report = [TAXA_REPORT_HEADER]
    missing = [MISSING_TAXA_HEADER]
    for result in done.taxa:
        notes = [code for code, _ in result.notices]
        if result.short:
            notes.append(f"SHORT_OF_TOTAL_COUNT({result.total_count})")
        if result.unusable:  # why a page's reports gave fewer GeneIDs than it held
            notes.append(f"UNUSABLE_GENE_IDS({result.unusable})")
        total = "" if result.total_count is None else str(result.total_count)
        report.append(f"{_tsv_text(result.taxon)}\t{result.gene_ids}\t{total}\t"
                      f"{result.duplicates}\t{result.pages}\t{','.join(notes)}\n".encode())
        if (why := result.missing_reason) is not None:
            missing.append(f"{_tsv_text(result.taxon)}\t{why[0]}\t{_tsv_text(why[1])}\n"
                           .encode())
    durable.write_atomically(directory / TAXA_REPORT_NAME, b"".join(report))
    durable.write_atomically(directory / MISSING_TAXA_NAME, b"".join(missing))
    if done.gene_ids:
        durable.write_atomically(taxa_dir / LIST_NAME, msgspec.json.encode(done))
    return done


def describe(done: TaxonList) -> str:
    """One line on what the list holds, for the log."""
    listed = sum(1 for result in done.taxa if result.gene_ids)
    text = (f"{done.gene_ids} GeneIDs listed for {listed} of {len(done.taxa)} "
            f"tax{'on' if len(done.taxa) == 1 else 'a'}")
    duplicates = sum(result.duplicates for result in done.taxa)
    if duplicates:
        text += f" ({duplicates} repeated across pages, dropped)"
    if done.shared:
        text += f"; {done.shared} listed by more than one taxon, fetched once"
    return text


def listing_progress(directory: Path) -> str | None:
    """What an unfinished listing in ``directory`` has committed, in words (for ``status``);
    None if there is none. Reads only: a running listing is never disturbed."""
    taxa_dir = directory / TAXA_DIR
    if not taxa_dir.is_dir() or (taxa_dir / LIST_NAME).exists():
        return None
    wholes: list[ChainState] = []
    parts: list[ChainState] = []
    for path in sorted(taxa_dir.glob("chain-*.json")):
        try:
            state = msgspec.json.decode(durable.read_bytes(path), type=ChainState)
        except (OSError, msgspec.DecodeError, StateError):
            continue  # being replaced, or damaged: the run itself says which
        (parts if path.stem.count("-") > 1 else wholes).append(state)
    listed = sum(state.ids_bytes // 4 for state in wholes if not state.split) + sum(
        state.ids_bytes // 4 for state in parts)
    promised = sum(state.total_count or 0 for state in wholes)
    done = sum(1 for state in wholes if state.done)
    return (f"the taxa's GeneIDs are being listed: {listed} so far"
            + (f" of about {promised}" if promised else "")
            + f", {done} of {len(wholes)} taxa done")
