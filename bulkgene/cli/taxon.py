"""``fetch``'s whole-organism options, declared once, and what ``--dry-run`` says about taxa."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from bulkgene.config import GENE_TYPES, MAX_IDS_PER_REQUEST, DownloadConfig, TaxonSelection
from bulkgene.errors import ConfigError

F = TypeVar("F", bound=Callable[..., object])
_MAX_TAXA = 100_000
# what one report takes on disk, roughly: NCBI's complete reports run 1-8 KB (a page of 1000
# is ~5 MB); the abbreviated ones a few dozen bytes to a few hundred
_BYTES_PER_REPORT = {"COMPLETE": 5000, "COUNTS_ONLY": 150, "IDS_ONLY": 60}

TAXON_EXAMPLES = """
\b
Whole organisms (NCBI lists their GeneIDs, then they are fetched like an ID file):
  bulkgene fetch --taxon 9606 --out human/                 # or --taxon human
  bulkgene fetch --taxon 'Homo sapiens' --gene-type PROTEIN_CODING --out coding/
  bulkgene fetch --taxa-file organisms.txt --out genes/    # one tax ID or name per line
  bulkgene fetch --taxon 9606 --dry-run --out human/       # genes by type, time, disk
  bulkgene fetch --taxon Mammalia --include-subtree --out mammals/
"""


def taxon_options(function: F) -> F:
    """``--taxon``, ``--taxa-file``, ``--gene-type``, ``--include-subtree``, ``--refresh-list``."""
    for option in reversed((
        click.option("--taxon", "taxa", multiple=True, metavar="TAXON",
                     help="Fetch every gene of this organism: an NCBI tax ID (9606) or a name "
                     "('Homo sapiens', human), as NCBI's API takes them (repeatable). NCBI "
                     "lists its GeneIDs first (resumably, into DIR/taxa/); with INPUT files "
                     "the union is fetched."),
        click.option("--taxa-file", type=click.Path(path_type=Path, dir_okay=False),
                     help="A file of taxa, one tax ID or name per line (# comments and blank "
                     "lines skipped). A taxon NCBI doesn't know goes to missing_taxa.tsv."),
        click.option("--gene-type", "gene_types", multiple=True,
                     type=click.Choice(GENE_TYPES, case_sensitive=False), metavar="TYPE",
                     help="List only genes of this type (repeatable): the API's types, in "
                     "any case, e.g. PROTEIN_CODING, ncRNA, PSEUDO, tRNA."),
        click.option("--include-subtree", is_flag=True,
                     help="Also the genes of every taxon below (the API's tax_search_subtree): "
                     "needed above species (Mammalia), and for a species whose genes sit at "
                     "its strains."),
        click.option("--refresh-list", is_flag=True,
                     help="List the taxa again although the run's list is complete: fetch "
                     "only GeneIDs that are new, report the ones that left."),
    )):
        function = option(function)
    return function


def read_taxa_file(path: Path) -> list[str]:
    """The taxa of a taxa file: each line a tax ID or a name (a tab-separated line: its first
    field), blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"cannot read the taxa file {path}: {reason}; give a text file with "
                          "one tax ID or name per line") from None
    taxa = []
    for line in text.splitlines():
        taxon = line.split("\t", 1)[0].strip()
        if taxon and not taxon.startswith("#"):
            taxa.append(taxon)
    if not taxa:
        raise ConfigError(f"the taxa file {path} names no taxon: give one tax ID (9606) or name "
                          "(human, 'Homo sapiens') per line")
    if len(taxa) > _MAX_TAXA:
        raise ConfigError(f"the taxa file {path} names {len(taxa)} taxa, more than "
                          f"{_MAX_TAXA}: for a whole clade use --taxon NAME --include-subtree")
    return taxa


def taxon_selection(taxa: tuple[str, ...], taxa_file: Path | None, gene_types: tuple[str, ...],
                    include_subtree: bool, refresh: bool) -> TaxonSelection | None:
    """The options as a TaxonSelection (None when no taxon is named); each taxon once."""
    named = [taxon.strip() for taxon in taxa]
    if taxa_file is not None:
        named += read_taxa_file(taxa_file)
    if not named:
        if gene_types or include_subtree or refresh:
            raise ConfigError("--gene-type, --include-subtree and --refresh-list apply to "
                              "--taxon or --taxa-file: name a taxon, or leave them out")
        return None
    return TaxonSelection(tuple(dict.fromkeys(named)), tuple(dict.fromkeys(gene_types)),
                          include_subtree, refresh)


def _human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def dry_run_taxa(config: DownloadConfig, human_time: Callable[[float], str]) -> None:
    """Ask NCBI what the taxa hold and print genes by type, requests, time and disk."""
    import asyncio

    from bulkgene.ncbi.taxon import types_had_instead
    from bulkgene.run.taxa import count_taxa_now

    counts, sent = asyncio.run(count_taxa_now(config))
    listed = 0
    pages = 0
    for count in counts:
        by_type = ", ".join(f"{gene_type} {number}" for gene_type, number in count.by_type)
        codes = ", ".join(notice.code for notice in count.notices)
        if count.refused is not None:
            click.echo(f"taxon {count.taxon!r}: refused by NCBI ({count.refused})")
            continue
        asked = config.taxa.gene_types if config.taxa is not None else ()
        if not count.listed and not codes and (
                had := types_had_instead(count.by_type, asked)) is not None:
            click.echo(f"taxon {count.taxon!r}: no gene of the types asked "
                       f"({', '.join(asked)}); NCBI counts "
                       + ", ".join(f"{gene_type} {number}" for gene_type, number in had))
            continue
        if not count.listed:
            why = codes or "NOTHING_FOUND: unknown to NCBI, or no genes at exactly this taxon"
            click.echo(f"taxon {count.taxon!r}: no gene to fetch ({why})"
                       + (f"; NCBI counts {by_type} (with the taxa below it: "
                          "--include-subtree)" if by_type else ""))
            continue
        listed += count.listed
        pages += math.ceil(count.listed / MAX_IDS_PER_REQUEST)
        click.echo(f"taxon {count.taxon!r}: {count.listed} genes to fetch"
                   + (f" ({codes})" if codes else "")
                   + (f"; NCBI's counts by type: {by_type}" if by_type else ""))
    batches = math.ceil(listed / config.output.batch_size)
    per_batch = 1 if config.query.endpoint == "dataset-report" else 2
    requests = pages + batches * per_batch
    rate = config.effective_requests_per_second
    size = listed * _BYTES_PER_REPORT[config.query.returned_content]
    click.echo(f"taxa: {listed} GeneIDs at most (taxa may share genes), listed in {pages} "
               f"requests, then fetched in {batches} batches of up to "
               f"{config.output.batch_size} (up to {per_batch} request{'s' if per_batch > 1 else ''}"
               " each)")
    click.echo(f"time: about {human_time(requests / rate)} at {rate:g} requests/s; disk: about "
               f"{_human_bytes(size)} of {config.query.returned_content} reports"
               f"{' before gzip' if config.output.compress == 'gzip' else ''}. "
               f"{sent} requests were sent to count; nothing was written.")
