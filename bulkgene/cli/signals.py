"""Signals between the phases that take them over themselves: exit 75, saying what was interrupted.

A download (run/download.py) and explaining (history/explain.py) hold SIGTERM/SIGINT/SIGHUP
while they run and hand them back when they end; in between (start-up, the moments between
a fetch and its --explain, between explaining and following) this handler answers: it says
what the command was doing and what state that left, and exits 75.
"""

from __future__ import annotations

import os
import signal
import sys

from bulkgene.errors import EXIT_INTERRUPTED, GRACEFUL_SIGNALS

_NOW = {"doing": "before the download started", "left": "nothing was changed"}


def now(doing: str, left: str) -> None:
    """What a signal from now on interrupts (``while ...``), and what it leaves."""
    _NOW.update(doing=doing, left=left)


def exit_interrupted_on_signals() -> None:
    """Exit 75 on SIGTERM/SIGINT/SIGHUP until a phase installs its own graceful handlers."""

    def interrupted(signum: int, _frame: object) -> None:
        os.write(2, f"bulkgene: {signal.Signals(signum).name} {_NOW['doing']}; {_NOW['left']}. "
                    "Run the same command again.\n".encode())
        sys.exit(EXIT_INTERRUPTED)

    for signum in GRACEFUL_SIGNALS:
        signal.signal(signum, interrupted)
