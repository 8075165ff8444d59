"""The exception tree of bulkgene; every error says what happened and what to do next.

    BulkgeneError                  base class; ``exit_code`` is what the CLI exits with
    ├── ConfigError                a setting or option is invalid (exit 2)
    ├── InputError                 an input file can't be read (exit 1)
    ├── StateError                 the output directory can't be resumed safely (exit 1)
    │   ├── FingerprintMismatch    input or parameters changed since the checkpoint
    │   └── CorruptCheckpoint      the checkpoint or a shard doesn't match what was committed
    └── FatalHTTPError             the server refused us in a way retries can't fix (exit 1)
        ├── AuthError              401/403: bad key or a blocked IP
        └── OutageError            every request failed for too long

Malformed input lines and unreachable batches are *not* exceptions: they are recorded
(rejects.tsv, failed batches) and the run goes on.
"""

from __future__ import annotations


class BulkgeneError(Exception):
    """Base of every error bulkgene raises on purpose."""

    exit_code = 1


class ConfigError(BulkgeneError):
    """An option or setting is invalid; nothing was started."""

    exit_code = 2


class InputError(BulkgeneError):
    """An input file could not be opened or read."""


class StateError(BulkgeneError):
    """The output directory holds state that can't be resumed safely."""


class FingerprintMismatch(StateError):
    """The input or an output-changing parameter differs from the checkpoint's."""


class CorruptCheckpoint(StateError):
    """The checkpoint is unreadable or the files on disk are shorter than it says."""


class FatalHTTPError(BulkgeneError):
    """The server answered in a way that retrying can't fix; the run stops."""


class AuthError(FatalHTTPError):
    """401 or 403: the API key is wrong, or this IP address is blocked."""


class OutageError(FatalHTTPError):
    """Every request failed for longer than the outage limit."""
