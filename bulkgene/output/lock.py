"""One writer per task directory: a lock file naming host and pid, taken atomically, broken if stale.

The lock file appears complete or not at all: its content is written to a temporary file
first and hard-linked to ``bulkgene.lock`` (link fails if the name exists, atomically, on
NFS too). So a lock file that can't be parsed is never a crashed run's: it is refused, not
broken.

The holder also keeps an ``flock`` on the lock file for the run's whole life (taken on the
temporary file before the link, so the name never shows an unlocked lock); the file says
so (``"flock": true``). Whether a holder lives is asked of that flock, not guessed from its
command line: a ``bulkgene.download()`` in a script or notebook has no "bulkgene" there,
and the CLI once broke such a live run's lock. A lock is stale only if it names a process
on this host and nobody holds its flock: its pid is dead, or (the file saying the holder
held the flock) the pid now belongs to another program. A lock without the flock mark
(an older bulkgene, or a filesystem without flock) is stale only when its pid is dead.
One held on another host is never taken over: flock may not reach across hosts, this
machine can't see that process, and judging it by a heartbeat or the file's age would need
clocks that agree across nodes. The user is told how to remove it once that run is surely
over.

Breaking a stale lock is serialized by the same flock, taken without waiting, and done by
renaming the file aside after checking that ``bulkgene.lock`` is still that very file;
only then is it removed and creation tried again, where exactly one contender wins.
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
import threading
import time
from pathlib import Path
from typing import Annotated

import msgspec

from bulkgene import durable
from bulkgene.errors import Interrupted, StateError
from bulkgene.layout import LOCK_NAME
from bulkgene.processes import process_alive

_ATTEMPTS = 5
# a contender breaking a stale lock holds its flock for a rename and an unlink: how long a
# busy flock is watched before it counts as a live run's
_BREAKER_POLLS = 20
_BREAKER_POLL_S = 0.05
# link() is unsupported on some filesystems (FAT, some FUSE and object-store mounts)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV}
log = logging.getLogger("bulkgene")


class LockHolder(msgspec.Struct, frozen=True):
    """What a lock file says of the run holding it."""

    host: str
    pid: Annotated[int, msgspec.Meta(gt=0)]
    started: float = 0.0
    token: str = ""
    flock: bool = False  # it holds an flock on the lock file for its whole life


def parse_lock(raw: bytes) -> LockHolder | None:
    """The holder a lock file names; None unless it is complete (JSON with a host and a pid)."""
    try:
        return msgspec.json.decode(raw, type=LockHolder)
    except msgspec.DecodeError:
        return None


def read_lock(directory: Path) -> LockHolder | None:
    try:
        raw = durable.read_bytes(directory / LOCK_NAME)
    except OSError:
        return None
    return parse_lock(raw)


def _judge(holder: LockHolder, flock_free: bool) -> bool | None:
    """Whether the holder a lock names runs: True/False on this host, None elsewhere.

    Called when its flock is free (``flock_free``) or can't be asked: a holder that took
    the flock (the file says so) would still hold it, so its pid is someone else's now.
    """
    if holder.host != socket.gethostname():
        return None
    if not process_alive(holder.pid):
        return False
    return not (flock_free and holder.flock)


def _try_flock(fd: int, operation: int) -> bool | None:
    """Take ``operation`` without waiting: True taken, False held by someone, None unsupported."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK and the like: a filesystem without flock
        return None
    return True


def _open_lock(path: Path) -> int | None:
    """The lock file open for reading (None if absent), refusing links and special files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise StateError(f"{path} is a symbolic link, not a bulkgene lock; remove "
                             "it and run again") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO there would hang the read
        os.close(fd)
        raise StateError(f"{path} is not a regular file, so not a bulkgene lock; remove it "
                         "and run again")
    os.set_blocking(fd, True)
    return fd


def lock_running(directory: Path) -> bool | None:
    """Whether the run holding ``directory``'s lock lives: True, False (gone, or no complete
    lock), None (it runs on another host, which this machine can't check). A link or a
    FIFO planted as the lock is a StateError, as for every file of the directory."""
    try:
        fd = _open_lock(directory / LOCK_NAME)
    except OSError:
        return False
    if fd is None:
        return False
    try:
        free = _try_flock(fd, fcntl.LOCK_SH)
        if free is False:
            return True  # held: the holder lives (or is starting, its record still coming)
        if free:
            fcntl.flock(fd, fcntl.LOCK_UN)
        holder = parse_lock(_read_fd(fd))
        return False if holder is None else _judge(holder, flock_free=free is True)
    finally:
        os.close(fd)


def _identity(stat_result: os.stat_result) -> tuple[int, int]:
    return stat_result.st_dev, stat_result.st_ino


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


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
        self._fd: int | None = None  # open on our lock file, holding its flock for the run
        self._token = ""

    def _record(self, token: str, flocked: bool) -> bytes:
        return msgspec.json.encode(LockHolder(socket.gethostname(), os.getpid(), time.time(),
                                              token, flocked))

    def acquire(self) -> None:
        if self._held is not None and self._fd is not None and self._is(self._held):
            return  # still ours (--restart left it in place): never judged stale by ourselves
        self._close()  # a lock re-taken (after --restart moved the old one away)
        self._held = None
        token = self._token = secrets.token_hex(8)
        for _ in range(_ATTEMPTS):
            if self._create(token):
                return
            self._break_if_stale(token)
        raise StateError(f"could not take the lock {self.path}: other bulkgene runs kept taking "
                         "it first. Make sure only one run uses this directory, then try again")

    def _create(self, token: str) -> bool:
        """Try once to create the lock file, complete and flocked; True if it is now ours."""
        tmp = self.path.with_name(f"{LOCK_NAME}.{token}.tmp")
        fd = durable.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        kept = False
        try:
            # flocked before the name exists: nobody ever sees our lock without its flock
            flocked = _try_flock(fd, fcntl.LOCK_EX) is True
            _write_all(fd, self._record(token, flocked))
            mine = _identity(os.fstat(fd))
            try:
                os.link(tmp, self.path, follow_symlinks=False)
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno in _NO_HARD_LINKS:
                    return self._create_exclusive(token)
                if not self._is(mine):
                    raise StateError(f"could not create the lock {self.path}: "
                                     f"{exc.strerror}; check the directory's permissions") from None
            # over NFS a link whose reply was lost may be retried and report EEXIST though it
            # was made: the lock is ours iff the name now points at our file
            if self._is(mine):
                self._held, self._fd, kept = mine, fd, True
                return True
            return False
        finally:
            if not kept:
                os.close(fd)
            tmp.unlink(missing_ok=True)

    def _create_exclusive(self, token: str) -> bool:
        """Without hard links: O_EXCL. The file is briefly empty, which readers refuse too."""
        try:
            fd = durable.open_fd(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return False
        try:
            flocked = _try_flock(fd, fcntl.LOCK_EX) is True
            _write_all(fd, self._record(token, flocked))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._held, self._fd = _identity(os.fstat(fd)), fd
        return True

    def _is(self, identity: tuple[int, int]) -> bool:
        try:
            return _identity(os.lstat(self.path)) == identity
        except FileNotFoundError:
            return False

    def _break_if_stale(self, token: str) -> None:
        """Return when the lock file is gone (removed here if stale); raise if it is held."""
        fd = _open_lock(self.path)
        if fd is None:
            return
        try:
            raw = _read_fd(fd)
            holder = parse_lock(raw)
            flock = _try_flock(fd, fcntl.LOCK_EX)
            if flock is False and self._gone_while_waiting(fd):
                return  # another contender was breaking it: try to create again
            if holder is None:
                raise StateError(
                    f"{self.path} is incomplete ({len(raw)} bytes that don't name a host and "
                    f"pid): another bulkgene may be starting on {self.path.parent} right now, "
                    "or an old version was killed while writing it. If no bulkgene is running "
                    f"there, delete {self.path} and run again")
            where = f"pid {holder.pid} on {holder.host}"
            alive = True if flock is False else _judge(holder, flock_free=flock is True)
            if alive:
                raise StateError(f"another bulkgene ({where}) is already writing to "
                                 f"{self.path.parent}; wait for it, or stop it first")
            if alive is None:
                raise StateError(
                    f"{self.path.parent} is locked by {where}, which this machine can't check. "
                    f"If that run is surely over, delete {self.path} and run again")
            if flock is None:
                raise StateError(
                    f"{self.path} names {where}, which is gone, but it can't be taken over "
                    f"safely here (this filesystem has no flock). If no bulkgene is running "
                    f"on {self.path.parent}, delete {self.path} and run again")
            self._remove_stale(fd, where, token)
        finally:
            os.close(fd)

    def _gone_while_waiting(self, fd: int) -> bool:
        """With the flock of the file ``fd`` held: whether it stops being the lock soon (a
        contender breaking a stale lock holds the flock for a moment, a live run for good)."""
        judged = _identity(os.fstat(fd))
        for _ in range(_BREAKER_POLLS):
            if not self._is(judged):
                return True
            time.sleep(_BREAKER_POLL_S)
        return not self._is(judged)

    def _remove_stale(self, fd: int, where: str, token: str) -> None:
        """Remove the stale lock open as ``fd`` (its flock held), unless someone else did."""
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
            holder = read_lock(self.path.parent)
            # the inode alone may be a new file's, reused: the token says it is ours
            if self._is(self._held) and holder is not None and holder.token == self._token:
                self.path.unlink(missing_ok=True)
            self._held = None
        self._close()  # the flock goes last: the name is gone before the lock is free

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def acquire_waiting(lock: RunLock, timeout_s: float, poll_s: float = 0.1,
                    stop: threading.Event | None = None) -> None:
    """Take ``lock``, waiting while another live process holds it (up to ``timeout_s``;
    Interrupted once ``stop`` is set)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            lock.acquire()
            return
        except StateError:
            if lock_running(lock.path.parent) is False or time.monotonic() > deadline:
                raise
        if stop is not None and stop.wait(poll_s):
            raise Interrupted(f"another bulkgene was being waited for ({lock.path})")
        if stop is None:
            time.sleep(poll_s)
