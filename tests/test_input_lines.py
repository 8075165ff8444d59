"""What a line is: LF, CRLF or CR ends one; several numbers on a line are rejected, never cut."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli_env, invoke_cli

from bulkgene.errors import InputError
from bulkgene.input.lines import Reject, read_ids
from bulkgene.testing import EmulatorThread


def _items(path: Path, data: bytes) -> list[int | Reject]:
    path.write_bytes(data)
    return list(read_ids((str(path),)))


def test_cr_only_line_ends_are_lines(tmp_path: Path) -> None:
    items = _items(tmp_path / "mac.txt", b"7157\r672\rTP53\r3105")
    assert items[:2] == [7157, 672] and items[3] == 3105
    assert isinstance(items[2], Reject) and items[2].line_number == 3


def test_lf_crlf_and_cr_number_lines_alike(tmp_path: Path) -> None:
    for end in (b"\n", b"\r\n", b"\r"):
        items = _items(tmp_path / "ids.txt", end.join([b"1", b"", b"x", b"2"]) + end)
        assert [i if isinstance(i, int) else i.line_number for i in items] == [1, 3, 2]


def test_crlf_split_across_read_blocks_is_one_line_end(tmp_path: Path) -> None:
    block = 1 << 20
    count = block // 6 + 10
    # pad so that a CR is the last byte of the first block and its LF the first of the next
    pad = next(p for p in range(1, 7) if (block - 1 - (p + 2) - 4) % 6 == 0)
    data = b"#" + b"x" * pad + b"\n" + b"7157\r\n" * count + b"bad\r\n"
    assert data[block - 1: block + 1] == b"\r\n"
    items = _items(tmp_path / "ids.txt", data)
    assert items[:-1] == [7157] * count
    last = items[-1]
    assert isinstance(last, Reject) and last.line_number == count + 2


@pytest.mark.parametrize("line", [b"1,2,3", b"1 2 3", b"1\t2", b"7157 TP53 17", b"7157,\"672\""])
def test_a_line_with_several_numbers_is_rejected(tmp_path: Path, line: bytes) -> None:
    items = _items(tmp_path / "ids.txt", b"3105\n" + line + b"\n")
    assert items[0] == 3105
    reject = items[1]
    assert isinstance(reject, Reject) and reject.reason == "SEVERAL_IDS"


@pytest.mark.parametrize("line", [b"7157 TP53", b"7157,TP53", b"7157\t# comment 12",
                                  b"\"7157\",\"TP53\"", b"7157\tTP53\tnone"])
def test_a_gene_id_with_text_beside_it_is_read(tmp_path: Path, line: bytes) -> None:
    assert _items(tmp_path / "ids.txt", line + b"\n") == [7157]


def test_a_one_line_csv_is_an_error_that_says_so(emulator: EmulatorThread,
                                                 tmp_path: Path) -> None:
    source = tmp_path / "ids.csv"
    source.write_text("7157,672,3105\n")
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"),
                     env=cli_env(emulator.base_url))
    assert result.returncode == 1
    assert b"SEVERAL_IDS" in result.stderr and b"one GeneID per line" in result.stderr


def test_no_gene_id_error_names_every_file(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    second = tmp_path / "b.txt"
    first.write_text("")
    second.write_text("TP53\n")
    with pytest.raises(InputError, match=r"a\.txt.*b\.txt"):
        list(read_ids((str(first), str(second))))
