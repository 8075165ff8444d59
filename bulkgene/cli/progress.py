"""Progress: a live bar on a terminal, plain periodic lines anywhere else (SLURM logs, pipes).

The bar lives on the last line of stderr; log records go through ``TerminalLog``, which
clears the bar, prints the record on its own line and redraws the bar, so the two never
garble each other. Without a terminal nothing is redrawn and no carriage return is written.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import TextIO

from bulkgene.model import Snapshot, human_duration

_CLEAR_LINE = "\r\x1b[K"




def bar(snapshot: Snapshot, columns: int = 120) -> str:
    """The progress as a bar that fits a terminal line of ``columns`` characters."""
    fraction = snapshot.ids_done / snapshot.ids_total if snapshot.ids_total else 1.0
    text = (f"{100 * fraction:5.1f}% {snapshot.ids_done}/{snapshot.ids_total} IDs, "
            f"{snapshot.ids_per_s:.0f} IDs/s, ETA {human_duration(snapshot.eta_s)}")
    if snapshot.retries or snapshot.throttled or snapshot.batches_failed:
        text += (f", {snapshot.retries} retried, {snapshot.throttled} throttled, "
                 f"{snapshot.batches_failed} batches failed")
    width = max(0, min(30, columns - 1 - len(text) - 3))
    filled = round(fraction * width)
    line = f"[{'#' * filled}{'.' * (width - filled)}] {text}" if width >= 5 else text
    # one character short of the width: a full line makes some terminals wrap at redraw
    return line[: max(1, columns - 1)]


class Terminal:
    """stderr with one live line at the bottom (or none, when it isn't a terminal)."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream = stream
        self.live = live
        self._status = ""

    def show(self, text: str) -> None:
        """Replace the live line (on a terminal) or print a plain line (elsewhere)."""
        if self.live:
            self._status = text
            self.stream.write(_CLEAR_LINE + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        """Print a line above the live one."""
        if self.live and self._status:
            self.stream.write(_CLEAR_LINE + text + "\n" + self._status)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live and self._status:
            self.stream.write("\n")
            self.stream.flush()
        self._status = ""


class TerminalLog(logging.Handler):
    """A logging handler that writes above the live progress line."""

    def __init__(self, terminal: Terminal) -> None:
        super().__init__()
        self.terminal = terminal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.terminal.line(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never take the run down
            self.handleError(record)


class ProgressReporter:
    """Turns snapshots into a bar (terminal) or a plain line every ``interval_s``."""

    def __init__(self, terminal: Terminal | None, interval_s: float) -> None:
        self.terminal = terminal
        self.interval_s = interval_s
        self._last_line_at = time.monotonic()

    @property
    def tick_s(self) -> float:
        """How often the pipeline should call ``update``."""
        return 0.5 if self.terminal is not None and self.terminal.live else self.interval_s

    def update(self, snapshot: Snapshot) -> None:
        if self.terminal is not None and self.terminal.live:
            self.terminal.show(bar(snapshot, shutil.get_terminal_size((120, 24)).columns))
        else:
            logging.getLogger("bulkgene").info("%s", snapshot.line())

    def close(self) -> None:
        if self.terminal is not None:
            self.terminal.close()
