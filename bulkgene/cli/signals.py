"""Signals outside a download: "interrupted while doing this, this is what it left, run it again"."""

from __future__ import annotations

import os
import signal
import sys

from bulkgene.errors import EXIT_INTERRUPTED, GRACEFUL_SIGNALS

_BEFORE_THE_DOWNLOAD = "before the download started; nothing was changed"


def exit_interrupted_on_signals(what: str = _BEFORE_THE_DOWNLOAD) -> None:
    """Exit 75 on SIGTERM/SIGINT, saying ``what`` was interrupted and what it left, until a
    download installs its own graceful handlers (a command that is not a download, such as
    export, says what it was doing instead)."""

    def interrupted(signum: int, _frame: object) -> None:
        os.write(2, f"bulkgene: {signal.Signals(signum).name} {what}. Run the same command "
                    "again.\n".encode())
        sys.exit(EXIT_INTERRUPTED)

    for signum in GRACEFUL_SIGNALS:
        signal.signal(signum, interrupted)
