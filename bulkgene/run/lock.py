"""One writer per task directory: a lock file naming host and pid, taken over when stale.

Correctness never rests on the lock (file locks are unreliable on NFS and Lustre): it only
stops a second bulkgene from being started on the same directory by mistake. The file is
created with O_EXCL; a lock left by a dead process on this host is taken over with a warning.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import orjson

from bulkgene.errors import StateError
from bulkgene.output.layout import LOCK_NAME

log = logging.getLogger("bulkgene")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a recycled pid that isn't bulkgene doesn't count
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"bulkgene" in cmdline


def read_lock(directory: Path) -> dict[str, object] | None:
    try:
        data = orjson.loads((directory / LOCK_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def holder_alive(holder: dict[str, object]) -> bool | None:
    """True/False for a holder on this host; None when it runs elsewhere (can't tell)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    return isinstance(pid, int) and _alive(pid)


class RunLock:
    """Held for the whole run; ``release()`` removes the file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._held = False

    def acquire(self) -> None:
        record = orjson.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                               "started": time.time()})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(record)
            self._held = True
            return
        raise StateError(f"could not take the lock {self.path}; try again")

    def _take_over_if_stale(self) -> None:
        holder = read_lock(self.path.parent) or {}
        alive = holder_alive(holder) if holder else False
        where = f"pid {holder.get('pid')} on {holder.get('host')}"
        if alive:
            raise StateError(f"another bulkgene ({where}) is already writing to "
                             f"{self.path.parent}; wait for it, or stop it first")
        if alive is None:
            raise StateError(
                f"{self.path.parent} is locked by {where}, which this machine can't check. "
                f"If that run is surely over, delete {self.path} and run again")
        log.warning("taking over the stale lock of %s (that process is gone)", where or "?")
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False
