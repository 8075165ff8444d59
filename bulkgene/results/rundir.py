"""Which tasks a run directory holds, and their files up to what each checkpoint committed.

A plain run is one task in DIR; an array (``--split slurm``, ``--task-count N``) is N
tasks in ``DIR/task-000i/``. Readers see them as one list. Each file is read only up to
the length its task's checkpoint committed, so reading a directory while a fetch runs, or
after a kill, never sees half a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bulkgene import durable, layout
from bulkgene.errors import StateError
from bulkgene.layout import task_directories
from bulkgene.output import checkpoint as ckpt
from bulkgene.results.status import refuse_no_run

_BLOCK_BYTES = 1 << 20
_GZIP_BLOCK_BYTES = 256 << 10  # about 1.5 MiB of lines once unzipped


@dataclass(frozen=True)
class TaskFiles:
    """One task directory: its parameters and the files its checkpoint committed."""

    directory: Path
    index: int
    count: int
    gene_only: bool  # --record gene: a line is the gene itself, not a report match
    tsv: bool  # --format tsv: shards hold NCBI's table, not JSON
    committed: dict[str, int]
    returned_content: str = "COMPLETE"  # IDS_ONLY and COUNTS_ONLY reports hold few fields

    def shards(self) -> list[Path]:
        """The task's shards, in shard order."""
        return [self.directory / name for name in sorted(self.committed)
                if layout.is_shard_name(name)]

    def length(self, name: str) -> int:
        return self.committed.get(name, 0)


def tasks_of(out_dir: Path) -> list[TaskFiles]:
    """Every task of ``out_dir`` that has committed something; StateError if it holds no run."""
    directories = task_directories(out_dir)
    if not directories:
        raise refuse_no_run(out_dir)
    tasks = []
    for directory in directories:
        state = ckpt.load(directory)
        if state is None:
            continue
        params = state.params
        tasks.append(TaskFiles(directory, int(params.get("task_index", 0)),
                               int(params.get("task_count", 1)), params.get("record") == "gene",
                               params.get("format") == "tsv", dict(state.file_lengths),
                               str(params.get("returned_content") or "COMPLETE")))
    return tasks


def read_blocks(path: Path, length: int, torn_tail_ok: bool = False) -> Iterator[bytes]:
    """The first ``length`` bytes of ``path`` (gunzipped if it is .gz), in blocks of whole
    lines; a file shorter than that is an error (data lost outside bulkgene), and so is a
    torn last line unless ``torn_tail_ok`` (a report being appended to now)."""
    import zlib

    gzipped = path.name.endswith(".gz")
    left = length
    tail = b""
    unzip = zlib.decompressobj(zlib.MAX_WBITS | 16) if gzipped else None
    with durable.open_read(path) as handle:
        while left > 0:
            raw = handle.read(min(_GZIP_BLOCK_BYTES if gzipped else _BLOCK_BYTES, left))
            if not raw:
                raise StateError(f"{path} is shorter than the {length} bytes its checkpoint "
                                 "committed: it was changed outside bulkgene (bulkgene verify "
                                 "says more)")
            left -= len(raw)
            if unzip is not None:
                data = b""
                while raw:
                    data += unzip.decompress(raw)
                    if unzip.eof:  # one gzip member per batch: start the next
                        raw = unzip.unused_data
                        unzip = zlib.decompressobj(zlib.MAX_WBITS | 16)
                    else:
                        raw = b""
                raw = data
            block = tail + raw
            cut = block.rfind(b"\n") + 1
            tail = block[cut:]
            if cut:
                yield block[:cut]
    if tail and not torn_tail_ok:
        raise StateError(f"{path} ends in a torn line within its committed length: it was "
                         "changed outside bulkgene (bulkgene verify says more)")
