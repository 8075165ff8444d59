"""The pacing margin learnt on a path to a server, remembered for the next run on it."""

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
_MAX_FILE_BYTES = 512
_FUTURE_TOLERANCE_S = 24 * 3600.0  # another node's clock may run ahead; a year ahead is garbage
log = logging.getLogger("bulkgene")


class _Remembered(msgspec.Struct, frozen=True):
    margin_s: float
    learnt_at: float  # wall clock of the writer: only compared within a month, skew is noise


_decoder = msgspec.json.Decoder(_Remembered)


def recall_margin_s(directory: Path, now_wall: float | None = None) -> float | None:
    """The margin a run on this path learnt within the last month, if any (untrusted file:
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
    return remembered.margin_s


def remember_margin_s(directory: Path, margin_s: float, now_wall: float | None = None, *,
                      root: Path | None = None) -> None:
    """Keep ``margin_s`` for the next run (best effort: a read-only cache only costs a 429).
    ``root``: the directory the user chose, as for the leases beside it."""
    learnt_at = time.time() if now_wall is None else now_wall
    data = msgspec.json.encode(_Remembered(margin_s, learnt_at))
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
