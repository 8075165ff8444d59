"""Whether a process of this host still runs: the one test the lock and the budget leases share."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists here (a permission error means it does).

    Nothing here guesses what the process is (a library run's command line needn't say
    "bulkgene"): the run lock asks its flock whether its holder lives.
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
    return True
