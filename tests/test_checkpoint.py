"""The checkpoint: which batches count as committed, atomic saves, constant commit cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkgene.errors import CorruptCheckpoint, FingerprintMismatch, StateError
from bulkgene.output import checkpoint as ckpt
from bulkgene.output.checkpoint import Checkpoint, InputFile


def _fresh() -> Checkpoint:
    return Checkpoint(fingerprint="f", params={"batch_size": 10}, inputs=[InputFile("a", "d")])


def test_watermark_advances_over_committed_and_failed_batches() -> None:
    state = _fresh()
    state.mark_committed(1)
    assert state.done_below == 0 and state.is_committed(1) and not state.is_committed(0)
    state.mark_failed(0, 10)
    assert state.done_below == 2
    assert not state.is_committed(0), "a failed batch must be fetched again"
    assert state.is_committed(1)
    state.mark_committed(0)
    assert state.is_committed(0) and not state.failed


def test_checkpoint_size_does_not_grow_with_committed_batches(tmp_path: Path) -> None:
    state = _fresh()
    sizes = []
    for batch in range(20_000):
        state.mark_committed(batch)
        if batch in (99, 19_999):
            sizes.append(len(state.to_bytes()))
    assert sizes[1] - sizes[0] < 16  # only the watermark's digits grow


def test_round_trip_and_atomic_save(tmp_path: Path) -> None:
    state = _fresh()
    state.mark_committed(0)
    state.mark_committed(5)
    state.mark_failed(2, 7)
    state.file_lengths["shard-0000.ndjson"] = 123
    ckpt.save(tmp_path, state)
    loaded = ckpt.load(tmp_path)
    assert loaded is not None
    assert loaded.done_below == 1 and loaded.done_above == {5} and loaded.failed == {2: 7}
    assert loaded.file_lengths == {"shard-0000.ndjson": 123}
    assert not (tmp_path / "checkpoint.json.tmp").exists()


def test_corrupt_checkpoint_is_an_error_with_instructions(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.json").write_bytes(b'{"format": 1, "fingerp')
    with pytest.raises(CorruptCheckpoint, match="--restart"):
        ckpt.load(tmp_path)


def test_mismatch_names_the_changed_parameter() -> None:
    state = _fresh()
    params = {"batch_size": 20}
    inputs = [InputFile("a", "d")]
    with pytest.raises(FingerprintMismatch, match="batch_size: was 10, now 20"):
        ckpt.check_compatible(state, params, inputs, ckpt.fingerprint(params, ["d"]))


def test_cut_back_truncates_tails_and_refuses_lost_data(tmp_path: Path) -> None:
    state = _fresh()
    shard = tmp_path / "shard-0000.ndjson"
    shard.write_bytes(b'{"a":1}\n{"b":')
    state.file_lengths[shard.name] = 8
    ckpt.cut_back(tmp_path, state, [shard])
    assert shard.read_bytes() == b'{"a":1}\n'
    state.file_lengths[shard.name] = 100
    with pytest.raises(CorruptCheckpoint, match="fewer than the 100"):
        ckpt.cut_back(tmp_path, state, [shard])


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside", "sub/shard-0000.ndjson", ".",
                                  "..", "a\0b", "", "plan.ids", "checkpoint.json"])
def test_file_names_outside_the_directory_make_the_checkpoint_corrupt(tmp_path: Path,
                                                                      name: str) -> None:
    state = _fresh()
    state.file_lengths[name] = 0
    ckpt.save(tmp_path, state)
    with pytest.raises(CorruptCheckpoint, match=r"not a shard or report.*--restart"):
        ckpt.load(tmp_path)


def test_cut_back_refuses_a_symlink_and_leaves_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"not ours")
    shard = tmp_path / "shard-0000.ndjson"
    shard.symlink_to(victim)
    with pytest.raises(StateError, match="symbolic link"):
        ckpt.cut_back(tmp_path, _fresh(), [shard])
    assert victim.read_bytes() == b"not ours"


def test_a_checkpoint_changed_outside_bulkgene_fails_its_checksum(tmp_path: Path) -> None:
    state = _fresh()
    state.mark_committed(0)
    ckpt.save(tmp_path, state)
    path = tmp_path / "checkpoint.json"
    path.write_bytes(path.read_bytes().replace(b'"done_below": 1', b'"done_below": 9'))
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        ckpt.load(tmp_path)
