"""The requested-ID set: membership, memory and file size per ID, deterministic bytes, old plans."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import orjson
import pytest
from helpers import cli_env, invoke_cli, read_records, served, write_ids
from pyroaring import BitMap

from bulkgene.input import plan as idplan
from bulkgene.input.idset import MAX_GENE_ID, IdBitmap
from bulkgene.layout import PLAN_BITMAP, PLAN_IDS, PLAN_JSON
from bulkgene.testing import EmulatorThread


def _stray_ids(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, MAX_GENE_ID) for _ in range(count)]


def test_membership_and_count() -> None:
    ids = IdBitmap()
    assert ids.add(1) and ids.add(MAX_GENE_ID) and ids.add(0) and ids.add(123_456_789)
    assert not ids.add(1) and not ids.add(MAX_GENE_ID)
    assert len(ids) == 4
    assert 1 in ids and MAX_GENE_ID in ids and 0 in ids and 123_456_789 in ids
    assert 2 not in ids and 123_456_788 not in ids
    # what a record may carry: out of range or not an int is simply not requested
    assert MAX_GENE_ID + 1 not in ids and 2**40 not in ids and -1 not in ids
    assert "1" not in ids and None not in ids and 1.0 not in ids


def test_iterates_in_ascending_order() -> None:
    ids = IdBitmap()
    members = [*_stray_ids(500, 1), *range(70_000, 80_000)]
    for gene_id in members:
        ids.add(gene_id)
    assert list(ids) == sorted(set(members))


def test_memory_follows_the_number_of_ids_not_their_range() -> None:
    ids = IdBitmap()
    for gene_id in _stray_ids(10_000, 2):  # each one in a range of its own, mostly
        ids.add(gene_id)
    # the 1 Mi-ID chunks of a plain bitmap would hold ~1.3 GB of ranges touched here
    assert ids.allocated_bytes <= 2 * 10_000
    dense = IdBitmap()
    for gene_id in range(1, 1_000_001):
        dense.add(gene_id)
    assert dense.allocated_bytes <= 1_000_000 // 8 + 8192  # one bit per ID when packed


def test_round_trip_through_a_file() -> None:
    ids = IdBitmap()
    members = [*_stray_ids(2000, 3), *range(5, 20_000, 3), *range(300_000, 400_000)]
    for gene_id in members:
        ids.add(gene_id)
    handle = io.BytesIO()
    written = ids.write_to(handle)
    assert written == len(handle.getvalue())
    handle.seek(0)
    again = IdBitmap.read_from(handle, len(ids))
    assert list(again) == list(ids) and len(again) == len(set(members))
    assert again.to_bytes() == ids.to_bytes()
    assert again.add(6) and not again.add(5)  # a loaded set is a working set


def test_same_ids_give_the_same_bytes_whatever_the_order() -> None:
    # sparse ranges (sorted arrays), full ones (bitmaps) and runs, added in two orders
    members = [*_stray_ids(3000, 4), *range(1, 200_000), *range(10**8, 10**8 + 50_000, 7)]
    shuffled = members[:]
    random.Random(5).shuffle(shuffled)
    first, second = IdBitmap(), IdBitmap()
    for gene_id in members:
        first.add(gene_id)
    for gene_id in shuffled:
        second.add(gene_id)
    assert first.to_bytes() == second.to_bytes()
    assert IdBitmap.from_bytes(first.to_bytes()).to_bytes() == first.to_bytes()


def test_bytes_are_the_portable_roaring_format() -> None:
    """Pinned to the spec so a library upgrade that changes the bytes (and checksums) shows."""
    ids = IdBitmap()
    for gene_id in (70_000, 1, 2):
        ids.add(gene_id)
    cookie, containers = 12346, 2
    expected = struct.pack("<II", cookie, containers)
    expected += struct.pack("<HHHH", 0, 2 - 1, 1, 1 - 1)  # (range, count - 1) per range
    expected += struct.pack("<II", 24, 28)  # where each range's sorted offsets start
    expected += struct.pack("<HHH", 1, 2, 70_000 - 65_536)
    assert ids.to_bytes() == expected
    assert IdBitmap().to_bytes() == struct.pack("<II", cookie, 0)


@pytest.mark.parametrize("members", [
    [],
    [MAX_GENE_ID],
    list(range(1, 300_000)),  # full ranges: 8 KiB bitmaps
    [*range(0, 2**31, 2**16 * 63), *range(2**28, 2**28 + 70_000, 3)],  # pieces and their edges
    sorted(set(_stray_ids(20_000, 7))),
])
def test_written_piece_by_piece_as_the_whole_would_serialize(members: list[int]) -> None:
    ids = IdBitmap()
    for gene_id in members:
        ids.add(gene_id)
    handle = io.BytesIO(b"before")
    handle.seek(0, io.SEEK_END)
    written = ids.write_to(handle)
    handle.write(b"after")
    whole = BitMap(members, optimize=False).serialize()
    assert handle.getvalue() == b"before" + whole + b"after" and written == len(whole)


@pytest.mark.parametrize(("data", "count"), [
    (b"", 0),
    (b"\x00" * 128 * 1024, 0),  # one chunk of the format-1 plan.bitmap
    (struct.pack("<II", 12346, 2) + b"\x00" * 6, 3),  # cut short
    (struct.pack("<II", 12347, 0), 0),  # with runs: never written by bulkgene
])
def test_anything_else_is_refused(data: bytes, count: int) -> None:
    with pytest.raises(ValueError):
        IdBitmap.read_from(io.BytesIO(data), count)


def test_a_count_that_does_not_match_is_refused() -> None:
    ids = IdBitmap()
    ids.add(7)
    with pytest.raises(ValueError, match="holds 1 IDs where 2 were expected"):
        IdBitmap.read_from(io.BytesIO(ids.to_bytes()), 2)


def test_plan_bitmap_of_sparse_ids_is_small(tmp_path: Path) -> None:
    strays = _stray_ids(3000, 6)
    path = write_ids(tmp_path / "ids.txt", strays)
    plan = idplan.build(tmp_path, (str(path),), ("ids",), ["d"], lambda reject: None)
    size = (tmp_path / PLAN_BITMAP).stat().st_size
    assert size <= 10 * len(set(strays)) + 8  # a few bytes per ID (format 1: ~370 MB here)
    again = idplan.load(tmp_path, ["d"])
    assert again is not None and list(again.requested) == list(plan.requested)
    assert all(gene_id in again.requested for gene_id in strays)


def _as_format_1(directory: Path) -> None:
    """Turn a plan into what bulkgene wrote before the roaring bitmap."""
    header = orjson.loads((directory / PLAN_JSON).read_bytes())
    header["format"] = 1
    header["chunks"] = [0]
    (directory / PLAN_JSON).write_bytes(orjson.dumps(header))
    (directory / PLAN_BITMAP).write_bytes(b"\xff" * 128 * 1024)


def test_a_format_1_plan_is_not_read_and_is_made_again_the_same(tmp_path: Path) -> None:
    path = write_ids(tmp_path / "ids.txt", [5, 3, 5, 2**30, 9])

    def build() -> None:
        idplan.build(tmp_path, (str(path),), ("ids",), ["d"], lambda reject: None)

    build()
    plan_ids = (tmp_path / PLAN_IDS).read_bytes()
    _as_format_1(tmp_path)
    assert idplan.load(tmp_path, ["d"]) is None
    build()
    assert (tmp_path / PLAN_IDS).read_bytes() == plan_ids
    again = idplan.load(tmp_path, ["d"])
    assert again is not None and list(again.requested) == [3, 5, 9, 2**30]


def test_a_finished_run_with_a_format_1_plan_reruns_without_refetching(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", [*range(1, 120), 1_500_000_000])
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    args = ("fetch", str(source), "--out", str(out), "--batch-size", "50", "-q")
    first = invoke_cli(*args, env=env)
    assert first.returncode == 0, first.stderr.decode()
    records = read_records(out)
    rejects = (out / "rejects.tsv").read_bytes()
    sent = len(served(emulator.state.arrivals()))
    _as_format_1(out)
    again = invoke_cli(*args, env=env)
    assert again.returncode == 0, again.stderr.decode()
    assert len(served(emulator.state.arrivals())) == sent  # every batch was still committed
    assert read_records(out) == records and (out / "rejects.tsv").read_bytes() == rejects
    assert orjson.loads((out / PLAN_JSON).read_bytes())["format"] == 2
    assert (out / PLAN_BITMAP).stat().st_size < 1024
