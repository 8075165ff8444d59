"""Why a taxon gave no GeneID under ``--gene-type``: NCBI's counts say which types it has.

A listing filtered by gene type answers a known taxon without genes of those types as it
answers an unknown name: with nothing (``{}``). Telling the user to check the name would
be wrong, so such a taxon's ``/gene/taxon/counts`` are asked (one request), and if it has
genes, none of the types asked, its reason becomes ``NO_GENE_OF_TYPES`` with the types it
has. The counts are advice: a failed count leaves the usual reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bulkgene.config import TaxonSelection
from bulkgene.input.taxon_list import Chain
from bulkgene.ncbi.taxon import parse_taxon_counts, taxon_counts_request, types_had_instead
from bulkgene.net.exchange import Exchanger, GaveUp, Refused

NO_GENE_OF_TYPES = "NO_GENE_OF_TYPES"


async def explain_empty(exchanger: Exchanger, selection: TaxonSelection, chains: list[Chain],
                        attempts: int, offload: Callable[..., Awaitable[Any]]) -> None:
    """Give each finished chain that listed nothing under a gene type filter, with no reason
    of NCBI's own, the types its taxon has instead (when it has genes at all)."""
    if not selection.gene_types:
        return
    for chain in chains:
        state = chain.state
        if (not state.done or state.refused is not None or state.notices
                or chain.taxon_listed):
            continue
        try:
            by_type = await exchanger.exchange(
                taxon_counts_request(chain.taxon), attempts,
                lambda reply: parse_taxon_counts(reply.body))
        except (Refused, GaveUp):
            continue
        had = types_had_instead(by_type, selection.gene_types)
        if had is None:
            continue
        await offload(chain.explain, NO_GENE_OF_TYPES,
                      f"NCBI knows this taxon, but lists no gene of the types asked "
                      f"({', '.join(selection.gene_types)}); its genes by type: "
                      + ", ".join(f"{gene_type} {count}" for gene_type, count in had))
