"""The ``bulkgene`` command line: click commands over the library, console and progress output."""

from bulkgene.cli.main import main

__all__ = ["main"]
