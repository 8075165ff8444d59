"""The GeneIDs NCBI lists for a run's taxa, on disk: committed page by page, fixed once complete.

    D/taxa/selection.json    what was asked (taxa, gene types, subtree) and of which server
                             (its origin), written first: a run with other settings is refused
    D/taxa/chain-0003.ids    taxon 3's GeneIDs so far, each once, 4 bytes little-endian
    D/taxa/chain-0003.json   how far taxon 3 got: the next page token, the committed length of
                             its .ids, pages, page 1's total_count, duplicates dropped, and
                             whether it is listed in parts, one per gene type
    D/taxa/chain-0003-PSEUDO.ids, .json   such a part: the same, for its type
    D/taxa/genes.txt         the union of every taxon's GeneIDs, one per line, each once: the
                             run's input, read by the ID pipeline like any ID file
    D/taxa/list.json         written last: the list is complete and fixed
    D/taxa.tsv               one row per taxon: GeneIDs, total_count, duplicates, notes
                             (SHORT_OF_TOTAL_COUNT(N), UNUSABLE_GENE_IDS(N), NCBI's codes)
    D/missing_taxa.tsv       the taxa that gave no GeneID, with NCBI's reason

A page commits as a batch does: its new GeneIDs are appended to the chain's .ids and
fsync'd, then chain-NNNN.json is replaced atomically. On resume each .ids is cut back to its
committed length, so a kill at any instant loses at most the page in flight, and the chain
goes on from the token it committed. ``D`` is the run's plan directory: an array's tasks
share one list.
"""

from __future__ import annotations

import os
import shlex
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec

from bulkgene import durable
from bulkgene.config import TaxonSelection
from bulkgene.errors import StateError
from bulkgene.input.idset import IdBitmap
from bulkgene.layout import TAXA_DIR_NAME

TAXA_DIR = TAXA_DIR_NAME
SELECTION_NAME = "selection.json"
GENES_NAME = "genes.txt"
LIST_NAME = "list.json"
TAXA_REPORT_HEADER = b"taxon\tgene_ids\ttotal_count\tduplicates_dropped\tpages\tnotes\n"
MISSING_TAXA_HEADER = b"taxon\treason\tmessage\n"
LIST_FORMAT = 1
T = TypeVar("T")


class ChainState(msgspec.Struct):
    """How far one taxon's page chain got, as last committed."""

    taxon: str
    token: str | None = None  # the next page's token; None before page 1 or after the last
    ids_bytes: int = 0  # committed length of the chain's .ids file
    pages: int = 0
    total_count: int | None = None  # page 1's promise
    duplicates: int = 0  # GeneIDs a page repeated (dropped)
    unusable: int = 0  # reports whose gene_id is not a GeneID (skipped)
    restarts: int = 0
    notices: list[tuple[str, str]] = []  # page 1's warnings: (code, text)
    refused: str | None = None  # the server refused the taxon itself: why
    short: bool = False  # accepted with fewer GeneIDs than total_count promised
    # a whole taxon's chain after page 1: listed in parts, one chain per gene type (True),
    # or on as one chain (False); None: not decided yet
    split: bool | None = None
    done: bool = False


class Selection(msgspec.Struct):
    """``selection.json``: the request the chains belong to."""

    format: int
    taxa: list[str]
    gene_types: list[str]
    include_subtree: bool
    # the origin of the server that listed them (NetworkSpec.server); "" in lists made
    # before it was recorded: not compared
    server: str = ""


class TaxonResult(msgspec.Struct):
    """One taxon in the complete list."""

    taxon: str
    gene_ids: int  # its GeneIDs (before removing those another taxon listed too)
    total_count: int | None
    duplicates: int
    pages: int
    notices: list[tuple[str, str]]
    refused: str | None
    short: bool
    unusable: int = 0  # reports whose gene_id was no GeneID (skipped); older lists lack it

    @property
    def missing_reason(self) -> tuple[str, str] | None:
        """(reason, message) if the taxon gave no GeneID: NCBI's code where it gave one."""
        if self.gene_ids:
            return None
        if self.refused is not None:
            return "REFUSED_BY_SERVER", self.refused
        if self.notices:
            return self.notices[0]
        return ("NOTHING_FOUND", "NCBI answered with no gene: an unknown tax ID or name, no "
                "genes annotated at exactly this taxon (try --include-subtree), or a taxonomy "
                "outage at NCBI")


class TaxonList(msgspec.Struct):
    """``list.json``: the complete list and what each taxon gave."""

    format: int
    selection: Selection
    taxa: list[TaxonResult]
    gene_ids: int  # unique GeneIDs in genes.txt
    shared: int  # GeneIDs listed by more than one taxon (written once)

    def genes_path(self, directory: Path) -> Path:
        return directory / TAXA_DIR / GENES_NAME

    @property
    def missing(self) -> list[TaxonResult]:
        return [result for result in self.taxa if result.missing_reason is not None]


def selection_record(selection: TaxonSelection, server: str = "") -> Selection:
    return Selection(LIST_FORMAT, list(selection.taxa), sorted(selection.gene_types),
                     selection.include_subtree, server)


def _setting(value: object) -> str:
    """A setting in words, as the checkpoint's refusal says them."""
    return "none" if value == [] else repr(value)


def selection_changes(old: Selection, new: Selection) -> list[str]:
    """What differs between the selection a list was made for and ``new``, in words
    ("server: was 'http://a', now 'http://b'"); a server not recorded is not compared."""
    changes = [f"{name}: was {_setting(getattr(old, name))}, now {_setting(getattr(new, name))}"
               for name in ("taxa", "gene_types", "include_subtree")
               if getattr(old, name) != getattr(new, name)]
    if old.server and new.server and old.server != new.server:
        changes.append(f"server: was {old.server!r}, now {new.server!r}")
    return changes


def _refuse_changed(directory: Path, old: Selection, changes: list[str], complete: bool
                    ) -> StateError:
    """A list (``complete``) or an interrupted listing made with other settings, refused as
    the checkpoint refuses a run with other settings."""
    what = ("the gene list of its taxa" if complete else
            "a listing of its taxa's GeneIDs that was interrupted (nothing has been fetched "
            "yet)")
    taxa = " ".join(f"--taxon {shlex.quote(taxon)}" for taxon in old.taxa[:5]) + (
        " ..." if len(old.taxa) > 5 else "")
    options = " ".join([*(f"--gene-type {kind}" for kind in old.gene_types),
                        *(["--include-subtree"] if old.include_subtree else [])])
    same = (f" ({taxa}{' ' + options if options else ''}"
            + (f"; server {old.server}" if old.server else "") + ")")
    return StateError(
        f"{directory} holds {what}, made with other settings ({'; '.join(changes)}): a "
        "directory holds one run. Re-run with the original taxa and options to go on with it"
        f"{same}, or pass --restart to move the old run aside (nothing is deleted) and start "
        "over, or use another --out directory")


def _read_struct(path: Path, kind: type[T]) -> T | None:
    """A state file as ``kind``, None if absent; damage is a StateError with advice."""
    try:
        raw = durable.read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.DecodeError as exc:
        raise StateError(
            f"{path} is damaged ({exc}): it was changed outside bulkgene. Delete the "
            f"{path.parent} directory and run the same command again: the taxa are listed "
            "anew (nothing has been fetched for them before the list is complete)") from None


def load_list(directory: Path, selection: TaxonSelection, server: str = ""
              ) -> TaxonList | None:
    """The complete list in ``directory`` if one was made for ``selection`` (from
    ``server``, the base URL's origin); a StateError if it was made with other settings."""
    done = _read_struct(directory / TAXA_DIR / LIST_NAME, TaxonList)
    if done is None:
        return None
    if changes := selection_changes(done.selection, selection_record(selection, server)):
        raise _refuse_changed(directory, done.selection, changes, complete=True)
    if not done.genes_path(directory).is_file():
        raise StateError(f"{done.genes_path(directory)} is gone, but {LIST_NAME} says the list "
                         "is complete: restore it, or --restart to list the taxa anew")
    return done


def begin(directory: Path, selection: TaxonSelection, server: str = "") -> None:
    """Make ``D/taxa`` ready for ``selection`` listed from ``server``: an interrupted
    listing made with other settings (taxa, gene types, subtree, server) is refused, as a
    run's checkpoint is: going on with it would mix two lists."""
    taxa_dir = directory / TAXA_DIR
    taxa_dir.mkdir(parents=True, exist_ok=True)
    wanted = selection_record(selection, server)
    old = _read_struct(taxa_dir / SELECTION_NAME, Selection)
    if old is not None:
        changes = selection_changes(old, wanted)
        if not changes:
            if old != wanted:  # listed before the server was recorded: it is from now on
                durable.write_atomically(taxa_dir / SELECTION_NAME, msgspec.json.encode(wanted))
            return
        if any(taxa_dir.glob("chain-*.json")):
            raise _refuse_changed(directory, old, changes, complete=False)
    for path in taxa_dir.iterdir():
        if path.name.startswith("chain-") and not path.is_symlink() and path.is_file():
            path.unlink()
    durable.write_atomically(taxa_dir / SELECTION_NAME, msgspec.json.encode(wanted))


def _ids_bytes(ids: list[int]) -> bytes:
    packed = array("I", ids)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _read_ids(path: Path, length: int) -> array[int]:
    ids = array("I")
    with durable.open_read(path) as handle:
        ids.frombytes(handle.read(length))
    if sys.byteorder != "little":
        ids.byteswap()
    return ids


@dataclass
class Chain:
    """One taxon's page chain on disk: resumed from its last commit, committed page by page."""

    directory: Path  # D/taxa
    index: int
    state: ChainState
    part: str | None = None  # the gene type of a part; None: the taxon's whole chain
    seen: IdBitmap = field(default_factory=IdBitmap)
    parts: list[Chain] = field(default_factory=list)  # a split whole chain's parts

    @property
    def _stem(self) -> str:
        return f"chain-{self.index:04d}" + (f"-{self.part}" if self.part else "")

    @property
    def ids_path(self) -> Path:
        return self.directory / f"{self._stem}.ids"

    @property
    def state_path(self) -> Path:
        return self.directory / f"{self._stem}.json"

    @property
    def taxon(self) -> str:
        return self.state.taxon

    @property
    def listed(self) -> int:
        """Unique GeneIDs committed so far."""
        return len(self.seen)

    @property
    def taxon_listed(self) -> int:
        """A whole chain's GeneIDs so far: its parts' if it is split, else its own."""
        return sum(part.listed for part in self.parts) if self.state.split else self.listed

    @classmethod
    def open(cls, directory: Path, index: int, taxon: str, part: str | None = None) -> Chain:
        """The chain of taxon ``index`` (or of its gene type ``part``) as last committed (a
        fresh one if none was)."""
        taxa_dir = directory / TAXA_DIR
        chain = cls(taxa_dir, index, ChainState(taxon), part)
        state = _read_struct(chain.state_path, ChainState)
        if state is not None and state.taxon == taxon:
            chain.state = state
        size = durable.cut_to(chain.ids_path, chain.state.ids_bytes)
        if (size or 0) < chain.state.ids_bytes:
            raise StateError(f"{chain.ids_path} is shorter than its committed length: the list "
                             f"was damaged outside bulkgene. Delete {taxa_dir} and run the same "
                             "command again to list the taxa anew")
        if chain.state.ids_bytes:
            for gene_id in _read_ids(chain.ids_path, chain.state.ids_bytes):
                chain.seen.add(gene_id)
        return chain

    def commit_page(self, gene_ids: list[int], next_token: str | None, *,
                    total_count: int | None = None, notices: list[tuple[str, str]] | None = None,
                    unusable: int = 0) -> int:
        """Keep a page's new GeneIDs durably, then the token to go on from; the number new."""
        new = [gene_id for gene_id in gene_ids if self.seen.add(gene_id)]
        state = self.state
        if state.pages == 0:
            state.total_count = total_count
            state.notices = list(notices or [])
        if new:
            with durable.open_append(self.ids_path) as handle:
                handle.seek(state.ids_bytes)
                handle.truncate()
                handle.write(_ids_bytes(new))
                handle.flush()
                os.fsync(handle.fileno())
        state.ids_bytes += 4 * len(new)
        state.duplicates += len(gene_ids) - len(new)
        state.unusable += unusable
        state.pages += 1
        state.token = next_token
        self._save()
        return len(new)

    def decide(self, split: bool) -> None:
        """After page 1: list the taxon in parts, one per gene type, or on as one chain."""
        self.state.split = split
        self._save()

    def finish(self, *, short: bool = False) -> None:
        self.state.short = short
        self.state.done = True
        self._save()

    def explain(self, code: str, text: str) -> None:
        """A finished chain that gave nothing: why, in place of page 1's (absent) notices."""
        self.state.notices = [(code, text[:600])]
        self._save()

    def refuse(self, reason: str) -> None:
        """The server refused the taxon itself: it is reported missing with ``reason``."""
        self.state.refused = reason[:300]
        self.state.done = True
        self._save()

    def start_over(self) -> None:
        """Drop what the chain listed and go again from page 1 (a refused token, a broken
        chain): the restart is counted."""
        restarts = self.state.restarts + 1
        self.state = ChainState(self.state.taxon, restarts=restarts)
        self.seen = IdBitmap()
        durable.cut_to(self.ids_path, 0)
        self._save()

    def _save(self) -> None:
        durable.write_atomically(self.state_path, msgspec.json.encode(self.state))

    def gene_ids(self) -> Iterator[int]:
        """The chain's GeneIDs in the order the pages gave them (a split chain: its parts')."""
        if self.state.split:
            for part in self.parts:
                yield from part.gene_ids()
        elif self.state.ids_bytes:
            yield from _read_ids(self.ids_path, self.state.ids_bytes)

    def result(self, listed: int) -> TaxonResult:
        """What the taxon gave, ``listed`` of its own GeneIDs: a split chain's counts are
        its parts' (its page 1 only decided the split)."""
        state = self.state
        parts = self.parts if state.split else []
        return TaxonResult(
            state.taxon, listed, state.total_count,
            sum(p.state.duplicates for p in parts) if parts else state.duplicates,
            state.pages + sum(p.state.pages for p in parts), state.notices, state.refused,
            any(p.state.short for p in parts) if parts else state.short,
            sum(p.state.unusable for p in parts) if parts else state.unusable)
