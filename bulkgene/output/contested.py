"""Who writes a requested gene another requested GeneID was replaced by: its own answer, or a parked one.

Request 10 and 20; the server answers 10 with gene 20. Gene 20 is normally written by 20's
own batch, as the answer to 20. But by the time 20 is asked (or before), 20 may be gone
(discontinued) or merged further (into 30): then 20's own answer writes nothing, and the
record that answered 10 was the only one of gene 20. So the batch of 10 *parks* that record
in ``DIR/.claims/<layout>/parked/20`` before it commits, and gene 20 is written once by
whoever learns second that 20's own answer didn't write it:

- the batch of 10, after parking, looks for 20 among the IDs whose committed (or about to
  be committed) answer was not themselves: the first column of every task's missing.tsv
  and replaced.tsv. Found: it writes the record itself.
- 20's own batch, once its missing/replaced rows are on disk, looks for a parked record of
  each of its IDs its answer didn't give back: found, it writes the parked record.

Each side makes its own fact durable before it looks for the other's, so at least one of
them sees the other; when both do, ``taken/20`` (created exclusively, naming the task and
batch) decides. A task killed after taking finds its own ``taken`` file naming a batch its
checkpoint doesn't hold, and writes the gene when it fetches again. 20's own answer, when it
does give gene 20, is written as usual (its query names 20) and the parked record is never
used, unless someone took the gene before (a ``bulkgene retry`` that now finds a GeneID
answered with silence before): then the gene is left out, written once already.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from bulkgene import durable
from bulkgene.input.idset import IdBitmap
from bulkgene.layout import MISSING_NAME, REPLACED_NAME

PARKED_DIR_NAME = "parked"
TAKEN_DIR_NAME = "taken"


class _Tail:
    """The first column of a growing report, read from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode = -1
        self._offset = 0

    def new_ids(self) -> list[int]:
        try:
            handle = durable.open_read(self.path)
        except FileNotFoundError:
            return []
        with handle:
            info = os.fstat(handle.fileno())
            if info.st_ino != self._inode or info.st_size < self._offset:
                self._inode, self._offset = info.st_ino, 0  # rewritten or cut back: anew
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a row still being written is read next time
        self._offset += end
        ids = []
        for row in data[:end].splitlines():
            first = row.split(b"\t", 1)[0]
            if first.isdigit():  # the header aside
                ids.append(int(first))
        return ids


class _TaskAnswers:
    """The requested GeneIDs one task answered with something else or nothing."""

    def __init__(self, directory: Path) -> None:
        self._tails = [_Tail(directory / MISSING_NAME), _Tail(directory / REPLACED_NAME)]
        self.ids = IdBitmap()

    def refresh(self) -> None:
        for tail in self._tails:
            self.ids.update(gene for gene in tail.new_ids() if gene <= 2**31 - 1)


class ContestedGenes:
    """One task's part in writing requested genes that other requested IDs were replaced by."""

    def __init__(self, directory: Path, task_index: int, own_dir: Path,
                 sibling_dirs: Iterable[Path] = (), root: Path | None = None) -> None:
        self.directory = directory
        self._root = root or directory.parent.parent  # DIR, of DIR/.claims/<layout>
        self._made: set[str] = set()
        self.task_index = task_index
        self._answers = [_TaskAnswers(own_dir), *(_TaskAnswers(d) for d in sibling_dirs)]
        self._vacant_now = IdBitmap()  # noted by this process (rows perhaps not flushed yet)
        self._written: set[int] = set()  # taken by this task in a committed batch, or now
        self._taken_names: set[str] = set()  # taken/ as listed at the start of this commit

    def open(self, is_committed: Callable[[int], bool]) -> None:
        """Learn which genes this task took in a batch its checkpoint holds: written."""
        taken = self.directory / TAKEN_DIR_NAME
        try:
            names = os.listdir(taken)
        except FileNotFoundError:
            return
        for name in names:
            if name.isdigit():
                owner = self._owner(int(name))
                if owner is not None and owner[0] == self.task_index and is_committed(owner[1]):
                    self._written.add(int(name))

    def begin_commit(self) -> None:
        """List the genes taken so far (a few), once per commit rather than once per record."""
        try:
            self._taken_names = set(os.listdir(self.directory / TAKEN_DIR_NAME))
        except FileNotFoundError:
            self._taken_names = set()

    def note_vacant(self, gene_ids: Iterable[int]) -> None:
        """``gene_ids`` were answered by something other than themselves (rows written)."""
        self._vacant_now.update(gene_ids)

    def _vacant(self, gene_id: int) -> bool:
        if gene_id in self._vacant_now:
            return True
        for answers in self._answers:
            if gene_id not in answers.ids:
                answers.refresh()
            if gene_id in answers.ids:
                return True
        return False

    def replacement(self, gene_id: int, line: bytes, batch_index: int) -> bool:
        """A batch received requested gene ``gene_id`` for another ID: park its record, and
        whether this batch writes it (its own answer is known not to have)."""
        if gene_id in self._written:
            return False
        self._park(gene_id, line)
        return self._vacant(gene_id) and self._take(gene_id, batch_index)

    def parked(self, gene_ids: Iterable[int]) -> list[int]:
        """Which of ``gene_ids`` (answered by something else, rows on disk) have a parked record."""
        wanted = [gene for gene in gene_ids if gene not in self._written]
        if not wanted:
            return []
        try:
            names = set(os.listdir(self.directory / PARKED_DIR_NAME))
        except FileNotFoundError:
            return []
        return [gene for gene in wanted if str(gene) in names]

    def take_parked(self, gene_id: int, batch_index: int) -> bytes | None:
        """The parked record of ``gene_id`` if this batch is the one to write it."""
        if not self._take(gene_id, batch_index):
            return None
        return durable.read_bytes(self.directory / PARKED_DIR_NAME / str(gene_id))

    def written_by_another(self, gene_id: int) -> bool:
        """Whether a self-answered requested gene was written before from a parked record
        (only a GeneID answered otherwise before can be: a retried refused one)."""
        if gene_id in self._written:
            return True
        if str(gene_id) not in self._taken_names:
            return False
        owner = self._owner(gene_id)
        return owner is not None and owner[0] != self.task_index

    def _park(self, gene_id: int, line: bytes) -> None:
        parked = self._subdirectory(PARKED_DIR_NAME)
        path = parked / str(gene_id)
        if path.exists():
            return
        durable.create_exclusively(path, line, str(os.getpid()))

    def _take(self, gene_id: int, batch_index: int) -> bool:
        """Whether this task writes ``gene_id`` now, in batch ``batch_index``."""
        taken = self._subdirectory(TAKEN_DIR_NAME)
        mine = f"{self.task_index} {batch_index}".encode()
        path = taken / str(gene_id)
        if not durable.create_exclusively(path, mine, str(os.getpid())):
            owner = self._owner(gene_id)
            if owner is None or owner[0] != self.task_index:
                return False
            # taken by this task in a batch it never committed (killed): written now
            durable.write_atomically(path, mine)
        self._written.add(gene_id)
        return True

    def _subdirectory(self, name: str) -> Path:
        """``parked/`` or ``taken/``, made once: no link followed on the way, the group's
        bits kept (the tasks of an array may be several users')."""
        path = self.directory / name
        if name not in self._made:
            durable.make_run_directories(self._root, path)
            self._made.add(name)
        return path

    def _owner(self, gene_id: int) -> tuple[int, int] | None:
        try:
            fields = durable.read_bytes(self.directory / TAKEN_DIR_NAME / str(gene_id)).split()
        except FileNotFoundError:
            return None
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            return None
        return int(fields[0]), int(fields[1])
