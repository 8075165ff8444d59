"""The exception tree of bulkgene, and every exit code, in one place.

Every error says what happened and what to do next.

    BulkgeneError                  base class; ``exit_code`` is what the CLI exits with
    ├── ConfigError                a setting or option is invalid (exit 2)
    ├── InputError                 an input can't be read or holds no GeneID (exit 1)
    ├── MissingExtra               an optional dependency (pyarrow, pandas) is not installed (exit 1)
    ├── Interrupted                SIGTERM/SIGINT before the fetch began: getting ready,
    │                              listing a taxon's GeneIDs (exit 75)
    ├── IncompleteRun              the run holds part of the list: failed batches, interrupted,
    │                              still running, or one task of an array (exit 1; 3 after
    │                              a download with failed batches)
    ├── StateError                 the output directory can't be resumed safely (exit 1)
    ├── BudgetError                the key's shared rate budget can't be kept (exit 1)
    │   ├── FingerprintMismatch    input or parameters changed since the checkpoint
    │   └── CorruptCheckpoint      the checkpoint or a shard doesn't match what was committed
    ├── FatalHTTPError             the server refused us in a way retries can't fix (exit 1)
    │   ├── AuthError              401/403: bad key or a blocked IP
    │   └── OutageError            every request failed for too long
    ├── ListingIncomplete          a taxon's GeneIDs could not all be listed; re-run (exit 3)
    └── HistoryError               NCBI's gene_history could not be had or read (exit 1)

Malformed input lines and unreachable batches are *not* exceptions: they are recorded
(rejects.tsv, failed batches) and the run goes on.
"""

from __future__ import annotations

import re
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bulkgene.model import Summary

EXIT_OK = 0  # every requested ID found or missing with a reason
EXIT_FATAL = 1  # the message says what to do
EXIT_USAGE = 2  # a bad option or setting; nothing was started
EXIT_FAILED_BATCHES = 3  # finished, some batches failed: re-run the same command to retry them
EXIT_INTERRUPTED = 75  # SIGTERM/SIGINT/SIGHUP: state is safe, re-run to resume (EX_TEMPFAIL)
# TERM (SLURM, kill), INT (Ctrl-C), HUP (the ssh session closed): commit, then exit 75
GRACEFUL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class BulkgeneError(Exception):
    """Base of every error bulkgene raises on purpose."""

    exit_code = EXIT_FATAL
    summary: Summary | None = None  # the run's accounting, when a run had started


class ConfigError(BulkgeneError):
    """An option or setting is invalid; nothing was started."""

    exit_code = EXIT_USAGE


class InputError(BulkgeneError):
    """An input file could not be opened or read, or it holds no usable GeneID."""


class MissingExtra(BulkgeneError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str, wanted_for: str) -> None:
        super().__init__(f"{wanted_for} needs {module}, which is not installed: "
                         f"pip install 'bulkgene[{extra}]' (or pip install {module})")
        self.module = module
        self.extra = extra


class Interrupted(BulkgeneError):
    """A signal stopped the run while it was getting ready (copying its input: nothing
    changed; listing a taxon's GeneIDs: every page listed is kept)."""

    exit_code = EXIT_INTERRUPTED


class IncompleteRun(BulkgeneError):
    """A run holds only part of the list asked for; reading it as the whole is refused.

    ``reasons`` says why, in words that say what to do; ``summary`` is the run's accounting
    when a download just ended (``bulkgene.fetch``). ``partial=True`` reads what is there.
    ``exit_code`` is the run's own when a download just ended (3 for failed batches, as the
    CLI exits), else 1.
    """

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = list(reasons or [])


class StateError(BulkgeneError):
    """The output directory holds state that can't be resumed safely."""


class FingerprintMismatch(StateError):
    """The input or an output-changing parameter differs from the checkpoint's."""


class CorruptCheckpoint(StateError):
    """The checkpoint is unreadable or the files on disk are shorter than it says."""


class BudgetError(BulkgeneError):
    """The lease on the key's rate budget could not be kept (its directory refuses writes, or
    the run was never let in): the run stops rather than risk exceeding the budget."""


class FatalHTTPError(BulkgeneError):
    """The server answered in a way that retrying can't fix; the run stops."""


class AuthError(FatalHTTPError):
    """401 or 403: the API key is wrong, or this IP address is blocked."""


class OutageError(FatalHTTPError):
    """Every request failed for longer than the outage limit."""


class ListingIncomplete(BulkgeneError):
    """A taxon's page chain failed after every attempt; what was listed is kept, and a
    re-run goes on from the last page committed."""

    exit_code = EXIT_FAILED_BATCHES


class HistoryError(BulkgeneError):
    """NCBI's gene_history file could not be downloaded, or what came is not that file."""


# The CLI's options and the library's keywords for the same setting: a message is written
# once, in the CLI's words, and the library's edge (bulkgene.fetch, bulkgene.open) renders it
# in its own. A flag that takes a value keeps a value it is given in the message.
_LIBRARY_WORDS = {
    "--restart": "restart=True", "--partial": "partial=True", "--with-missing": "with_missing=True",
    "--out": "out=", "--batch-size": "batch_size=", "--rate": "rate=", "--base-url": "base_url=",
    "--concurrency": "concurrency=", "--page-size": "page_size=", "--shards": "shards=",
    "--endpoint": "endpoint=", "--returned-content": "returned_content=", "--record": "record=",
    "--compress": "compress=", "--column": "column=", "--budget-dir": "budget_dir=",
    "--api-key": "api_key=", "--max-attempts": "max_attempts=", "--fields": "fields=",
    "--explode": "explode=",
}
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?: ([0-9][0-9.]*|[A-Z][A-Z_]{2,}|'[^']*'))?"
                   r"(?![\w-])")


def library_words(text: str) -> str:
    """``text`` (a message naming the CLI's options) with the library's keywords instead:
    ``pass --restart`` -> ``pass restart=True``, ``--batch-size 500`` -> ``batch_size=500``."""

    def render(match: re.Match[str]) -> str:
        word = _LIBRARY_WORDS.get(match.group(1))
        if word is None:
            return match.group(0)
        value = match.group(2)
        if value is None:
            return word
        if not word.endswith("="):
            return f"{word} {value}"
        return word + (value if value[0] in "0123456789'" else repr(value))

    return _FLAG.sub(render, text)


def in_library_words(error: BulkgeneError) -> BulkgeneError:
    """``error`` with its message in the library's words (rewritten in place), for raising
    from ``bulkgene.fetch`` and ``bulkgene.open``."""
    if error.args and isinstance(error.args[0], str):
        error.args = (library_words(error.args[0]), *error.args[1:])
    return error
