"""The installed bulkgene's version, from the package metadata (sent in the User-Agent)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bulkgene")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
