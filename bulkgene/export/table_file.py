"""Write a run's table to a file, atomically: the format from the suffix, gzip by ``.gz``.

The rows stream from the shards (``bulkgene.results.table``) to a temporary file beside
the target, renamed over it only when every row is written: a failed or killed export
leaves the old file (or none), never half a table. ``-`` writes TSV, CSV or JSON lines to
standard output instead.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import socket
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, cast, get_args

from bulkgene import durable
from bulkgene.errors import ConfigError, IncompleteRun, StateError
from bulkgene.export.writers import CsvWriter, JsonLinesWriter, ParquetWriter, TableWriter, TsvWriter
from bulkgene.layout import MISSING_NAME, TASK_DIR_PREFIX, is_run_entry
from bulkgene.processes import process_alive
from bulkgene.results.reports import read_report
from bulkgene.results.rundir import TaskFiles, tasks_of
from bulkgene.results.table import Column, TableReader, choose_columns, content_of

TableFormat = Literal["tsv", "csv", "jsonl", "parquet"]
FORMATS: tuple[str, ...] = get_args(TableFormat)
_SUFFIXES = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".parquet": "parquet", ".pq": "parquet"}
# suffixes that promise something else than what export would write: said, not guessed
_AMBIGUOUS = {
    ".txt": "a .txt file could hold any text: name it .tsv, or pass --format tsv (or csv)",
    ".json": ("a .json file is read as one JSON document (pandas.read_json, json.load), and "
              "export writes one JSON object per line: name it .jsonl (pandas.read_json(path, "
              "lines=True) reads it), or pass --format jsonl to keep the name"),
}
STDOUT = "-"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    path: str
    format: str
    rows: int
    records: int  # rows made from shard records (more than records with --explode)
    missing_rows: int
    columns: list[str]
    left_out: int = 0  # requested GeneIDs without a record, not in the table (no --with-missing)


def format_of(target: str, explicit: str | None) -> str:
    """The table format: ``explicit``, else from the target's suffix (``.gz`` aside)."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise ConfigError(f"format {explicit!r} is not one of {', '.join(FORMATS)}")
        return explicit
    if target == STDOUT:
        return "tsv"
    name = target.lower().removesuffix(".gz")
    suffix = os.path.splitext(name)[1]
    if suffix not in _SUFFIXES and is_stream_target(target):
        return "tsv"  # /dev/stdout, a FIFO, >(gzip ...): as standard output
    if suffix in _AMBIGUOUS:
        raise ConfigError(f"can't tell the format of {target!r}: {_AMBIGUOUS[suffix]}")
    if suffix not in _SUFFIXES:
        raise ConfigError(f"can't tell the format of {target!r} from its suffix: name it "
                          f"*.tsv, *.csv, *.jsonl or *.parquet, or pass --format")
    return _SUFFIXES[suffix]


@contextlib.contextmanager
def _target(target: str, table_format: str) -> Iterator[BinaryIO]:
    """The file to write: a regular file (or a new name) is replaced atomically when the
    block ends without an error; anything else (standard output, a device, a FIFO, a
    ``/dev/fd/N`` of ``>(gzip ...)``) is written as the stream it is, never renamed over."""
    gzipped = target.lower().endswith(".gz")
    if gzipped and table_format == "parquet":
        raise ConfigError("Parquet is compressed inside the file: drop the .gz")
    stream = _stream(target, table_format)
    if stream is not None:
        with stream as handle:
            with _maybe_gzipped(handle, gzipped) as written:
                yield written
            handle.flush()
        return
    path = Path(target)
    if path.is_symlink():  # the user's link to their file: the file is replaced, the link kept
        path = path.resolve()
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.tmp")
    try:
        handle = durable.create_new(tmp)
    except FileNotFoundError:
        raise ConfigError(f"the directory of --to {target} does not exist") from None
    try:
        with handle:
            with _maybe_gzipped(handle, gzipped) as written:
                yield written
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# names that stand for a descriptor this process already has: written through a copy of it,
# so that `> file` and `>> file` keep their offset and append mode
_DESCRIPTOR_NAMES = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_DESCRIPTOR_DIRS = ("/dev/fd/", "/proc/self/fd/", f"/proc/{os.getpid()}/fd/")


@contextlib.contextmanager
def _maybe_gzipped(handle: BinaryIO, gzipped: bool) -> Iterator[BinaryIO]:
    """``handle``, or a gzip stream into it (no time in the header: the same table, the
    same bytes)."""
    if not gzipped:
        yield handle
        return
    with gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=6, mtime=0) as zipped:
        yield cast(BinaryIO, zipped)


def _stream(target: str, table_format: str) -> contextlib.AbstractContextManager[BinaryIO] | None:
    """``target`` opened as a stream if it is not a regular file or a new name; None if it
    is (then it is replaced atomically)."""
    descriptor = _DESCRIPTOR_NAMES.get(target)
    if descriptor is None and target.startswith(_DESCRIPTOR_DIRS):
        number = target.rsplit("/", 1)[1]
        descriptor = int(number) if number.isdigit() else None
    if target == STDOUT:
        descriptor = 1
    if descriptor is None:
        try:
            info = os.stat(target)
        except (FileNotFoundError, NotADirectoryError):
            return None  # a new name
        except OSError as exc:
            raise ConfigError(f"--to {target} can't be looked at: {exc.strerror}") from None
        if stat.S_ISREG(info.st_mode):
            return None
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"--to {target} is a directory: name the table file to write")
    what = "standard output" if descriptor == 1 else target
    if table_format == "parquet":
        raise ConfigError(f"Parquet can't be streamed to {what} (its footer is written last, "
                          "into a file it seeks in): name a regular file")
    if descriptor == 1:
        sys.stdout.flush()
        try:
            fd = os.dup(sys.stdout.fileno())
        except (OSError, ValueError):  # no descriptor (a test runner's buffer): its bytes
            return contextlib.nullcontext(sys.stdout.buffer)
        return os.fdopen(fd, "wb")
    try:
        if descriptor is not None:
            fd = os.dup(descriptor)
        else:  # a device or a FIFO (this waits for a FIFO's reader, as any writer does)
            fd = os.open(target, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--to {target} can't be written to: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    return os.fdopen(fd, "wb")


_HOST = socket.gethostname().split(".")[0].replace(os.sep, "_") or "host"


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove what killed exports to ``path`` left beside it: our temporary names whose
    process, on this host, is gone (one on another host may be running: left alone)."""
    removed = []
    prefix, suffix = f".{path.name}.", ".tmp"
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(suffix)):
                continue
            host, _, pid = name[len(prefix):-len(suffix)].rpartition(".")  # host.pid, or pid
            if (not pid.isdigit() or host not in ("", _HOST) or "." in host
                    or process_alive(int(pid))):
                continue
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _writer(table_format: str, handle: BinaryIO, columns: list[Column],
            separator: str) -> TableWriter:
    if table_format == "tsv":
        return TsvWriter(handle, columns, separator)
    if table_format == "csv":
        return CsvWriter(handle, columns, separator)
    if table_format == "jsonl":
        return JsonLinesWriter(handle, columns)
    return ParquetWriter(handle, columns)


def export_run(out_dir: Path, target: str, *, fields: list[str] | tuple[str, ...] | str | None = None,
               table_format: str | None = None, explode: str | None = None,
               with_missing: bool = False, list_separator: str = ";",
               partial: bool = False) -> ExportResult:
    """Write the records of every task of ``out_dir`` to ``target`` as one table.

    Refuses (IncompleteRun) a run that is not complete unless ``partial``: a table of part
    of a list should not pass for the whole of it.
    """
    if not list_separator:
        raise ConfigError("an empty --list-separator would glue a list's values together "
                          "(A1B;ABG -> A1BABG): give one, such as ';' or '|', or --explode the "
                          "field into rows")
    chosen = format_of(target, table_format)
    tasks = tasks_of(out_dir)
    columns = choose_columns(fields, content_of(tasks))
    if not partial:
        from bulkgene.results.account import completeness

        reasons = completeness(out_dir)
        if reasons:
            raise IncompleteRun(f"{out_dir} is not complete, so its table would hold part of "
                                f"the list: {'; '.join(reasons[:3])}. Finish the fetch first, "
                                "or pass --partial to export what is committed so far", reasons)
    reader = TableReader(tasks, columns, explode=explode, with_missing=with_missing)
    # read before the table is written: a report that can't be read fails the export
    left_out = 0 if with_missing else _missing_count(tasks)
    rows = missing_rows = 0
    reason_column = next((i for i, c in enumerate(reader.columns)
                          if c.name == "missing_reason"), None)
    _refuse_run_file(out_dir, target)
    try:
        with _target(target, chosen) as handle:
            writer = _writer(chosen, handle, reader.columns, list_separator)
            for batch in reader.batches():
                writer.write(batch)
                rows += batch.row_count
                if reason_column is not None:
                    missing_rows += sum(1 for cell in batch.cells[reason_column] if cell)
            writer.close()
    except StateError as exc:  # the run read back is not what bulkgene wrote
        raise StateError(f"{exc}. {_what_the_target_got(target)}") from None
    except OSError as exc:
        if exc.filename is not None and Path(exc.filename).resolve().is_relative_to(
                out_dir.resolve()):
            raise StateError(f"reading the run failed: {exc.filename}: {exc.strerror or exc}; "
                             "nothing was written to the target") from None
        raise _write_failed(target, exc) from None
    return ExportResult(target, chosen, rows, rows - missing_rows, missing_rows,
                        [column.name for column in reader.columns], left_out)


def _what_the_target_got(target: str) -> str:
    if target == STDOUT or _DESCRIPTOR_NAMES.get(target) == 1:
        return "Standard output got part of the table only: don't use it"
    if is_stream_target(target):
        return f"{target} got part of the table only: don't use it"
    return (f"Nothing was written to {target} (a file is replaced only by a complete "
            "table)")


def _refuse_run_file(out_dir: Path, target: str) -> None:
    """A --to that is one of the run's own files (a shard, a report, anything bulkgene
    keeps in DIR or a task's directory) would be overwritten by its own table."""
    if target == STDOUT:
        return
    run = out_dir.resolve()
    where = Path(target).resolve()
    if where != run and run not in where.parents:
        return
    inside = where.relative_to(run).parts
    if not inside or is_run_entry(inside[0]) or (
            inside[0].startswith(TASK_DIR_PREFIX) and len(inside) > 1):
        raise ConfigError(
            f"--to {target} is {'the run directory' if not inside else 'one of the files'} "
            f"of the run in {out_dir}: the table would overwrite the run it is made from. "
            "Write it outside the run's directory (or beside its files under a name of your "
            "own, e.g. --to genes.tsv)")


def is_stream_target(target: str) -> bool:
    """Whether ``--to target`` is written as a stream (standard output, a device, a FIFO,
    ``/dev/fd/N``), not replaced atomically as a regular file (or a new name) is."""
    if target == STDOUT or target in _DESCRIPTOR_NAMES or target.startswith(_DESCRIPTOR_DIRS):
        return True
    try:
        return not stat.S_ISREG(os.stat(target).st_mode)
    except OSError:
        return False


def _write_failed(target: str, exc: OSError) -> StateError:
    """A disk that refused the table (full, read-only, gone) or a reader that went away."""
    what = "standard output" if target == STDOUT or _DESCRIPTOR_NAMES.get(target) == 1 else target
    if exc.errno == errno.EPIPE:
        return StateError(f"{what} was closed before the table was complete (a | head that "
                          "stopped reading?): what it got is only part of it")
    if is_stream_target(target):
        kept = ": what it got is only part of the table"
    else:
        kept = ("; nothing was renamed over it (a file is replaced only by a complete table), "
                "and its temporary copy is removed")
    return StateError(f"writing the table to {what} failed ({exc.strerror or exc}){kept}. Free "
                      "some space there, or write it elsewhere, and export again")


def _missing_count(tasks: list[TaskFiles]) -> int:
    """How many requested GeneIDs have no record (missing.tsv's rows): no row in a table
    made without --with-missing."""
    return sum(1 for _ in read_report(tasks, MISSING_NAME).rows())
