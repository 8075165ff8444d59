"""Signals before a download takes them over: "interrupted, nothing changed, run it again"."""

from __future__ import annotations

import os
import signal
import sys

from bulkgene.errors import EXIT_INTERRUPTED, GRACEFUL_SIGNALS


def exit_interrupted_on_signals() -> None:
    """Exit 75 on SIGTERM/SIGINT until the download installs its own graceful handlers."""

    def interrupted(signum: int, _frame: object) -> None:
        os.write(2, f"bulkgene: {signal.Signals(signum).name} before the download started; "
                    "nothing was changed. Run the same command again.\n".encode())
        sys.exit(EXIT_INTERRUPTED)

    for signum in GRACEFUL_SIGNALS:
        signal.signal(signum, interrupted)
