"""Whether a process of this host still runs: the one test the lock and the budget leases share."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int, *, bulkgene_only: bool = False) -> bool:
    """Whether process ``pid`` exists here (a permission error means it does).

    With ``bulkgene_only``, a pid recycled by a program that isn't bulkgene counts as gone.
    """
    if pid == os.getpid():
        return True
    if not 0 < pid < 1 << 31:  # read from a file others can write: no pid can be that
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    if not bulkgene_only:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"bulkgene" in cmdline
