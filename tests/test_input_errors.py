"""An input with no usable GeneID is an error that says why, and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import EmulatorFactory, cli_env, invoke_cli

from bulkgene.testing import EmulatorThread

INPUTS = {
    "symbols": (b"TP53\nBRCA1\nHLA-A\n", b"gene symbols aren't GeneIDs"),
    "ensembl": (b"ENSG00000141510\nENSG00000012048\n", b"Ensembl IDs (ENSG...) aren't GeneIDs"),
    "empty": (b"", b"is empty"),
    "comments only": (b"# my genes\n\n# none yet\n", b"only blank lines, # comments"),
    "binary": (bytes(range(256)) * 8, b"looks binary"),
}


def _leftovers(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_an_input_without_gene_ids_fails_saying_why(emulator: EmulatorThread, tmp_path: Path,
                                                    kind: str) -> None:
    data, advice = INPUTS[kind]
    source = tmp_path / "ids.txt"
    source.write_bytes(data)
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), env=cli_env(emulator.base_url))
    assert result.returncode == 1, result.stderr.decode()
    assert advice in result.stderr and b"Traceback" not in result.stderr
    assert not out.exists()  # no empty --out left behind


def test_the_error_shows_the_first_rejected_lines(emulator: EmulatorThread,
                                                  tmp_path: Path) -> None:
    source = tmp_path / "symbols.txt"
    source.write_text("# my list\nTP53\nBRCA1\n")
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"),
                     env=cli_env(emulator.base_url))
    assert result.returncode == 1
    assert f"{source}:2: 'TP53'".encode() in result.stderr
    assert f"{source}:3: 'BRCA1'".encode() in result.stderr
    assert b"datasets summary gene symbol" in result.stderr


def test_an_existing_out_dir_gets_no_tmp_or_spool_files(emulator: EmulatorThread,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = invoke_cli("fetch", "-", "--out", str(out), env=cli_env(emulator.base_url),
                     stdin=b"TP53\nBRCA1\n")
    assert result.returncode == 1
    assert b"gene symbols" in result.stderr
    assert out.is_dir() and _leftovers(out) == []


def test_a_task_directory_made_for_a_bad_input_is_removed(emulator: EmulatorThread,
                                                          tmp_path: Path) -> None:
    source = tmp_path / "ids.txt"
    source.write_text("ENSG00000141510\n")
    out = tmp_path / "deep" / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--task-index", "1",
                     "--task-count", "2", env=cli_env(emulator.base_url))
    assert result.returncode == 1
    assert not (tmp_path / "deep").exists()


def test_restart_with_a_bad_input_leaves_no_empty_directory(emulator: EmulatorThread,
                                                            tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("7157\n")
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    assert invoke_cli("fetch", str(good), "--out", str(out), env=env).returncode == 0
    bad = tmp_path / "bad.txt"
    bad.write_text("TP53\n")
    result = invoke_cli("fetch", str(bad), "--out", str(out), "--restart", env=env)
    assert result.returncode == 1
    assert not out.exists()
    (moved,) = tmp_path.glob("out.restarted-*")
    assert (moved / "checkpoint.json").exists()


def test_dry_run_of_an_input_without_gene_ids_fails(tmp_path: Path) -> None:
    source = tmp_path / "ids.txt"
    source.write_text("ENSG00000141510\n")
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 1
    assert b"Ensembl IDs" in result.stderr and not (tmp_path / "out").exists()


def test_other_compressions_are_named_not_read_as_junk(emulator: EmulatorThread,
                                                       tmp_path: Path) -> None:
    source = tmp_path / "ids.txt.xz"
    source.write_bytes(b"\xfd7zXZ\x00\x00" + os.urandom(64))
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"),
                     env=cli_env(emulator.base_url))
    assert result.returncode == 1
    assert b"xz-compressed" in result.stderr and b"xz -dc" in result.stderr


def test_api_key_file_bom_and_newline_are_not_part_of_the_key(make_emulator: EmulatorFactory,
                                                              tmp_path: Path) -> None:
    emulator = make_emulator(valid_keys=frozenset({"k3y-0123456789"}))
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xef\xbb\xbf  k3y-0123456789 \r\n")
    source = tmp_path / "ids.txt"
    source.write_text("7157\n")
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--api-key-file",
                     str(key_file), env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    assert all(a.has_key and a.status == 200 for a in emulator.state.arrivals()
               if a.path.startswith("/datasets/v2/"))


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf\n  \n"])
def test_an_empty_api_key_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(content)
    result = invoke_cli("fetch", "ids.txt", "--out", str(tmp_path / "out"), "--api-key-file",
                     str(key_file))
    assert result.returncode == 2
    assert b"is empty" in result.stderr and b"API key" in result.stderr


def test_a_key_too_short_to_be_ncbis_is_a_usage_error_not_masked_into_the_data(
        tmp_path: Path) -> None:
    """Echoes of the key are masked in answers: a one-letter key would be masked inside them."""
    result = invoke_cli("fetch", "ids.txt", "--out", str(tmp_path / "out"),
                        env={**os.environ, "NCBI_API_KEY": "e"})
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert b"too short to be an NCBI key" in result.stderr and b"NCBI_API_KEY" in result.stderr


@pytest.mark.parametrize("inputs", [["missing.txt"], ["-", "-"]])
def test_an_unreadable_input_leaves_no_out_dir(emulator: EmulatorThread, tmp_path: Path,
                                               inputs: list[str]) -> None:
    out = tmp_path / "out"
    result = invoke_cli("fetch", *inputs, "--out", str(out), env=cli_env(emulator.base_url),
                     stdin=b"7157\n")
    assert result.returncode in (1, 2) and b"Traceback" not in result.stderr
    assert not out.exists()


def _workbook(path: Path) -> Path:
    """The start of what Excel saves: a zip whose first member is [Content_Types].xml."""
    import zipfile

    with zipfile.ZipFile(path, "w") as book:
        book.writestr("[Content_Types].xml", "<Types/>")
        book.writestr("xl/workbook.xml", "<workbook/>")
        book.writestr("xl/worksheets/sheet1.xml", "<c><v>7157</v></c>")
    return path


@pytest.mark.parametrize("name", ["genes.xlsx", "genes.dat"])
def test_an_excel_workbook_is_named_with_advice_that_works(tmp_path: Path, name: str) -> None:
    """`unzip -p` of a workbook gives XML, not GeneIDs."""
    source = _workbook(tmp_path / name)
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 1 and b"Traceback" not in result.stderr
    assert b"Excel workbook" in result.stderr and b"CSV" in result.stderr
    assert b"unzip" not in result.stderr


@pytest.mark.parametrize("header", ["symbol,entrez", "Symbol,Entrez_ID", "symbol\tentrezgene"])
def test_an_entrez_column_is_read_as_gene_ids(tmp_path: Path, header: str) -> None:
    separator = "," if "," in header else "\t"
    source = tmp_path / "genes.csv"
    source.write_text(f"{header}\nTP53{separator}7157\nBRCA1{separator}672\n")
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 0, result.stderr.decode()
    assert b"input: 2 unique GeneIDs" in result.stdout
    assert b"reading GeneIDs from column 2" in result.stderr


@pytest.mark.parametrize(("text", "column"), [
    ("TP53,7157\nBRCA1,672\nEGFR,1956\n", b"--column 2"),  # symbol first, no header
    ("9606\t7157\n9606\t672\n9606\t1956\n", b"--column 2"),  # tax_id first
    ("TP53\tx\t7157\nBRCA1\ty\t672\n", b"--column 3"),
])
def test_a_table_whose_gene_ids_are_in_another_column_points_to_it(
        tmp_path: Path, text: str, column: bytes) -> None:
    source = tmp_path / "table.txt"
    source.write_text(text)
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 1
    assert column in result.stderr, result.stderr.decode()
    assert b"tr " not in result.stderr  # one ID per line would put the tax IDs in the list
    assert b"gene symbols aren't GeneIDs" not in result.stderr


def test_a_line_of_several_gene_ids_still_gets_the_one_per_line_advice(tmp_path: Path) -> None:
    source = tmp_path / "lists.txt"
    source.write_text("7157,672,1956,3105,5728\n7158,673,1957\n")
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 1
    assert b"tr ',' '\\n'" in result.stderr


def test_rejected_lines_are_shown_escaped_once(tmp_path: Path) -> None:
    source = tmp_path / "symbols.txt"
    source.write_bytes(b"TP53\tBRCA1\nEGFR\x01\n")
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert b"'TP53\\tBRCA1'" in result.stderr and b"'EGFR\\x01'" in result.stderr
    assert b"\\\\" not in result.stderr
    dry = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert b"'TP53\\tBRCA1'" in dry.stderr + dry.stdout and b"\\\\" not in dry.stdout
