"""Copying an input that can be read only once (stdin, a pipe, ``<(...)``, a FIFO), within bounds.

The copy is what a run digests and what a resumed run reads. It is bounded three ways, since
the source may be endless (``cat /dev/zero |``, ``yes 7157 |``):

- a line is kept only to its first MiB: the reader rejects any line past 64 KiB, so the
  reject is the same, and a line that runs past 256 MiB is no list of GeneIDs at all;
- copying stops with an InputError once the directory's filesystem has less free space
  than a floor (a tenth of it, at most 256 MiB), leaving room for everyone else;
- the source is polled, so ``cancel`` (set by SIGTERM/SIGINT) stops the copy within a
  fraction of a second, even while the pipe is idle.

Character and block devices are refused as inputs (``fetch /dev/zero`` spooled 54 GB in a
minute), except a terminal on stdin, where a person types IDs.
"""

from __future__ import annotations

import io
import os
import select
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from bulkgene import durable
from bulkgene.errors import InputError, Interrupted

STDIN = "-"
MAX_KEPT_LINE_BYTES = 1 << 20
MAX_LINE_BYTES = 256 << 20
_FREE_FLOOR_BYTES = 256 << 20
_FREE_CHECK_BYTES = 8 << 20
_POLL_S = 0.2


def refuse_device(name: str, mode: int, is_terminal: bool) -> None:
    """A character or block device is no list of GeneIDs (a terminal on stdin aside)."""
    if (stat.S_ISCHR(mode) and not is_terminal) or stat.S_ISBLK(mode):
        kind = "a character device" if stat.S_ISCHR(mode) else "a block device"
        shown = "stdin" if name == STDIN else repr(name)
        raise InputError(f"input {shown} is {kind}, not a file or a pipe of GeneIDs: give a "
                         "text file (or a pipe) with one GeneID per line")


def refuse_device_stream(name: str, stream: BinaryIO) -> None:
    """:func:`refuse_device` for an open stream (one that is no real file passes)."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
        is_terminal = stream.isatty()
    except (OSError, io.UnsupportedOperation, AttributeError):
        return  # an in-memory stream (a test runner's stdin)
    refuse_device(name, mode, is_terminal)


def needs_spool(name: str) -> bool:
    """Whether an input can be read only once: stdin, a pipe, ``<(...)``, a FIFO."""
    if name == STDIN:
        return True
    try:
        mode = os.stat(name).st_mode
    except OSError:
        return False  # reading it says what is wrong
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


class _LineCutter:
    """Drops the bytes of a line past its first MAX_KEPT_LINE_BYTES (LF and CR end lines).

    Blocks are at most MAX_KEPT_LINE_BYTES long, so only a block's first piece (which
    continues the line before) can be cut; a complete line inside one never needs it.
    """

    def __init__(self) -> None:
        self.line_bytes = 0  # of the line still open at the end of the last block

    def cut(self, block: bytes) -> bytes:
        first_end = _first_line_end(block)
        if first_end < 0:
            kept = block[:max(0, MAX_KEPT_LINE_BYTES - self.line_bytes)]
            self.line_bytes += len(block)
            return kept
        head = block[:first_end][:max(0, MAX_KEPT_LINE_BYTES - self.line_bytes)]
        last_end = max(block.rfind(b"\n"), block.rfind(b"\r"))
        self.line_bytes = len(block) - last_end - 1
        return head + block[first_end:]


def _first_line_end(block: bytes) -> int:
    ends = [i for i in (block.find(b"\n"), block.find(b"\r")) if i >= 0]
    return min(ends) if ends else -1


def _reader(source: BinaryIO, cancel: threading.Event | None, shown: str) -> Iterator[bytes]:
    """Blocks of ``source``, checking ``cancel`` between them and while the source is idle."""
    try:
        fd: int | None = source.fileno()
    except (OSError, io.UnsupportedOperation, AttributeError):
        fd = None  # an in-memory stream (a test runner's stdin): never idle
    while True:
        if cancel is not None and cancel.is_set():
            raise Interrupted(f"interrupted while copying the input {shown}; nothing was "
                              "changed: run the same command again (with the same input)")
        if fd is not None:
            ready, _, _ = select.select([fd], [], [], _POLL_S)
            if not ready:
                continue
            block = os.read(fd, MAX_KEPT_LINE_BYTES)
        else:
            block = source.read(MAX_KEPT_LINE_BYTES)
        if not block:
            return
        yield block


def _free_bytes(directory: Path) -> tuple[int, int]:
    """(free bytes for us, the filesystem's size) where ``directory`` lives."""
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize


def spool(name: str, target: Path, cancel: threading.Event | None = None) -> None:
    """Copy the read-once input ``name`` to the new file ``target``; removed again on errors."""
    shown = "stdin" if name == STDIN else repr(name)
    try:
        source = sys.stdin.buffer if name == STDIN else open(name, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read input {shown}: {exc.strerror}; check the path") from None
    try:
        refuse_device_stream(name, source)
        _copy(source, target, cancel, shown)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        if source is not sys.stdin.buffer:
            source.close()


def _copy(source: BinaryIO, target: Path, cancel: threading.Event | None, shown: str) -> None:
    cutter = _LineCutter()
    written = unchecked = 0
    free, size = _free_bytes(target.parent)
    floor = min(_FREE_FLOOR_BYTES, size // 10)
    with durable.create_new(target) as handle:
        for block in _reader(source, cancel, shown):
            kept = cutter.cut(block)
            if cutter.line_bytes > MAX_LINE_BYTES:
                raise InputError(f"input {shown} holds a line longer than "
                                 f"{MAX_LINE_BYTES >> 20} MiB: that is no list of GeneIDs "
                                 "(one per line); check what was given as input")
            if unchecked + len(kept) > _FREE_CHECK_BYTES or free - len(kept) < floor:
                free, _ = _free_bytes(target.parent)
                unchecked = 0
            if free - len(kept) < floor:
                raise InputError(
                    f"copying the input {shown} into {target.parent} stopped after "
                    f"{written >> 20} MiB: only {free >> 20} MiB are left free there, and "
                    "bulkgene leaves room for others. Free some space, or give the list as a "
                    "file (bulkgene reads files in place, without a copy)")
            handle.write(kept)
            written += len(kept)
            unchecked += len(kept)
            free -= len(kept)
