"""Writing in a budget directory that other users share: no link followed, nothing blocking, group bits kept.

Any member of the group that shares a budget directory can plant files there. So every file
is created under a fresh random name with ``O_CREAT|O_EXCL|O_NOFOLLOW|O_NONBLOCK`` (never an
existing file, link or FIFO) and renamed over one's own lease (a rename replaces a link, it
never follows it), relative to a descriptor of the directory opened without following any
link below the one the user chose; the directories there are created one by one and must be
real directories, not links. They take the permission bits of the directory above for
the group and others (and its setgid and sticky bits): under umask 022 the first user would
otherwise create them 0755 and lock every other user of the group out.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from bulkgene import durable
from bulkgene.budget.record import LEASE_SUFFIX, TEMP_SUFFIX
from bulkgene.durable import owner_and_mode
from bulkgene.errors import ConfigError

_LEASE_MODE = 0o644  # whatever the umask: a lease the others can't read counts for nothing
_CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_CLOEXEC)


def denied_advice(path: Path) -> str:
    """What to do when a budget directory shared by several users refuses us."""
    return (f"{path} is {owner_and_mode(path)}: every user sharing a budget directory must be "
            f"able to write there; its owner can fix it with `chmod g+ws {path}` (and the group "
            "with chgrp), or use a --budget-dir of your own (then your runs don't share the "
            "key's budget with theirs)")


def ensure_directory(directory: Path, root: Path) -> None:
    """Make ``directory`` and the directories between it and ``root`` (which the user chose:
    links to it are theirs to make), each a real directory with the bits of the one above."""
    try:
        relative = directory.relative_to(root)
    except ValueError:
        relative, root = Path(), directory
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _refused(root, exc) from None
    parent = root
    for part in relative.parts:
        path = parent / part
        try:
            durable.make_directory_below(parent, path)
        except OSError as exc:
            raise _refused(path, exc) from None
        parent = path


def _refused(path: Path, exc: OSError) -> ConfigError:
    if exc.errno == errno.ELOOP or path.is_symlink():  # ELOOP: O_NOFOLLOW met a link
        return ConfigError(
            f"{path} is a symbolic link: bulkgene follows no link below the budget directory "
            "(another user of a shared directory could point it anywhere); remove it, or give "
            "its target as --budget-dir")
    if isinstance(exc, PermissionError):
        blocking = path if path.exists() else path.parent
        return ConfigError(f"could not create the budget directory {path} ({exc.strerror}): "
                           f"{denied_advice(blocking)}")
    return ConfigError(f"could not create the budget directory {path} ({exc}): point "
                       "--budget-dir or BULKGENE_BUDGET_DIR to a writable directory that all "
                       "the jobs sharing the API key can reach")


def open_directory(directory: Path, root: Path) -> int:
    """A descriptor of ``directory``, reached from ``root`` without following any link below
    it (a member who swaps a directory for a link mid-run gets ELOOP, not our files); the
    caller closes it. Every file operation of a lease is relative to it."""
    try:
        relative = directory.relative_to(root)
    except ValueError:
        relative, root = Path(), directory
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        for part in relative.parts:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK
                            | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = below
    except OSError as exc:
        os.close(fd)
        exc.filename = str(directory)
        raise
    return fd


def write_atomically(dir_fd: int, name: str, data: bytes, mode: int = _LEASE_MODE) -> None:
    """Replace ``name`` in the directory ``dir_fd`` with ``data``: written to a fresh random
    temp name (never an existing file, link or FIFO) and renamed (a rename replaces a link,
    never follows it); OSError if the filesystem refuses, and nothing is left behind then."""
    temp = f".{name.removesuffix(LEASE_SUFFIX)}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    try:
        fd = os.open(temp, _CREATE_FLAGS, mode, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode)  # whatever the umask: the others sharing the directory read it
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "No space left on device (short write)", temp)
        finally:
            os.close(fd)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def is_temp_of(name: str, lease_id: str) -> bool:
    """Whether ``name`` is a temp file of lease ``lease_id`` (a crashed writer's leftover)."""
    return name.startswith(f".{lease_id}.") and name.endswith(TEMP_SUFFIX)


def remove(dir_fd: int, names: list[str]) -> None:
    """Unlink what can be unlinked (a sticky directory keeps others' files: that's fine)."""
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
