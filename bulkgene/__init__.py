"""bulkgene: fast, polite, resumable bulk downloads of NCBI Datasets v2 gene reports."""

from bulkgene.config import DownloadConfig, RetryPolicy, Secret, Timeouts
from bulkgene.errors import (
    AuthError,
    BulkgeneError,
    ConfigError,
    CorruptCheckpoint,
    FatalHTTPError,
    FingerprintMismatch,
    InputError,
    OutageError,
    StateError,
)
from bulkgene.summary import Summary

__version__ = "0.1.0"

# imported last: the pipeline reads __version__ for its User-Agent
from bulkgene.pipeline import download

__all__ = [
    "AuthError",
    "BulkgeneError",
    "ConfigError",
    "CorruptCheckpoint",
    "DownloadConfig",
    "FatalHTTPError",
    "FingerprintMismatch",
    "InputError",
    "OutageError",
    "RetryPolicy",
    "Secret",
    "StateError",
    "Summary",
    "Timeouts",
    "__version__",
    "download",
]
