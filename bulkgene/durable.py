"""Every file bulkgene opens in an output directory: never through a symbolic link, fsync'd on commit.

The directory may be shared or tampered with. A symlink planted as ``shard-0000.ndjson``,
``missing.tsv`` or ``checkpoint.json.tmp`` must not make bulkgene truncate or overwrite
what it points at, so every open here uses O_NOFOLLOW and refuses anything but a regular
file with a StateError naming it. Temporary files are created with O_EXCL, so a link that
appears between removing a leftover and creating ours is refused too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from bulkgene.errors import StateError

# O_NONBLOCK: opening a FIFO planted under one of our names must fail, not hang
_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _refuse_link(path: Path) -> StateError:
    return StateError(
        f"{path} is a symbolic link. bulkgene writes only regular files in its output "
        f"directory and never follows a link there (it would overwrite what the link points "
        f"at). Remove the link, or use another --out directory, and run again")


def _refuse_special(path: Path) -> StateError:
    return StateError(f"{path} is not a regular file; bulkgene keeps only its own files under "
                      "that name. Move it away, or use another --out directory, and run again")


def open_fd(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of a regular file in an output directory, refusing symlinks and others."""
    try:
        fd = os.open(path, flags | _SAFE, mode)
    except OSError as exc:
        # Linux and macOS say ELOOP for a symlink under O_NOFOLLOW, FreeBSD EMLINK
        if exc.errno in (errno.ELOOP, errno.EMLINK) and path.is_symlink():
            raise _refuse_link(path) from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, or a socket
            raise _refuse_special(path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse_special(path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_read(path: Path) -> BinaryIO:
    """An output-directory file for reading."""
    return os.fdopen(open_fd(path, os.O_RDONLY), "rb")


def read_bytes(path: Path) -> bytes:
    """The whole of an output-directory file: a FIFO or a link there is an error, never a hang."""
    with open_read(path) as handle:
        return handle.read()


def open_append(path: Path) -> BinaryIO:
    """An output-directory file for appending, created if absent; positioned at its end."""
    handle = os.fdopen(open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")
    handle.seek(0, os.SEEK_END)  # so that tell() is the length from the start
    return handle


def create_new(path: Path) -> BinaryIO:
    """A new file at ``path`` for writing; a leftover regular file there is removed first."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = 0
    if stat.S_ISLNK(mode):
        raise _refuse_link(path)
    if stat.S_ISREG(mode):  # a killed run's leftover; anything else makes the open below fail
        path.unlink()
    try:
        fd = open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        if path.is_symlink():
            raise _refuse_link(path) from None
        raise
    return os.fdopen(fd, "wb")


def fsync_directory(directory: Path) -> None:
    """Make renames and new files in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through ``path.tmp``: a crash leaves the old or the new file, whole.

    The temporary file is fsync'd, renamed over ``path`` (a rename replaces a link, it
    never writes through one), and the directory fsync'd. On an error it is removed.
    """
    tmp = path.with_name(path.name + ".tmp")
    handle = create_new(tmp)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    fsync_directory(path.parent)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole."""
    with atomic_file(path) as handle:
        handle.write(data)


def cut_to(path: Path, length: int) -> int | None:
    """Truncate ``path`` to ``length`` bytes if it is longer (fsync'd); its size before, None if absent."""
    try:
        fd = open_fd(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size > length:
            os.ftruncate(fd, length)
            os.fsync(fd)
        return size
    finally:
        os.close(fd)
