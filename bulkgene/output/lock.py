"""One writer per task directory: a lock file naming host and pid, taken atomically, broken if stale.

The lock file appears complete or not at all: its content is written to a temporary file
first and hard-linked to ``bulkgene.lock`` (link fails if the name exists, atomically, on
NFS too). So a lock file that can't be parsed is never a crashed run's: it is refused, not
broken. A lock is stale only if it names a dead process on this host. One held on another
host is never taken over, as before: this machine can't see that process, and judging it
by a heartbeat or the file's age would need clocks that agree across nodes and would
misjudge a run that is merely slow or paused, letting two runs write one directory, the
very thing the lock prevents. The user is told how to remove it once that run is surely over.

Breaking a stale lock is serialized by an ``flock`` on the stale file itself and done by
renaming it aside after checking that ``bulkgene.lock`` is still that very file; only then
is it removed and creation tried again, where exactly one contender wins.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import socket
import stat
import time
from pathlib import Path

import orjson

from bulkgene import durable
from bulkgene.errors import StateError
from bulkgene.layout import LOCK_NAME
from bulkgene.processes import process_alive

_ATTEMPTS = 5
# link() is unsupported on some filesystems (FAT, some FUSE and object-store mounts)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV}
log = logging.getLogger("bulkgene")


def parse_lock(raw: bytes) -> dict[str, object] | None:
    """The holder a lock file names; None unless it is complete (JSON with a host and a pid)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if (isinstance(data, dict) and isinstance(data.get("host"), str)
            and type(data.get("pid")) is int and data["pid"] > 0):
        return data
    return None


def read_lock(directory: Path) -> dict[str, object] | None:
    try:
        raw = durable.read_bytes(directory / LOCK_NAME)
    except OSError:
        return None
    return parse_lock(raw)


def holder_alive(holder: dict[str, object]) -> bool | None:
    """True/False for a holder on this host; None when it runs elsewhere (can't tell)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    return isinstance(pid, int) and process_alive(pid, bulkgene_only=True)


def _identity(stat_result: os.stat_result) -> tuple[int, int]:
    return stat_result.st_dev, stat_result.st_ino


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


class RunLock:
    """Held for the whole run; ``release()`` removes the file if it is still ours."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._held: tuple[int, int] | None = None  # (device, inode) of our lock file
        self._token = ""

    def acquire(self) -> None:
        token = self._token = secrets.token_hex(8)
        record = orjson.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                               "started": time.time(), "token": token})
        for _ in range(_ATTEMPTS):
            if self._create(record, token):
                return
            self._break_if_stale(token)
        raise StateError(f"could not take the lock {self.path}: other bulkgene runs kept taking "
                         "it first. Make sure only one run uses this directory, then try again")

    def _create(self, record: bytes, token: str) -> bool:
        """Try once to create the lock file, complete; True if it is now ours."""
        tmp = self.path.with_name(f"{LOCK_NAME}.{token}.tmp")
        with durable.create_new(tmp) as handle:
            handle.write(record)
        try:
            mine = _identity(os.lstat(tmp))
            try:
                os.link(tmp, self.path, follow_symlinks=False)
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno in _NO_HARD_LINKS:
                    return self._create_exclusive(record)
                if not self._is(mine):
                    raise StateError(f"could not create the lock {self.path}: "
                                     f"{exc.strerror}; check the directory's permissions") from None
            # over NFS a link whose reply was lost may be retried and report EEXIST though it
            # was made: the lock is ours iff the name now points at our file
            if self._is(mine):
                self._held = mine
                return True
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _create_exclusive(self, record: bytes) -> bool:
        """Without hard links: O_EXCL. The file is briefly empty, which readers refuse too."""
        try:
            fd = durable.open_fd(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(record)
            handle.flush()
            os.fsync(handle.fileno())
            self._held = _identity(os.fstat(handle.fileno()))
        return True

    def _is(self, identity: tuple[int, int]) -> bool:
        try:
            return _identity(os.lstat(self.path)) == identity
        except FileNotFoundError:
            return False

    def _break_if_stale(self, token: str) -> None:
        """Return when the lock file is gone (removed here if stale); raise if it is held."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return
        except PermissionError:  # someone else's file: readable is enough to judge it
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            except FileNotFoundError:
                return
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise StateError(f"{self.path} is a symbolic link, not a bulkgene lock; remove "
                                 "it and run again") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO there would hang the read
                raise StateError(f"{self.path} is not a regular file, so not a bulkgene lock; "
                                 "remove it and run again")
            os.set_blocking(fd, True)
            raw = _read_fd(fd)
            holder = parse_lock(raw)
            if holder is None:
                raise StateError(
                    f"{self.path} is incomplete ({len(raw)} bytes that don't name a host and "
                    f"pid): another bulkgene may be starting on {self.path.parent} right now, "
                    "or an old version was killed while writing it. If no bulkgene is running "
                    f"there, delete {self.path} and run again")
            where = f"pid {holder['pid']} on {holder['host']}"
            alive = holder_alive(holder)
            if alive:
                raise StateError(f"another bulkgene ({where}) is already writing to "
                                 f"{self.path.parent}; wait for it, or stop it first")
            if alive is None:
                raise StateError(
                    f"{self.path.parent} is locked by {where}, which this machine can't check. "
                    f"If that run is surely over, delete {self.path} and run again")
            self._remove_stale(fd, where, token)
        finally:
            os.close(fd)

    def _remove_stale(self, fd: int, where: str, token: str) -> None:
        """Remove the stale lock open as ``fd``, unless someone else already did."""
        try:
            # contenders breaking the same stale file queue here; the lock goes with the fd
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise StateError(
                f"{self.path} names {where}, which is gone, but it can't be taken over safely "
                f"here ({exc.strerror}). If no bulkgene is running on {self.path.parent}, "
                f"delete {self.path} and run again") from None
        judged = _identity(os.fstat(fd))
        if not self._is(judged):
            return  # already broken by another contender: try to create again
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{token}")
        os.rename(self.path, aside)
        try:
            taken = _identity(os.lstat(aside))
        except FileNotFoundError:
            taken = None
        if taken != judged:  # the name changed under us after all: put back what we took
            with contextlib.suppress(OSError):
                os.link(aside, self.path, follow_symlinks=False)
            aside.unlink(missing_ok=True)
            raise StateError(f"{self.path} changed while a stale lock was being taken over; "
                             "another bulkgene may have started there. Run again")
        log.warning("taking over the stale lock of %s (that process is gone)", where)
        aside.unlink()

    def release(self) -> None:
        if self._held is not None:
            if self._is(self._held) and (read_lock(self.path.parent) or {}).get(
                    "token") == self._token:  # the inode alone may be a new file's, reused
                self.path.unlink(missing_ok=True)
            self._held = None


def acquire_waiting(lock: RunLock, timeout_s: float, poll_s: float = 0.1) -> None:
    """Take ``lock``, waiting while another live process holds it (up to ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            lock.acquire()
            return
        except StateError:
            holder = read_lock(lock.path.parent)
            if holder is None or holder_alive(holder) is False or time.monotonic() > deadline:
                raise
        time.sleep(poll_s)
