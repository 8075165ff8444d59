"""The pacing margin learnt on a path to a server, remembered for the next run on it.

What is kept is the lesson (bulkgene/net/pacer.py says how it is learnt and tested again):
the margin, when it was learnt or last confirmed (wall clock), and how many tests of a
narrower one it refuted in a row. The file is untrusted: anything implausible is ignored.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import msgspec

from bulkgene.budget.files import ensure_directory, open_directory, write_atomically
from bulkgene.budget.record import read_small_file
from bulkgene.errors import ConfigError

MARGIN_FILE_NAME = "arrival-margin.json"
REMEMBERED_FOR_S = 30 * 24 * 3600.0  # networks change: a month-old lesson is learnt again
_MAX_MARGIN_S = 1.0  # anything wider is not a margin anyone wrote
_MAX_REFUTED = 64  # tests refuted in a row; more is not a count anyone wrote
_MAX_FILE_BYTES = 512
_FUTURE_TOLERANCE_S = 24 * 3600.0  # another node's clock may run ahead; a year ahead is garbage
log = logging.getLogger("bulkgene")


class Remembered(msgspec.Struct, frozen=True):
    """A path's lesson as stored: the margin, when it was learnt, the tests it refuted."""

    margin_s: float
    learnt_at: float  # wall clock of the writer: only compared within a month, skew is noise
    refuted: int = 0  # absent in files written before it was kept


_decoder = msgspec.json.Decoder(Remembered)


def recall_margin(directory: Path, now_wall: float | None = None) -> Remembered | None:
    """The lesson a run on this path left within the last month, if any (untrusted file:
    anything implausible is ignored)."""
    raw = read_small_file(directory / MARGIN_FILE_NAME, _MAX_FILE_BYTES)
    if raw is None:
        return None
    try:
        remembered = _decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    now = time.time() if now_wall is None else now_wall
    if not (math.isfinite(remembered.margin_s) and 0 <= remembered.margin_s <= _MAX_MARGIN_S):
        return None
    if not (math.isfinite(remembered.learnt_at)
            and now - REMEMBERED_FOR_S <= remembered.learnt_at <= now + _FUTURE_TOLERANCE_S):
        return None
    if not 0 <= remembered.refuted <= _MAX_REFUTED:
        return None
    return remembered


def recall_margin_s(directory: Path, now_wall: float | None = None) -> float | None:
    """Only the margin of ``recall_margin``."""
    remembered = recall_margin(directory, now_wall)
    return None if remembered is None else remembered.margin_s


def remember_margin_s(directory: Path, margin_s: float, now_wall: float | None = None, *,
                      refuted: int = 0, age_s: float = 0.0, root: Path | None = None) -> None:
    """Keep ``margin_s``, learnt ``age_s`` ago, for the next run (best effort: a read-only
    cache only costs a 429). ``root``: the directory the user chose, as for the leases
    beside it."""
    learnt_at = (time.time() if now_wall is None else now_wall) - max(0.0, age_s)
    data = msgspec.json.encode(Remembered(margin_s, learnt_at, refuted))
    # a temp name of our own, then rename: concurrent writers never collide, readers see
    # one whole file, as with the leases beside it (and no link is followed on the way)
    try:
        root = directory if root is None else root
        ensure_directory(directory, root)
        dir_fd = open_directory(directory, root)
        try:
            write_atomically(dir_fd, MARGIN_FILE_NAME, data)
        finally:
            os.close(dir_fd)
    except (OSError, ConfigError) as exc:
        log.debug("could not remember the pacing margin in %s: %s", directory, exc)
