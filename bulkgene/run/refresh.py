"""``--refresh-list``: a finished taxon run listed again, grown by the GeneIDs that are new.

The run's list stays what it was (its input, bound by its digest); the taxa are listed anew
into ``DIR/taxa/refresh-000N/`` (resumable, as the first listing), and the GeneIDs NCBI lists
now that the run has never requested become a ``refresh`` segment of the plan (run/growth.py),
which every task takes in and fetches like any batch. GeneIDs the run's latest list had and
NCBI no longer lists are reported in ``taxa_left.tsv`` (their records stay). One refresh at a
time: while the run has anything left to fetch (the first list, or a refresh's new GeneIDs),
``--refresh-list`` goes on with it instead, so an array's tasks, or a re-run after a kill,
never list twice for one refresh.

The steps, each safe to repeat after a kill: the listing completes (its ``list.json``); the
segment is appended under the plan's lock (``growth.grow_requested``, as ``--add``'s), found
by its key if it was before; the left GeneIDs are written; ``applied.json`` marks the
refresh done, last.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import msgspec

from bulkgene import durable
from bulkgene.config import DownloadConfig
from bulkgene.input import plan as idplan
from bulkgene.input.idset import IdBitmap
from bulkgene.input.lines import file_digest
from bulkgene.input.plan import IdPlan
from bulkgene.input.taxon_list import GENES_NAME, TAXA_DIR, TaxonList
from bulkgene.layout import MISSING_TAXA_NAME, TAXA_LEFT_NAME, TAXA_REPORT_NAME
from bulkgene.run import growth

log = logging.getLogger("bulkgene")
APPLIED_NAME = "applied.json"
LEFT_NAME = "left.txt"
TAXA_LEFT_HEADER = b"gene_id\trefresh\n"


class Applied(msgspec.Struct):
    """``applied.json``: what a refresh did to the run."""

    refresh: int
    new: int  # GeneIDs fetched because of it
    left: int  # GeneIDs its list no longer has


def refresh_directory(directory: Path, number: int) -> Path:
    return directory / TAXA_DIR / f"refresh-{number:04d}"


def _applied(directory: Path) -> list[Path]:
    return sorted(path.parent for path in (directory / TAXA_DIR).glob(f"refresh-*/{APPLIED_NAME}"))


def next_refresh(directory: Path) -> Path:
    """The refresh to go on with (listed or half applied), else a new one."""
    return refresh_directory(directory, len(_applied(directory)) + 1)


def run_plan(config: DownloadConfig, directory: Path) -> IdPlan | None:
    """The run's plan (its list and growths) if the run was ever prepared, else None."""
    key = [file_digest(name) for name in config.inputs]
    if config.column is not None:
        key.append(f"column={config.column}")
    return idplan.load(directory, key)


def unfinished(config: DownloadConfig, plan: IdPlan) -> list[str]:
    """The tasks of the run that have batches still to fetch."""
    return growth.unfinished_tasks(plan, config.out_dir, config.task.count,
                                   config.output.batch_size)


def _read_genes(path: Path) -> Iterator[int]:
    with durable.open_read(path) as handle:
        for line in handle:
            if line.strip():
                yield int(line)


def _latest_list(directory: Path) -> Path:
    """genes.txt of the run's latest list: its last applied refresh's, else the first's."""
    applied = _applied(directory)
    return (applied[-1] if applied else directory) / TAXA_DIR / GENES_NAME


def apply(config: DownloadConfig, directory: Path, refreshed: TaxonList, number: int) -> Applied:
    """Grow the run by the refreshed list's new GeneIDs and report the ones that left. Call
    under the plan's lock, with the run finished."""
    where = refresh_directory(directory, number)
    genes = refreshed.genes_path(where)
    plan = run_plan(config, directory)
    if plan is None:
        raise ValueError("apply needs a run that was prepared")
    now = IdBitmap()
    for gene_id in _read_genes(genes):
        now.add(gene_id)
    left = [gene_id for gene_id in _read_genes(_latest_list(directory)) if gene_id not in now]
    key = f"refresh:{number}:{file_digest(str(genes))}"
    grown = growth.grow_requested(config, plan, "refresh", key,
                                  f"the taxa listed again (refresh {number})", _read_genes(genes))
    new = sum(sum(segment.per_task) for segment in grown.segments if segment.key == key)
    durable.write_atomically(where / LEFT_NAME, b"".join(b"%d\n" % gene_id for gene_id in left))
    rows = [TAXA_LEFT_HEADER]
    for done in [*_applied(directory), where]:
        rows += [b"%s\t%d\n" % (line.strip(), int(done.name.split("-")[1]))
                 for line in durable.read_bytes(done / LEFT_NAME).splitlines() if line.strip()]
    durable.write_atomically(directory / TAXA_LEFT_NAME, b"".join(rows))
    for name in (TAXA_REPORT_NAME, MISSING_TAXA_NAME):  # the reports describe the latest list
        durable.write_atomically(directory / name, durable.read_bytes(where / name))
    applied = Applied(number, new, len(left))
    durable.write_atomically(where / APPLIED_NAME, msgspec.json.encode(applied))
    log.info("refresh %d: %d GeneIDs NCBI lists now are new to the run and are fetched; %d the "
             "run's list had are no longer listed (%s; their reports stay)", number, new,
             len(left), directory / TAXA_LEFT_NAME)
    return applied
