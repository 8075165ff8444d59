"""Every file name bulkgene writes in an output directory, and how to recognise them.

    DIR/ shard-0000.ndjson[.gz] | shard-0000.tsv[.gz]   the records, batch b in shard b mod N
         missing.tsv  replaced.tsv  rejects.tsv      the side reports
         missing.tsv.rewrite ...                     a report's next version (output/rewrite.py)
         summary.json                                the accounting of the latest run
         checkpoint.json  plan.json plan.ids plan.bitmap  bulkgene.lock
         stdin.spool  input-2.spool                  copies of inputs that can be read once
    DIR/taxa/  taxa.tsv  missing_taxa.tsv            --taxon: the listed GeneIDs and what each
         taxa_left.tsv                               taxon gave (shared by an array's tasks)
    DIR/task-0003/...                                one array task's own copy of the above
    DIR/.budget/                                     an array's rate-budget leases
    DIR/.claims/<layout>/                            which task writes a merged gene; parked/
                                                     and taken/: a requested one (contested.py)
"""

from __future__ import annotations

import re
from pathlib import Path

MISSING_NAME = "missing.tsv"
REPLACED_NAME = "replaced.tsv"
REJECTS_NAME = "rejects.tsv"
SUMMARY_NAME = "summary.json"
CHECKPOINT_NAME = "checkpoint.json"
LOCK_NAME = "bulkgene.lock"
PLAN_JSON = "plan.json"
PLAN_IDS = "plan.ids"
PLAN_BITMAP = "plan.bitmap"
PLAN_FILES = (PLAN_JSON, PLAN_IDS, PLAN_BITMAP)
STDIN_SPOOL_NAME = "stdin.spool"
LIBRARY_IDS_NAME = "requested-ids.txt"  # bulkgene.fetch(ids): the list given in memory
# a new list for requested-ids.txt waits beside it under this name until the run that reads
# it holds the lock and matches the checkpoint (run/prepare.py); pid and a random token
_STAGED_IDS = re.compile(r"\.requested-ids\.txt\.(\d+)\.[0-9a-f]+\.new")
TASK_DIR_PREFIX = "task-"
BUDGET_DIR_NAME = ".budget"  # an array's rate-budget leases, shared by its tasks
CLAIMS_DIR_NAME = ".claims"  # which task writes a gene merged from several tasks' IDs
TAXA_DIR_NAME = "taxa"  # --taxon: the listed GeneIDs, page by page (input/taxon_list.py)
TAXA_REPORT_NAME = "taxa.tsv"
MISSING_TAXA_NAME = "missing_taxa.tsv"
TAXA_LEFT_NAME = "taxa_left.tsv"  # --refresh-list: GeneIDs NCBI no longer lists for the taxa

MISSING_HEADER = b"gene_id\treason\n"
REPLACED_HEADER = b"requested_gene_id\treturned_gene_id\n"
# what `bulkgene explain` appends to both reports, after their own columns (history/chains.py)
EXPLANATION_COLUMNS = ("history", "current_gene_id", "discontinued_on", "symbol", "tax_id")
NOT_EXPLAINED = b"\t" * len(EXPLANATION_COLUMNS)  # a row added after explain: fields empty
# missing.tsv's reason for a GeneID the server refused every request naming (never answered)
REFUSED_REASON = b"REJECTED_BY_SERVER"
# the ``history`` of a missing row: what NCBI's gene history says of the GeneID, or, when it
# doesn't list a GeneID the server refused, REFUSED (it may well be live: `bulkgene retry`)
ROW_CLASSES = (b"DISCONTINUED", b"REPLACED", b"NOT_IN_HISTORY", b"REFUSED")


def class_for_reason(history: bytes, reason: bytes) -> bytes:
    """The ``history`` a missing row with ``reason`` shows for what the gene history says:
    a GeneID it doesn't list is NOT_IN_HISTORY (NCBI most likely never had it) when the API
    was silent about it, REFUSED when the server refused it (it was never answered)."""
    if history in (b"NOT_IN_HISTORY", b"REFUSED"):
        return b"REFUSED" if reason == REFUSED_REASON else b"NOT_IN_HISTORY"
    return history
REWRITE_SUFFIX = ".rewrite"  # a report's next version, until it is renamed over it
REJECTS_HEADER = b"file\tline\ttext\treason\n"

_SHARD_PATTERN = re.compile(r"shard-\d{4,}\.(ndjson|tsv)(\.gz)?")
_SPOOL_PATTERN = re.compile(r"input-\d+\.spool")  # a read-once input (pipe, FIFO), copied
STATE_NAMES = frozenset({MISSING_NAME, REPLACED_NAME, REJECTS_NAME, SUMMARY_NAME,
                         CHECKPOINT_NAME, LOCK_NAME, STDIN_SPOOL_NAME, LIBRARY_IDS_NAME,
                         *PLAN_FILES, TAXA_DIR_NAME, TAXA_REPORT_NAME, MISSING_TAXA_NAME,
                         TAXA_LEFT_NAME})


def staged_ids_name(pid: int, token: str) -> str:
    """Where ``bulkgene.fetch`` writes a new in-memory list before the run adopts it."""
    return f".{LIBRARY_IDS_NAME}.{pid}.{token}.new"


def staged_ids_pid(name: str) -> int | None:
    """The pid in a staged list's name, None if ``name`` is no staged list."""
    match = _STAGED_IDS.fullmatch(name)
    return int(match.group(1)) if match else None


def shard_name(shard_index: int, gzipped: bool = False, tsv: bool = False) -> str:
    """The name of shard ``shard_index``: integers only, sortable."""
    return f"shard-{shard_index:04d}.{'tsv' if tsv else 'ndjson'}{'.gz' if gzipped else ''}"


def is_shard_name(name: str) -> bool:
    """Whether ``name`` is one of bulkgene's shard files."""
    return _SHARD_PATTERN.fullmatch(name) is not None


_SEGMENT_PATTERN = re.compile(r"plan-segment-\d{4,}\.(ids|notes)")  # what a run grew by


def is_ours(name: str) -> bool:
    """Whether ``name`` is a file bulkgene writes in a task directory."""
    return (name in STATE_NAMES or is_shard_name(name) or _SPOOL_PATTERN.fullmatch(name) is not None
            or _SEGMENT_PATTERN.fullmatch(name) is not None)


def explained_header(header: bytes) -> bytes:
    """``header`` (a report's first line) with the explanation columns after its own."""
    return header.rstrip(b"\n") + b"".join(b"\t" + name.encode()
                                            for name in EXPLANATION_COLUMNS) + b"\n"


def is_run_entry(name: str) -> bool:
    """Whether ``name`` in an output directory is bulkgene's: its files, a killed run's
    temporary ones, an array's task directories and shared state."""
    base = name.removesuffix(".tmp").removesuffix(".new")
    return (is_ours(base) or name.startswith(LOCK_NAME + ".") or name in (BUDGET_DIR_NAME,
            CLAIMS_DIR_NAME) or (name.startswith(TASK_DIR_PREFIX)
                                 and name[len(TASK_DIR_PREFIX):].isdigit()))


def other_entries(directory: Path) -> list[str]:
    """What an output directory holds that isn't bulkgene's, sorted; hidden names (a
    filesystem's or a tool's: ``.nfs...``, ``.DS_Store``) don't count."""
    try:
        names = [entry.name for entry in directory.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if not n.startswith(".") and not is_run_entry(n))


def task_dir_name(index: int) -> str:
    """The subdirectory of array task ``index``."""
    return f"{TASK_DIR_PREFIX}{index:04d}"

def task_directories(out_dir: Path) -> list[Path]:
    """Every directory under ``out_dir`` that holds (or held) one task's run."""
    tasks = sorted(p for p in out_dir.glob(TASK_DIR_PREFIX + "*") if p.is_dir()
                   and p.name[len(TASK_DIR_PREFIX):].isdigit())
    return tasks or ([out_dir] if (out_dir / CHECKPOINT_NAME).exists() else [])
