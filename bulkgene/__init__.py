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
    TaxonSelection,
    Timeouts,
)
from bulkgene.errors import (
    AuthError,
    BulkgeneError,
    ConfigError,
    CorruptCheckpoint,
    FatalHTTPError,
    FingerprintMismatch,
    IncompleteRun,
    InputError,
    Interrupted,
    ListingIncomplete,
    MissingExtra,
    OutageError,
    StateError,
)
from bulkgene.model import Snapshot, Summary
from bulkgene.version import __version__

if TYPE_CHECKING:
    from bulkgene.facade import fetch, fetch_async
    from bulkgene.results.reader import RunResults
    from bulkgene.results.reader import open_run as open
    from bulkgene.run.download import download


def __getattr__(name: str) -> Any:
    # the pipeline (and with it aiohttp) loads on first use, so `status`, `verify` and
    # `--help` start without it; the readers load when asked for too
    if name == "download":
        from bulkgene.run.download import download

        return download
    if name in ("fetch", "fetch_async"):
        from bulkgene import facade

        return getattr(facade, name)
    if name == "open":
        from bulkgene.results.reader import open_run

        return open_run
    if name == "RunResults":
        from bulkgene.results.reader import RunResults

        return RunResults
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
    "IncompleteRun",
    "InputError",
    "Interrupted",
    "ListingIncomplete",
    "MissingExtra",
    "NetworkSpec",
    "OutageError",
    "OutputSpec",
    "RetryPolicy",
    "RunResults",
    "Secret",
    "Snapshot",
    "StateError",
    "Summary",
    "TaxonSelection",
    "Timeouts",
    "__version__",
    "download",
    "fetch",
    "fetch_async",
    "open",
]
