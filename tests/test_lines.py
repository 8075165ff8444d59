"""Input streaming: what counts as a GeneID, what is rejected (with line numbers), duplicates."""

from __future__ import annotations

import gzip
from pathlib import Path

from helpers import SAMPLES

from bulkgene.input import plan as idplan
from bulkgene.input.idset import MAX_GENE_ID, IdBitmap
from bulkgene.input.lines import Reject, read_ids, scan_ids


def test_messy_file_yields_valid_ids_and_rejects_with_line_numbers() -> None:
    path = str(SAMPLES / "messy_ids.txt")
    items = list(read_ids((path,)))
    ids = [item for item in items if isinstance(item, int)]
    rejects = {item.line_number: item.reason for item in items if isinstance(item, Reject)}
    assert ids == [7157, 672, 3105, 7157, 7157, 59067, 1956, 3845]
    assert rejects == {
        9: "NOT_A_GENE_ID",    # TP53
        11: "NOT_A_GENE_ID",   # -5
        12: "OUT_OF_RANGE",    # 0
        13: "NOT_A_GENE_ID",   # 12.5
        14: "OUT_OF_RANGE",    # 99999999999
        15: "OUT_OF_RANGE",    # 2147483648
        16: "NOT_A_GENE_ID",   # ENSG...
        19: "NOT_A_GENE_ID",   # binary junk
        20: "NOT_A_GENE_ID",   # 7157;TP53
    }


def test_reject_text_is_escaped_and_fits_one_tsv_field() -> None:
    items = list(read_ids((str(SAMPLES / "messy_ids.txt"),)))
    junk = next(i for i in items if isinstance(i, Reject) and i.line_number == 19)
    assert "\t" not in junk.text and "\n" not in junk.text and "\x00" not in junk.text
    assert junk.text.startswith("\\x00\\x01binary junk")


def test_scan_counts_unique_duplicates_and_rejects() -> None:
    counts, requested = scan_ids((str(SAMPLES / "messy_ids.txt"),), ("messy",))
    assert (counts.requested, counts.duplicates, counts.rejected) == (6, 2, 9)
    assert 7157 in requested and 3845 in requested and 1 not in requested


def test_plan_keeps_first_occurrences_in_order_and_reads_batches_back(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("5\n3\n5\n9\nx\n3\n1\n" + "".join(f"{i}\n" for i in range(100, 2600)))
    rejects: list[Reject] = []
    plan = idplan.build(tmp_path, (str(path),), ("ids",), ["d1"], rejects.append)
    assert (plan.counts.requested, plan.counts.duplicates, plan.counts.rejected) == (2504, 2, 1)
    assert [r.line_number for r in rejects] == [5]
    batches = list(plan.batches(1000, lambda index: True))
    assert [(b.index, len(b.gene_ids)) for b in batches] == [(0, 1000), (1, 1000), (2, 504)]
    assert batches[0].gene_ids[:5] == (5, 3, 9, 1, 100)
    assert [b.index for b in plan.batches(1000, lambda index: index != 1)] == [0, 2]
    again = idplan.load(tmp_path, ["d1"])
    assert again is not None and again.counts == plan.counts
    assert 9 in again.requested and 2599 in again.requested and 2600 not in again.requested
    assert idplan.load(tmp_path, ["another input"]) is None


def test_gzip_input_is_read_transparently(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("# header\n7157\n672\n")
    assert list(read_ids((str(path),))) == [7157, 672]


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(gzip.compress(b"3105\n"))
    assert list(read_ids((str(path),))) == [3105]


def test_a_100_mb_line_is_one_reject_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with open(path, "wb") as handle:
        handle.write(b"7157\n")
        handle.write(b"9" * (100 * 1024 * 1024))
        handle.write(b"\n672\n")
    items = list(read_ids((str(path),)))
    assert items[0] == 7157 and items[2] == 672
    reject = items[1]
    assert isinstance(reject, Reject) and reject.line_number == 2
    assert reject.reason == "LINE_TOO_LONG" and len(reject.text) < 100


def test_long_line_with_a_valid_first_field_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "wide.tsv"
    path.write_bytes(b"7157\t" + b"x" * 200_000 + b"\n672\n")
    assert list(read_ids((str(path),))) == [7157, 672]


def test_line_numbers_restart_per_file(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    second = tmp_path / "b.txt"
    first.write_text("1\nbad\n")
    second.write_text("bad\n")
    rejects = [i for i in read_ids((str(first), str(second))) if isinstance(i, Reject)]
    assert [(r.source, r.line_number) for r in rejects] == [(str(first), 2), (str(second), 1)]


def test_bitmap_is_a_set_of_gene_ids() -> None:
    bitmap = IdBitmap()
    assert bitmap.add(1) and bitmap.add(MAX_GENE_ID) and bitmap.add(123_456_789)
    assert not bitmap.add(1)
    assert 1 in bitmap and MAX_GENE_ID in bitmap and 2 not in bitmap and 0 not in bitmap
    assert len(bitmap) == 3


