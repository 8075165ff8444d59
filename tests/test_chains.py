"""history/rows.py and history/chains.py: a gene_history file read and every GeneID followed to its end."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import pytest

from bulkgene.errors import HistoryError
from bulkgene.history.chains import explain_ids
from bulkgene.history.rows import HEADER, open_history, scan
from bulkgene.input.idset import IdBitmap


def ids(*gene_ids: int) -> IdBitmap:
    bitmap = IdBitmap()
    bitmap.update(gene_ids)
    return bitmap


def history_file(path: Path, rows: list[str], gzipped: bool = False, crlf: bool = False) -> Path:
    end = "\r\n" if crlf else "\n"
    text = HEADER.decode().replace("\n", end) + "".join(row + end for row in rows)
    if gzipped:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_each_class_from_a_plain_text_file(tmp_path: Path) -> None:
    path = history_file(tmp_path / "gene_history", [
        "9606\t-\t4\tA12M1\t20050508",
        "9606\t51596\t42\tACHAP\t20060616",
        "10116\t-\t369155\tBp127\t20050510",
    ])
    explained = explain_ids(path, str(path), ids(4, 42, 7))
    four, forty_two, seven = (explained.explanation(i) for i in (4, 42, 7))
    assert (four.history, four.current_gene_id, four.discontinued_on, four.symbol,
            four.tax_id) == ("DISCONTINUED", None, "2005-05-08", "A12M1", 9606)
    assert (forty_two.history, forty_two.current_gene_id) == ("REPLACED", 51596)
    assert forty_two.fields() == b"REPLACED\t51596\t2006-06-16\tACHAP\t9606"
    assert seven.history == "NOT_IN_HISTORY" and seven.fields() == b"NOT_IN_HISTORY\t\t\t\t"
    assert explained.passes == 1 and explained.rows == 3


def test_chains_are_followed_to_their_end_whatever_the_order_of_rows(tmp_path: Path) -> None:
    # the successor's own row comes before and after its predecessor's: order means nothing
    path = history_file(tmp_path / "h.gz", [
        "9606\t300\t200\tB\t20100101",   # 200 -> 300, 300 -> 400 (live): two steps
        "9606\t200\t100\tA\t20050101",   # 100 -> 200 -> 300 -> 400: three steps
        "9606\t400\t300\tC\t20150101",
        "9606\t600\t500\tD\t20060101",   # 500 -> 600 -> - : replaced, then discontinued
        "9606\t-\t600\tE\t20200202",
    ], gzipped=True)
    explained = explain_ids(path, "h.gz", ids(100, 200, 500))
    hundred = explained.explanation(100)
    assert (hundred.history, hundred.current_gene_id, hundred.hops) == ("REPLACED", 400, 3)
    # the day of the chain's last row; the symbol and taxon of the requested GeneID's own
    assert (hundred.discontinued_on, hundred.symbol) == ("2015-01-01", "A")
    assert explained.explanation(200).current_gene_id == 400
    five_hundred = explained.explanation(500)
    assert (five_hundred.history, five_hundred.current_gene_id,
            five_hundred.discontinued_on) == ("DISCONTINUED", None, "2020-02-02")
    # pass 1 kept the rows of 100, 200, 500 (asked about); pass 2 those of 300 and 600, the
    # middles every chain still needed, read together
    assert explained.passes == 2


def test_a_cycle_ends_the_chain_and_is_reported(tmp_path: Path) -> None:
    path = history_file(tmp_path / "h", [
        "9606\t11\t10\tX\t20100101", "9606\t10\t11\tY\t20110101",  # 10 -> 11 -> 10
        "9606\t12\t12\tZ\t20120101",                                 # 12 -> 12
    ])
    explained = explain_ids(path, "h", ids(10, 12))
    assert explained.explanation(10).history == "DISCONTINUED"
    assert explained.explanation(10).problem == "cycle"
    assert explained.explanation(12).problem == "cycle"
    assert sorted(explained.cycles) == [10, 12]


def test_a_chain_longer_than_the_cap_stops_there(tmp_path: Path) -> None:
    rows = [f"9606\t{n + 1}\t{n}\tS{n}\t20100101" for n in range(1, 40)]  # 1 -> 2 -> ... -> 40
    path = history_file(tmp_path / "h", rows)
    explained = explain_ids(path, "h", ids(1, 35), max_hops=10)
    assert explained.explanation(1).problem == "too_long"
    assert explained.explanation(35).current_gene_id == 40  # 35 -> ... -> 40: five steps
    assert explained.too_long == [1]


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = history_file(tmp_path / "h", [
        "9606\t-\t4\tA12M1\t20050508",
        "garbage line",
        "9606\t-\t5\ttoo\tmany\t20050508",
        "9606\t-\tNaN\tX\t20050508",
        "9606\t-\t6\tBADDATE\t20051340",
        "9606\t-\t7\tok\t20050509",
    ], crlf=True)
    explained = explain_ids(path, "h", ids(4, 5, 6, 7))
    assert explained.malformed == 4
    assert [number for number, _ in explained.examples] == [3, 4, 5, 6]
    assert explained.explanation(4).history == "DISCONTINUED"
    assert explained.explanation(7).discontinued_on == "2005-05-09"  # CRLF: no stray \r
    assert explained.explanation(6).history == "NOT_IN_HISTORY"  # its only row was bad


def test_a_file_with_no_history_row_is_an_error_that_says_what_it_expects(tmp_path: Path) -> None:
    path = tmp_path / "gene_info"
    path.write_text("#tax_id\tGeneID\tSymbol\n9606\t7157\tTP53\n")
    with pytest.raises(HistoryError, match="holds no gene_history row"):
        explain_ids(path, "gene_info", ids(7157))


def test_a_truncated_gzip_file_is_an_error_naming_it(tmp_path: Path) -> None:
    whole = history_file(tmp_path / "h.gz", ["9606\t-\t4\tA\t20050508"] * 1000, gzipped=True)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole.read_bytes()[:-20])
    with pytest.raises(HistoryError, match=r"cut\.gz is not a complete gzip file"):
        explain_ids(cut, "cut.gz", ids(4))


def test_symbols_are_text_without_control_characters(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_bytes(HEADER + b"9606\t-\t4\tA\x1b[31m\xff\t20050508\n")
    symbol = explain_ids(path, "h", ids(4)).explanation(4).symbol
    assert symbol == "A[31m\ufffd" and symbol.isprintable()


def test_an_over_long_line_is_skipped_to_its_newline_and_counted(tmp_path: Path) -> None:
    # a row in shape, but 3 MB long: no gene_history line comes near the cap, so it is junk
    # (before the cap, its symbol was cut to 100 characters and the row taken as a real one)
    long_row = f"9606\t-\t5\t{'S' * (3 << 20)}\t20050508"
    path = history_file(tmp_path / "h.gz", [
        "9606\t-\t4\tA\t20050508", long_row, "9606\t-\t6\tB\t20050509",
    ], gzipped=True)
    explained = explain_ids(path, "h.gz", ids(4, 5, 6))
    assert explained.malformed == 1 and explained.rows == 2
    assert explained.examples == [(3, "9606\t-\t5\t" + "S" * 71)]
    assert explained.explanation(5).history == "NOT_IN_HISTORY"
    assert explained.explanation(6).discontinued_on == "2005-05-09", "the row after it is read"


def test_a_file_of_one_endless_line_is_read_in_flat_memory(tmp_path: Path) -> None:
    # 16 MiB without a newline, then one row: held whole, the line cost 16 MiB and each 1 MiB
    # read copied all of it again (600 MB took 2 min 51 s and 1.9 GB before the cap)
    path = tmp_path / "h"
    path.write_bytes(b"9606\t" + b"7" * (16 << 20) + b"\n9606\t-\t6\tB\t20050509")
    tracemalloc.start()
    try:
        with open_history(path, "h") as stream:
            result = scan(stream, ids(6))
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert list(result.rows) == [6] and result.lines == 1
    assert result.malformed == 1 and result.examples[0][0] == 1
    assert peak_bytes < 4 << 20, f"{peak_bytes} bytes at the peak for a 16 MiB line"


def test_an_over_long_last_line_without_a_newline_is_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_bytes(HEADER + b"9606\t-\t4\tA\t20050508\n" + b"x" * (3 << 20))
    explained = explain_ids(path, "h", ids(4))
    assert explained.malformed == 1 and explained.rows == 1
    assert explained.examples == [(3, "x" * 80)]
