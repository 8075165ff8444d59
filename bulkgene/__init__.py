"""bulkgene: fast, polite, resumable bulk downloads of NCBI Datasets v2 gene reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bulkgene.config import (
    ApiQuery,
    DownloadConfig,
    NetworkSpec,
    OutputSpec,
    RetryPolicy,
    Secret,
    Timeouts,
)
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
from bulkgene.model import Summary
from bulkgene.version import __version__

if TYPE_CHECKING:
    from bulkgene.run.download import download


def __getattr__(name: str) -> Any:
    # the pipeline (and with it aiohttp) loads on first use, so `status`, `verify` and
    # `--help` start without it
    if name == "download":
        from bulkgene.run.download import download

        return download
    raise AttributeError(f"module 'bulkgene' has no attribute {name!r}")


__all__ = [
    "ApiQuery",
    "AuthError",
    "BulkgeneError",
    "ConfigError",
    "CorruptCheckpoint",
    "DownloadConfig",
    "FatalHTTPError",
    "FingerprintMismatch",
    "InputError",
    "NetworkSpec",
    "OutageError",
    "OutputSpec",
    "RetryPolicy",
    "Secret",
    "StateError",
    "Summary",
    "Timeouts",
    "__version__",
    "download",
]
