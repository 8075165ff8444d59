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
from bulkgene.layout import CHECKPOINT_NAME, is_shard_name, task_dir_name, task_directories
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
    run_dir: Path | None = None  # the directory read (an array's, or this one): what to verify
    rewrites: tuple[str, ...] = ()  # reports whose committed version is NAME.rewrite until renamed

    def shards(self) -> list[Path]:
        """The task's shards, in shard order."""
        return [self.directory / name for name in sorted(self.committed)
                if layout.is_shard_name(name)]

    def length(self, name: str) -> int:
        return self.committed.get(name, 0)

    def report_path(self, name: str) -> Path:
        """Where the committed version of report ``name`` is: NAME.rewrite while a rewrite
        the checkpoint committed is not renamed yet (output/rewrite.py), else NAME."""
        if name in self.rewrites:
            pending = self.directory / (name + layout.REWRITE_SUFFIX)
            if pending.exists():
                return pending
        return self.directory / name

    @property
    def verify_dir(self) -> Path:
        return self.run_dir or self.directory


def tasks_of(out_dir: Path) -> list[TaskFiles]:
    """Every task of ``out_dir`` that has committed something; StateError if it holds no run."""
    directories = task_directories(out_dir)
    if not directories:
        raise refuse_no_run(out_dir)
    if directories != [out_dir] and (planted := planted_beside_tasks(out_dir, directories)):
        raise StateError(f"{planted} and read the run again; `bulkgene verify {out_dir}` "
                         "shows every problem")
    tasks = []
    for directory in directories:
        if directory != out_dir and directory.is_symlink():
            raise StateError(
                f"{directory} is a symbolic link: a task's directory must be a real one in "
                f"{out_dir}, and bulkgene reads no run through a link. If it stands for a task "
                f"directory moved elsewhere, move that directory back; `bulkgene verify "
                f"{out_dir}` shows every problem")
        state = ckpt.load(directory)
        if state is None:
            continue
        params = state.params
        index, count = int(params.get("task_index", 0)), int(params.get("task_count", 1))
        _check_place(out_dir, directory, index, count)
        tasks.append(TaskFiles(directory, index, count, params.get("record") == "gene",
                               params.get("format") == "tsv", dict(state.file_lengths),
                               str(params.get("returned_content") or "COMPLETE"), out_dir,
                               tuple(state.rewrites)))
    return tasks


def planted_beside_tasks(out_dir: Path, tasks: list[Path]) -> str | None:
    """What is wrong when ``out_dir`` holds both a run's own shards or checkpoint and the
    task directories ``tasks`` of an array: bulkgene writes one or the other, so one was put
    there outside bulkgene (and a reader of ``DIR/**/shard-*``, DuckDB or jq, would read
    genes twice); None if it doesn't."""
    own = sorted(p.name for p in out_dir.iterdir()
                 if is_shard_name(p.name) or p.name == CHECKPOINT_NAME)
    if not own:
        return None
    shown = ", ".join(own[:3]) + (", ..." if len(own) > 3 else "")
    return (f"{out_dir} holds both a run's own files ({shown}) and array task directories "
            f"({', '.join(map(str, tasks[:3]))}{', ...' if len(tasks) > 3 else ''}), which "
            "no bulkgene run writes there together: one or the other was put there outside "
            "bulkgene; move it away")


def _check_place(out_dir: Path, directory: Path, index: int, count: int) -> None:
    """An array's task directory must hold its own task's checkpoint: one copied there from
    another task or a single run names files that are not there (or are another task's).
    A directory read alone may have been renamed: its files are its own."""
    if directory == out_dir or (count > 1 and directory.name == task_dir_name(index)):
        return
    whose = (f"task {index} of an array of {count}, whose directory is "
             f"{task_dir_name(index)}" if count > 1 else "a single run, whose files are in "
             "the directory it was fetched into")
    raise StateError(
        f"{directory} holds the checkpoint of {whose}: it was copied or moved there outside "
        f"bulkgene, so the files it names are not that directory's. Run `bulkgene verify "
        f"{out_dir}` to see every problem; move {directory} away (or back where it came from) "
        "and read the run again")


def read_blocks(path: Path, length: int, torn_tail_ok: bool = False) -> Iterator[bytes]:
    """The first ``length`` bytes of ``path`` (gunzipped if it is .gz), in blocks of whole
    lines; a file shorter than that is an error (data lost outside bulkgene), and so is a
    torn last line unless ``torn_tail_ok`` (a report being appended to now)."""
    import zlib

    gzipped = path.name.endswith(".gz")
    left = length
    tail = b""
    unzip = zlib.decompressobj(zlib.MAX_WBITS | 16) if gzipped else None
    try:
        handle = durable.open_read(path)
    except FileNotFoundError:
        if length <= 0:
            return
        raise StateError(f"{path} is gone, but its checkpoint committed {length} bytes of it: "
                         "it was removed or moved outside bulkgene. Run `bulkgene verify` on "
                         "the run to see every problem; put the file back from a backup, or "
                         "fetch the list again with --restart (the old run is moved aside)"
                         ) from None
    with handle:
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
