"""Tables as exports write them: row names first, a comment before the header, other numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import invoke_cli


def _dry(tmp_path: Path, name: str, text: str, *extra: str) -> tuple[int, bytes]:
    source = tmp_path / name
    source.write_text(text)
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run", *extra)
    assert b"Traceback" not in result.stderr
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("text", [
    '"","symbol"\n"1","TP53"\n"2","BRCA1"\n"3","EGFR"\n',  # R's write.csv
    ",symbol\n0,TP53\n1,BRCA1\n2,EGFR\n",  # pandas' to_csv
    '""\t"symbol"\n"1"\t"TP53"\n"2"\t"BRCA1"\n',  # R's write.table(sep="\t")
], ids=["R", "pandas", "R-tab"])
def test_row_numbers_of_r_or_pandas_are_not_fetched_as_gene_ids(tmp_path: Path,
                                                                  text: str) -> None:
    code, said = _dry(tmp_path, "symbols.csv", text)
    assert code == 1, said.decode()
    assert b"row numbers" in said and b"--column" in said
    assert b"gene symbols aren't GeneIDs" in said
    assert b"unique GeneIDs" not in said


def test_row_numbers_point_to_the_gene_id_column_when_a_name_says_so(tmp_path: Path) -> None:
    code, said = _dry(tmp_path, "t.csv", '"","symbol","entrez_id"\n"1","TP53","7157"\n'
                      '"2","BRCA1","672"\n', "--column", "1")
    assert code == 1 and b"row numbers" in said and b"pass --column 3" in said


@pytest.mark.parametrize("text", [
    '"","GeneID"\n"1","7157"\n"2","672"\n',  # the header names the GeneID column: read it
    '"","x"\n"5","a"\n"9","b"\n',  # not 1, 2, 3...: not row numbers
    "7157\n672\n",
])
def test_a_first_column_that_is_not_row_numbers_is_read(tmp_path: Path, text: str) -> None:
    code, said = _dry(tmp_path, "t.csv", text)
    assert code == 0, said.decode()
    assert b"row numbers" not in said


@pytest.mark.parametrize("text", [
    "# exported by tool X\nSymbol\tGeneID\nTP53\t7157\nBRCA1\t672\n",
    "# exported by tool X\n# on 2026-01-01\n\nsymbol,entrez\nTP53,7157\nBRCA1,672\n",
])
def test_a_header_after_leading_comments_is_recognised(tmp_path: Path, text: str) -> None:
    code, said = _dry(tmp_path, "t.tsv", text)
    assert code == 0, said.decode()
    assert b"input: 2 unique GeneIDs, 0 duplicates, 0 rejected lines" in said
    assert b"reading GeneIDs from column 2" in said


def test_column_by_name_after_leading_comments(tmp_path: Path) -> None:
    code, said = _dry(tmp_path, "t.tsv", "# tool X\nSymbol\tID\nTP53\t7157\n", "--column", "ID")
    assert code == 0 and b"input: 1 unique GeneIDs" in said, said.decode()


GENE2REFSEQ = ("#tax_id\tGeneID\tstatus\tRNA_nucleotide_accession.version\tRNA_nucleotide_gi\t"
               "protein_accession.version\tprotein_gi\tgenomic_nucleotide_accession.version\t"
               "genomic_nucleotide_gi\tstart_position_on_the_genomic_accession\t"
               "end_position_on_the_genomic_accession\n"
               "9606\t1\tREVIEWED\tNM_1.1\t123456\tNP_1.1\t2345\tNC_1\t3456\t58345178\t58353492\n"
               "9606\t2\tREVIEWED\tNM_2.1\t123457\tNP_2.1\t2346\tNC_1\t3456\t9067708\t9116229\n")
GENE_HISTORY = ("#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\tDiscontinue_Date\n"
                "9606\t-\t100008586\tGAGE12E\t20081216\n9606\t-\t100008587\tGAGE12F\t20081216\n")
GENE_ORTHOLOGS = ("#tax_id\tGeneID\trelationship\tOther_tax_id\tOther_GeneID\n"
                  "9606\t1\tOrtholog\t10090\t117586\n9606\t2\tOrtholog\t10090\t232345\n")
BIOMART = ("Gene stable ID,Gene start (bp),Gene end (bp),NCBI gene (formerly Entrezgene) ID\n"
           "ENSG00000141510,7661779,7687538,7157\nENSG00000012048,43044295,43125483,672\n")


@pytest.mark.parametrize(("text", "column", "meaning"), [
    (GENE2REFSEQ, "10", b"genome coordinates"),
    (GENE2REFSEQ, "11", b"genome coordinates"),
    (GENE2REFSEQ, "5", b"gi numbers"),
    (GENE2REFSEQ, "7", b"gi numbers"),
    (GENE_HISTORY, "5", b"dates"),
    (GENE_ORTHOLOGS, "4", b"taxonomy IDs"),
    (GENE_ORTHOLOGS, "1", b"taxonomy IDs"),
    (BIOMART, "2", b"genome coordinates"),
])
def test_a_numbered_column_whose_name_says_it_is_not_gene_ids_is_refused(
        tmp_path: Path, text: str, column: str, meaning: bytes) -> None:
    code, said = _dry(tmp_path, "t.tsv", text, "--column", column)
    assert code == 1, said.decode()
    assert meaning in said and b"choose it by its name" in said


@pytest.mark.parametrize(("text", "column", "ids"), [
    (GENE2REFSEQ, "2", 2),
    (GENE_ORTHOLOGS, "5", 2),  # Other_GeneID: GeneIDs of other genes, still GeneIDs
    (GENE_HISTORY, "3", 2),  # Discontinued_GeneID
    (BIOMART, "4", 2),
])
def test_gene_id_columns_by_number_are_still_read(tmp_path: Path, text: str, column: str,
                                                  ids: int) -> None:
    code, said = _dry(tmp_path, "t.tsv", text, "--column", column)
    assert code == 0, said.decode()
    assert f"input: {ids} unique GeneIDs".encode() in said


def test_gene_history_advice_never_suggests_its_date_column(tmp_path: Path) -> None:
    code, said = _dry(tmp_path, "gene_history", GENE_HISTORY)
    assert code == 1
    assert b"--column 3 (Discontinued_GeneID)" in said, said.decode()
    assert b"--column 5" not in said


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_text_from_excel_or_powershell_is_read(tmp_path: Path, encoding: str) -> None:
    """Excel's "Unicode Text" and PowerShell's `>` write UTF-16: it looked binary."""
    source = tmp_path / "ids.txt"
    source.write_bytes("Symbol\tGeneID\r\nTP53\t7157\r\nBRCA1\t672\r\n".encode(encoding))
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 0, result.stderr.decode()
    assert b"input: 2 unique GeneIDs, 0 duplicates, 0 rejected lines" in result.stdout
    assert b"binary" not in result.stderr


def test_utf16_symbols_get_the_advice_for_symbols_not_binary(tmp_path: Path) -> None:
    source = tmp_path / "symbols.txt"
    source.write_bytes("TP53\r\nBRCA1\r\nEGFR\r\n".encode("utf-16"))
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 1
    assert b"gene symbols aren't GeneIDs" in result.stderr and b"binary" not in result.stderr
    assert b"'TP53'" in result.stderr
