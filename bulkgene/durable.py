"""Every file bulkgene opens in an output directory: never through a symbolic link, fsync'd on commit.

The directory may be shared or tampered with. A symlink planted as ``shard-0000.ndjson``,
``missing.tsv`` or ``checkpoint.json.tmp`` must not make bulkgene truncate or overwrite
what it points at, so every open here uses O_NOFOLLOW and refuses anything but a regular
file with a StateError naming it. Temporary files are created with O_EXCL, so a link that
appears between removing a leftover and creating ours is refused too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
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


# bits a directory made inside a run directory takes from its parent: an array's directory
# shared by a group (chmod g+ws) must stay writable by the group's other users, whose tasks
# create their files in .claims/ and beside the plan, under a umask of 022 as much as 002
_INHERITED_BITS = 0o077 | stat.S_ISGID | stat.S_ISVTX


def make_directory_below(parent: Path, path: Path) -> None:
    """Make ``path`` (a child of ``parent``) a real directory, with ``parent``'s group and
    other bits: OSError ELOOP if it is a symbolic link (never followed), ENOTDIR if it is
    something else. A directory of ours that lacks the bits (made under umask 022) gets
    them; someone else's is left as it is."""
    wanted = os.stat(parent).st_mode & _INHERITED_BITS
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid == os.geteuid() and mode | wanted != mode:
            os.fchmod(fd, mode | wanted)
    finally:
        os.close(fd)


def make_run_directories(root: Path, path: Path) -> None:
    """Make ``path`` and every directory between it and ``root`` (the run's directory, which
    the user chose) as :func:`make_directory_below` does; a link or a non-directory on the
    way is a StateError naming it and what to do."""
    parent = root
    for part in path.relative_to(root).parts:
        below = parent / part
        try:
            make_directory_below(parent, below)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK) or below.is_symlink():
                raise StateError(
                    f"{below} is a symbolic link. bulkgene follows no link inside its run "
                    f"directory {root} (whoever can write there could point it at any "
                    "directory, and bulkgene would write or resume a run there). Remove the "
                    "link (if it stands for a task directory moved elsewhere, move that "
                    "directory back), and run again") from None
            if exc.errno == errno.ENOTDIR:
                raise _refuse_special(below) from None
            if isinstance(exc, PermissionError):
                raise refuse_shared(below if below.exists() else parent, exc,
                                    "open" if below.exists() else "create a directory in") \
                    from None
            raise
        parent = below


def owner_and_mode(path: Path) -> str:
    """``owned by alice (uid 1001), drwxr-xr-x``: what a Permission denied is about."""
    try:
        info = os.lstat(path)
    except OSError:
        return "whose owner can't be read"
    try:
        name = f"{pwd.getpwuid(info.st_uid).pw_name} (uid {info.st_uid})"
    except KeyError:
        name = f"uid {info.st_uid}"
    return f"owned by {name}, {stat.filemode(info.st_mode)}"


def refuse_shared(path: Path, exc: OSError, doing: str = "create a file in") -> StateError:
    """A directory an array's tasks share refused another user: which one, whose, and how
    to open it to the group."""
    return StateError(
        f"cannot {doing} {path}: {exc.strerror} ({path} is {owner_and_mode(path)}). Every "
        "user whose tasks share a run directory must be able to write there: its owner can "
        f"run `chmod -R g+w {path}` (and `chmod g+s` on the directories, so that new ones "
        "keep the group), or use another --out")


def create_exclusively(path: Path, content: bytes, writer: str) -> bool:
    """Create ``path`` holding ``content`` whole (a complete file linked into place: atomic
    and exclusive on NFS too, where O_EXCL alone was not); False if it exists already.
    ``writer`` names who writes, so that two writers' temporary files never meet."""
    tmp = path.with_name(f".{path.name}.{writer}.tmp")
    try:
        with create_new(tmp) as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except PermissionError as exc:  # made by another user of the group without its bits
        raise refuse_shared(path.parent, exc) from None
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    else:
        fsync_directory(path.parent)
        return True
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


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
