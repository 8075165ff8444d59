"""The ``bulkgene`` command line: click commands over the library, console and progress output."""

from bulkgene.cli.signals import exit_interrupted_on_signals

exit_interrupted_on_signals()  # first thing: a SIGTERM during start-up still means 75

from bulkgene.cli.main import main  # noqa: E402 - after the signal handlers, on purpose

__all__ = ["main"]
