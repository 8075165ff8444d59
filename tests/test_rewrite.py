"""output/rewrite.py: a report replaced in step with the checkpoint, whatever instant a kill comes at.

Each test stops the protocol where a SIGKILL could (the files and checkpoint as they are on
disk at that instant) and checks that the next start (``finish`` then ``cut_back``, as a
fetch's prepare does) leaves a report and a checkpoint that agree.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest

from bulkgene import durable
from bulkgene.errors import CorruptCheckpoint
from bulkgene.layout import MISSING_NAME
from bulkgene.output import checkpoint as ckpt
from bulkgene.output import rewrite
from bulkgene.output.checkpoint import Checkpoint, InputFile

OLD = b"gene_id\treason\n1\tNOT_RETURNED\n2\tNOT_RETURNED\n"
NEW = (b"gene_id\treason\thistory\tcurrent_gene_id\tdiscontinued_on\tsymbol\ttax_id\n"
       b"1\tNOT_RETURNED\tNOT_IN_HISTORY\t\t\t\t\n2\tNOT_RETURNED\tNOT_IN_HISTORY\t\t\t\t\n")


@pytest.fixture
def committed(tmp_path: Path) -> Checkpoint:
    (tmp_path / MISSING_NAME).write_bytes(OLD)
    state = Checkpoint(fingerprint="f", params={}, inputs=[InputFile("ids", "d")],
                       file_lengths={MISSING_NAME: len(OLD)})
    state.totals.missing = 2
    ckpt.save(tmp_path, state)
    return state


def start_again(directory: Path) -> Checkpoint:
    """What the next run does before anything else: finish, then cut back to the checkpoint."""
    state = ckpt.load(directory)
    assert state is not None
    state = rewrite.finish(directory, state)
    ckpt.cut_back(directory, state, [directory / MISSING_NAME])
    return state


def agree(directory: Path, state: Checkpoint) -> bytes:
    data = (directory / MISSING_NAME).read_bytes()
    assert len(data) == state.file_lengths[MISSING_NAME]
    assert not state.rewrites and not rewrite.pending_path(directory, MISSING_NAME).exists()
    return data


def test_a_whole_rewrite(tmp_path: Path, committed: Checkpoint) -> None:
    def update(state: Checkpoint) -> None:
        state.totals.missing_not_in_history = 2

    def write(handle: BinaryIO) -> None:
        handle.write(NEW)

    new = rewrite.replace(tmp_path, committed, {MISSING_NAME: write}, update)
    assert agree(tmp_path, new) == NEW
    assert new.totals.missing_not_in_history == 2
    assert ckpt.load(tmp_path) == new


def test_killed_before_the_checkpoint_named_it_keeps_the_old_report(tmp_path: Path,
                                                                     committed: Checkpoint) -> None:
    rewrite.pending_path(tmp_path, MISSING_NAME).write_bytes(NEW[:20])  # even half-written
    state = start_again(tmp_path)
    assert agree(tmp_path, state) == OLD and state.totals.missing_not_in_history == 0


def test_killed_after_the_checkpoint_named_it_rolls_forward(tmp_path: Path,
                                                            committed: Checkpoint) -> None:
    rewrite.pending_path(tmp_path, MISSING_NAME).write_bytes(NEW)
    named = copy.deepcopy(committed)
    named.file_lengths[MISSING_NAME] = len(NEW)
    named.rewrites = [MISSING_NAME]
    named.totals.missing_not_in_history = 2
    ckpt.save(tmp_path, named)  # the commit point; the rename never happened
    state = start_again(tmp_path)
    assert agree(tmp_path, state) == NEW and state.totals.missing_not_in_history == 2


def test_killed_after_the_rename_only_clears_the_flag(tmp_path: Path,
                                                      committed: Checkpoint) -> None:
    named = copy.deepcopy(committed)
    named.file_lengths[MISSING_NAME] = len(NEW)
    named.rewrites = [MISSING_NAME]
    ckpt.save(tmp_path, named)
    durable.write_atomically(tmp_path / MISSING_NAME, NEW)
    state = start_again(tmp_path)
    assert agree(tmp_path, state) == NEW
    assert ckpt.load(tmp_path) == state


def test_a_writer_that_fails_leaves_everything_as_it_was(tmp_path: Path,
                                                         committed: Checkpoint) -> None:
    def failing(handle: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        rewrite.replace(tmp_path, committed, {MISSING_NAME: failing})
    assert agree(tmp_path, start_again(tmp_path)) == OLD


def test_a_checkpoint_naming_another_file_as_rewritten_is_refused(tmp_path: Path,
                                                                  committed: Checkpoint) -> None:
    raw = committed.to_bytes().replace(b'"rewrites": []', b'"rewrites": ["../etc/passwd"]')
    # the checksum no longer matches either: rebuild it so the names themselves are judged
    content = orjson.loads(raw)
    content.pop("checksum")
    content["checksum"] = ckpt.content_checksum(content)
    (tmp_path / "checkpoint.json").write_bytes(orjson.dumps(content))
    with pytest.raises(CorruptCheckpoint, match="as reports being rewritten"):
        ckpt.load(tmp_path)
    assert os.path.exists(tmp_path / MISSING_NAME)
