"""``bulkgene verify``: re-read every shard of every task and check the resume invariants hold.

Checks: each shard line is complete, valid JSON with a GeneID; no GeneID twice across the
whole directory; every file is exactly as long as its checkpoint says; the summary
reconciles and matches the lines and the missing report on disk; the new gene of every
replaced GeneID (replaced.tsv) is written in some task's shards; an array's tasks split the
list the same way (one batch size); the reports' explanation columns are consistent
(results/explained.py).
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import msgspec
import orjson

from bulkgene import durable
from bulkgene.errors import CorruptCheckpoint, StateError
from bulkgene.input import plan as idplan
from bulkgene.layout import (
    MISSING_NAME,
    REJECTS_NAME,
    REPLACED_NAME,
    SUMMARY_NAME,
    is_shard_name,
    task_directories,
)
from bulkgene.ncbi.tsv import GENE_ID_FIELD, GENE_ID_HEADER
from bulkgene.output import checkpoint as ckpt
from bulkgene.output.missing import missing_counts, mostly_refused_message
from bulkgene.results import explained
from bulkgene.results.once import SeenGeneIds
from bulkgene.results.rundir import planted_beside_tasks
from bulkgene.results.status import directory_status, incomplete_reasons, is_task_directory

_MAX_PROBLEMS_PER_KIND = 20


class _Gene(msgspec.Struct):
    gene_id: str


class _Line(msgspec.Struct):
    gene: _Gene


_REPORT_LINE = msgspec.json.Decoder(_Line)
_GENE_LINE = msgspec.json.Decoder(_Gene)


def _gene_id(line: bytes, gene_only: bool) -> int:
    gene = _GENE_LINE.decode(line) if gene_only else _REPORT_LINE.decode(line).gene
    return int(gene.gene_id)


@dataclass
class Verdict:
    """What verify found: counts, and every problem in words."""

    tasks: int = 0
    shards: int = 0
    records: int = 0
    duplicates: int = 0
    strangers: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check_once(self, seen: SeenGeneIds, gene_id: int, where: str) -> None:
        """Record ``gene_id`` as seen; a second sighting is a problem (the first 20 listed)."""
        if seen.add(gene_id):
            return
        self.duplicates += 1
        if self.duplicates <= _MAX_PROBLEMS_PER_KIND:
            self.problems.append(f"{where}: GeneID {gene_id} was already written (a duplicate)")


def verify(out_dir: Path) -> Verdict:
    verdict = Verdict()
    directories = task_directories(out_dir)
    if not directories:
        verdict.problems.append(f"{out_dir} holds no bulkgene run (no checkpoint.json)")
        return verdict
    if directories != [out_dir] and (planted := planted_beside_tasks(out_dir, directories)):
        verdict.problems.append(planted)
    seen = SeenGeneIds()
    targets: dict[int, tuple[Path, int]] = {}  # new gene -> (directory, a replaced GeneID)
    batch_sizes: dict[object, list[str]] = {}
    generations: dict[int, list[str]] = {}  # which --restart each task's run began after
    for directory in directories:
        verdict.tasks += 1
        if directory != out_dir and directory.is_symlink():
            verdict.problems.append(
                f"{directory} is a symbolic link: a task's directory must be a real one in "
                f"{out_dir} (bulkgene follows no link there, and won't resume through it); if "
                "it stands for a task directory moved elsewhere, move that directory back")
            continue
        try:
            state = ckpt.load(directory)
        except (CorruptCheckpoint, StateError) as exc:
            verdict.problems.append(str(exc))
            continue
        if state is None:
            verdict.problems.append(f"{directory}: no checkpoint.json")
            continue
        shards = sorted(p for p in directory.iterdir() if is_shard_name(p.name))
        for name, committed in sorted(state.file_lengths.items()):
            size = (directory / name).stat().st_size if (directory / name).exists() else None
            if size != committed:
                verdict.problems.append(f"{directory / name}: {size} bytes on disk, the "
                                        f"checkpoint committed {committed}")
        batch_sizes.setdefault(state.params.get("batch_size"), []).append(directory.name)
        generations.setdefault(state.claims_generation, []).append(directory.name)
        task_records = 0
        gene_only = state.params.get("record") == "gene"
        tsv = _tsv_layout(state.params) if state.params.get("format") == "tsv" else None
        allowed = None if tsv else _genes_asked_for(directory, state)
        for shard in shards:
            verdict.shards += 1
            try:
                task_records += (_check_tsv_shard(shard, tsv, seen, verdict) if tsv
                                 else _check_shard(shard, gene_only, seen, verdict, allowed))
            except StateError as exc:  # not a regular file (a FIFO would hang the read)
                verdict.problems.append(str(exc))
            except (OSError, EOFError) as exc:  # a damaged gzip member
                verdict.problems.append(f"{shard}: can't be read to the end ({exc})")
        verdict.records += task_records
        if not tsv:
            targets.update(_replacements(directory))
        try:
            _check_accounting(directory, state, task_records, verdict)
        except StateError as exc:  # a report or summary.json that is not a regular file
            verdict.problems.append(str(exc))
    unwritten = [(gene, where) for gene, where in sorted(targets.items()) if gene not in seen]
    for gene, (directory, requested) in unwritten[:_MAX_PROBLEMS_PER_KIND]:
        verdict.problems.append(
            f"GeneID {gene}, the new gene of replaced GeneID {requested} "
            f"({directory / REPLACED_NAME}), is written in no shard of any task")
    if len(unwritten) > _MAX_PROBLEMS_PER_KIND:
        verdict.problems.append(f"... {len(unwritten)} replacement genes written nowhere in all")
    if unwritten:
        # a re-run resumes from the checkpoint, which says those batches are done
        restart = "every task with --restart" if len(directories) > 1 or directories[0] != out_dir \
            else "the fetch with --restart"
        verdict.problems.append(
            "running the same fetch again can't write them: the records that answered those "
            "GeneIDs were left out by an older bulkgene, or the files were changed outside "
            f"bulkgene; run {restart} (the old run is moved aside) to fetch the list anew")
    if len(batch_sizes) > 1:
        shown = "; ".join(f"{', '.join(names)}: batch size {size}"
                          for size, names in batch_sizes.items())
        verdict.problems.append(
            f"the tasks of {out_dir} split the list with different batch sizes ({shown}), so "
            "some GeneIDs were fetched by two tasks and others by none: --restart every task "
            "with the same --batch-size")
    if len(generations) > 1:
        newest = max(generations)
        older = sorted(name for generation, names in generations.items()
                       if generation < newest for name in names)
        verdict.problems.append(
            f"{', '.join(older)} of {out_dir} kept their runs from before the array was "
            f"restarted ({', '.join(generations[newest])} restarted): a gene merged from IDs "
            "of both may be written twice or by none. --restart those tasks too")
    if verdict.duplicates > _MAX_PROBLEMS_PER_KIND:
        verdict.problems.append(f"... {verdict.duplicates} duplicate GeneIDs in all")
    verdict.problems.extend(_rejects_problems(out_dir))
    try:  # complete: every requested ID found or missing with a reason, in every task
        verdict.problems.extend(incomplete_reasons(directory_status(out_dir),
                                                   not is_task_directory(out_dir)))
    except (StateError, CorruptCheckpoint) as exc:
        verdict.problems.append(str(exc))
    return verdict


def _rejects_problems(out_dir: Path) -> list[str]:
    """rejects.tsv must hold a row for every rejected line the plan counts (the list's and
    every --add's)."""
    try:
        for place in (out_dir, out_dir.parent):
            header = idplan.read_header(place)
            if header is not None:
                break
        else:
            return []  # no plan to count with: the completeness check says so
    except StateError:
        return []  # plan.json is not a regular file: the completeness check says so
    counted = header.rejected + sum(segment.rejected for segment in header.segments)
    path = place / REJECTS_NAME
    try:
        with durable.open_read(path) as handle:
            rows = max(0, sum(1 for _ in handle) - 1)  # the header aside
    except FileNotFoundError:
        return [f"{path} is gone, and the input's plan counted {counted} rejected lines"]
    except (OSError, StateError) as exc:
        return [f"{path} can't be read ({exc})"]
    if rows != counted:
        more = (": an --add killed before it recorded its IDs leaves rows of its own; run "
                "the same --add again" if rows > counted else "")
        return [f"{path} holds {rows} rejected lines, the input's plan counted {counted}{more}"]
    return []


@contextlib.contextmanager
def _open_shard(shard: Path) -> Iterator[BinaryIO]:
    """A shard for reading, gunzipped if need be; a FIFO or a link there is an error."""
    with durable.open_read(shard) as raw:
        if not shard.name.endswith(".gz"):
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield cast(BinaryIO, unzipped)


def _genes_asked_for(directory: Path, state: ckpt.Checkpoint) -> Callable[[int], bool] | None:
    """Whether a GeneID may be in the shards: requested, or the new gene of a requested ID
    (replaced.tsv); None when the input plan can't be read to tell."""
    key = [entry.digest for entry in state.inputs]
    if state.params.get("column") is not None:
        key.append(f"column={state.params['column']}")
    plan = None
    for place in (directory, directory.parent):
        try:
            plan = idplan.load(place, key)
        except StateError:
            return None
        if plan is not None:
            break
    if plan is None:
        return None
    targets: set[int] = set()
    with contextlib.suppress(OSError, ValueError, IndexError, StateError), \
            durable.open_read(directory / REPLACED_NAME) as handle:
        handle.readline()
        targets.update(int(row.split(b"\t")[1]) for row in handle)
    requested = plan.requested
    return lambda gene_id: gene_id in requested or gene_id in targets


def _replacements(directory: Path) -> dict[int, tuple[Path, int]]:
    """The new genes a task's replaced.tsv names, each with one GeneID it replaced."""
    found: dict[int, tuple[Path, int]] = {}
    with contextlib.suppress(OSError, StateError), \
            durable.open_read(directory / REPLACED_NAME) as handle:
        handle.readline()
        for row in handle:
            fields = row.split(b"\t")
            if len(fields) == 2 and fields[0].isdigit() and fields[1].strip().isdigit():
                found.setdefault(int(fields[1]), (directory, int(fields[0])))
    return found


def _check_shard(shard: Path, gene_only: bool, seen: SeenGeneIds, verdict: Verdict,
                 allowed: Callable[[int], bool] | None = None) -> int:
    """Check every line of one shard; returns how many records it holds."""
    records = 0
    with _open_shard(shard) as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith(b"\n"):
                verdict.problems.append(f"{shard}:{number}: torn last line (no newline)")
            try:
                gene_id = _gene_id(line, gene_only)
            except (msgspec.DecodeError, ValueError) as exc:
                verdict.problems.append(f"{shard}:{number}: not a gene report ({exc})")
                continue
            records += 1
            verdict.check_once(seen, gene_id, f"{shard}:{number}")
            if allowed is not None and not allowed(gene_id):
                verdict.strangers += 1
                if verdict.strangers <= _MAX_PROBLEMS_PER_KIND:
                    verdict.problems.append(f"{shard}:{number}: GeneID {gene_id} was never "
                                            "asked for (not requested, not a replacement)")
    return records


def _tsv_layout(params: dict[str, object]) -> tuple[bool, int | None]:
    """(shards start with a header, GeneID column when there is no header to tell)."""
    fields = params.get("table_fields") or []
    assert isinstance(fields, list)
    column = fields.index(GENE_ID_FIELD) if GENE_ID_FIELD in fields else None
    return params.get("include_tabular_header") != "INCLUDE_TABULAR_HEADER_NEVER", column


def _check_tsv_shard(shard: Path, layout: tuple[bool, int | None], seen: SeenGeneIds,
                     verdict: Verdict) -> int:
    """Every row as wide as the first line, the header only at the top, GeneIDs once."""
    has_header, column = layout
    records = 0
    with _open_shard(shard) as handle:
        first = handle.readline()
        if has_header and first:
            columns = first.rstrip(b"\n").split(b"\t")
            column = columns.index(GENE_ID_HEADER) if GENE_ID_HEADER in columns else None
            lines = enumerate(handle, 2)
        else:
            lines = enumerate(itertools.chain([first] if first else [], handle), 1)
        width = first.count(b"\t") + 1
        for number, line in lines:
            if not line.endswith(b"\n"):
                verdict.problems.append(f"{shard}:{number}: torn last line (no newline)")
            if line == first and has_header:
                verdict.problems.append(f"{shard}:{number}: the header again, mid-file")
                continue
            row_width = line.count(b"\t") + 1
            if row_width != width:
                verdict.problems.append(f"{shard}:{number}: {row_width} columns, not {width}")
                continue
            records += 1
            if column is not None:
                value = line.rstrip(b"\n").split(b"\t")[column]
                if value.isdigit():
                    verdict.check_once(seen, int(value), f"{shard}:{number}")
    return records


def _check_accounting(directory: Path, state: ckpt.Checkpoint, records_on_disk: int,
                      verdict: Verdict) -> None:
    totals = state.totals
    if totals.records != records_on_disk:
        verdict.problems.append(f"{directory}: {records_on_disk} records in the shards, the "
                                f"checkpoint counted {totals.records}")
    counts = missing_counts(directory)
    if counts is not None:
        if counts.rows != totals.missing:
            verdict.problems.append(f"{directory / MISSING_NAME}: {counts.rows} rows, the "
                                    f"checkpoint counted {totals.missing} missing")
        answered = totals.found + totals.missing - counts.refused
        if counts.refused > answered:  # as a run stops: most of it refused is no result
            verdict.problems.append(
                f"{directory}: {mostly_refused_message(counts.refused, answered)}")
    verdict.problems.extend(explained.problems(directory, state))
    try:
        summary = orjson.loads(durable.read_bytes(directory / SUMMARY_NAME))
    except (OSError, orjson.JSONDecodeError):
        verdict.problems.append(f"{directory}: no readable summary.json")
        return
    parts = sum(summary.get(k, 0) for k in ("found", "missing", "failed", "pending", "unverified"))
    if summary.get("requested") != parts:
        verdict.problems.append(f"{directory}/summary.json does not reconcile: requested "
                                f"{summary.get('requested')} != found + missing + failed + "
                                f"pending + unverified = {parts}")
