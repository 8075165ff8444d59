"""Which column holds the GeneID: --column N|NAME, a header naming GeneID, the tax_id warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import cli_env, gene_ids_written, invoke_cli

from bulkgene.errors import InputError
from bulkgene.input.lines import Reject, parse_column, read_ids
from bulkgene.testing import EmulatorThread

GENE_INFO_HEADER = ("#tax_id\tGeneID\tSymbol\tLocusTag\tSynonyms\tdbXrefs\tchromosome\t"
                    "map_location\tdescription\ttype_of_gene\n")
ROWS = [(9606, 7157, "TP53", "17"), (9606, 672, "BRCA1", "17"), (9606, 3105, "HLA-A", "6")]


def _gene_info(path: Path, header: bool = True, repeat: int = 1) -> Path:
    lines = [GENE_INFO_HEADER] if header else []
    for _ in range(repeat):
        lines += [f"{tax}\t{gene}\t{symbol}\t-\t-\tMIM:1\t{chromosome}\t17p13.1\tprotein\t"
                  "protein-coding\n" for tax, gene, symbol, chromosome in ROWS]
    path.write_text("".join(lines))
    return path


def test_ncbi_gene_info_header_picks_the_gene_id_column(emulator: EmulatorThread,
                                                        tmp_path: Path) -> None:
    source = _gene_info(tmp_path / "gene_info")
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    assert set(gene_ids_written(out)) == {7157, 672, 3105}
    assert result.stderr.count(b"reading GeneIDs from column 2 (GeneID)") == 1


@pytest.mark.parametrize("column", ["2", "GeneID", "geneid"])
def test_column_option_by_number_or_header_name(emulator: EmulatorThread, tmp_path: Path,
                                                column: str) -> None:
    source = _gene_info(tmp_path / "gene_info")
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--column", column,
                     env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    assert set(gene_ids_written(out)) == {7157, 672, 3105}


def test_column_number_without_a_header(tmp_path: Path) -> None:
    source = _gene_info(tmp_path / "rows.tsv", header=False)
    assert list(read_ids((str(source),), column=parse_column("2"))) == [7157, 672, 3105]


def test_a_column_name_the_header_lacks_is_an_error(tmp_path: Path) -> None:
    source = _gene_info(tmp_path / "gene_info")
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--column",
                     "Entrez", "--dry-run")
    assert result.returncode == 1
    assert b"--column 'Entrez'" in result.stderr and b"GeneID" in result.stderr


@pytest.mark.parametrize("column", ["0", "", "-1"])
def test_a_column_that_is_no_column_is_a_usage_error(tmp_path: Path, column: str) -> None:
    result = invoke_cli("fetch", "ids.txt", "--out", str(tmp_path / "out"), "--column", column)
    assert result.returncode == 2
    assert b"counted from 1" in result.stderr


def test_empty_cells_keep_their_place(tmp_path: Path) -> None:
    source = tmp_path / "ids.tsv"
    source.write_bytes(b"\t7157\tTP53\n9606\t\t672\n,3105,x\n")
    third = list(read_ids((str(source),), column=parse_column("3")))
    assert third[1] == 672 and [r.line_number for r in third if isinstance(r, Reject)] == [1, 3]
    items = list(read_ids((str(source),), column=parse_column("2")))
    assert items[0] == 7157 and items[2] == 3105
    assert isinstance(items[1], Reject) and items[1].reason == "NOT_A_GENE_ID"


def test_short_lines_are_rejected_not_skipped(tmp_path: Path) -> None:
    source = tmp_path / "ids.tsv"
    source.write_text("9606\t7157\n672\n")
    items = list(read_ids((str(source),), column=parse_column("2")))
    assert items[0] == 7157
    assert isinstance(items[1], Reject) and items[1].reason == "MISSING_COLUMN"
    with pytest.raises(InputError, match="fewer fields"):
        list(read_ids((str(source),), column=parse_column("3")))


def test_one_repeated_value_warns_that_the_column_looks_like_tax_id(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "rows.tsv"  # what `cut -f1,3 gene_info` gives
    source.write_text("".join(f"9606\tSYMBOL{gene}\n" for gene in range(1, 40)))
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        assert set(read_ids((str(source),))) == {9606}
    (warning,) = caplog.records
    assert "column 1 looks like tax_id" in warning.getMessage()
    assert "9606 makes up 100%" in warning.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        source.write_text("".join(f"9606\t{gene}\n" for gene in range(1, 40)))
        assert len(set(read_ids((str(source),), column=parse_column("2")))) == 39
    assert not caplog.records


def test_tax_id_warning_holds_beyond_the_sample(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "big.txt"  # the commonest value of the first 10 000 IDs, counted on
    source.write_text("".join(f"{i}\n" for i in range(1, 4001)) + "9606\n" * 30_000)
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        for _ in read_ids((str(source),)):
            pass
    assert any("9606 makes up 88%" in r.getMessage() for r in caplog.records)


def test_tax_id_warning_reaches_the_cli(tmp_path: Path) -> None:
    source = _gene_info(tmp_path / "rows.tsv", header=False, repeat=5)
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--column", "1",
                     "--dry-run")
    assert result.returncode == 0
    assert b"input: 1 unique GeneIDs, 14 duplicates" in result.stdout
    assert b"column 1 looks like tax_id" in result.stderr and b"--column" in result.stderr


def test_gene_info_without_its_header_is_an_error_pointing_to_column(tmp_path: Path) -> None:
    source = _gene_info(tmp_path / "rows.tsv", header=False, repeat=5)
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 1
    assert b"SEVERAL_IDS" in result.stderr and b"--column 2" in result.stderr
    assert b"tr " not in result.stderr  # one-ID-per-line advice would fetch the tax IDs


def test_a_changed_column_is_refused_like_a_changed_input(emulator: EmulatorThread,
                                                          tmp_path: Path) -> None:
    source = _gene_info(tmp_path / "gene_info")
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    assert invoke_cli("fetch", str(source), "--out", str(out), env=env).returncode == 0
    refused = invoke_cli("fetch", str(source), "--out", str(out), "--column", "3", env=env)
    assert refused.returncode == 1
    assert b"column: was not given, now '3'" in refused.stderr
    assert b"None" not in refused.stderr and b"--restart" in refused.stderr
    again = invoke_cli("fetch", str(source), "--out", str(out), env=env)
    assert again.returncode == 0


def test_a_killed_first_run_does_not_reuse_the_plan_of_another_column(tmp_path: Path) -> None:
    from bulkgene.input import plan as idplan

    source = _gene_info(tmp_path / "rows.tsv", header=False)
    plan = idplan.build(tmp_path, (str(source),), ("rows",), ["d", "column=2"], lambda r: None,
                        parse_column("2"))
    assert plan.counts.requested == 3
    assert idplan.load(tmp_path, ["d"]) is None


@pytest.mark.parametrize("header", ["tax_id,symbol", "#tax_id\tsymbol", "TaxID Symbol"])
def test_a_first_column_named_tax_id_is_refused_however_short_the_table(
        tmp_path: Path, header: str) -> None:
    """Four lines are below the repeat warning's sample: 9606 was fetched as a gene, exit 0."""
    source = tmp_path / "taxsym.csv"
    separator = "," if "," in header else "\t" if "\t" in header else " "
    source.write_text(f"{header}\n" + "".join(f"{tax}{separator}{symbol}\n" for tax, symbol in
                                             [(9606, "TP53"), (9606, "EGFR"), (10090, "Trp53")]))
    with pytest.raises(InputError, match=r"taxonomy IDs.*--column"):
        list(read_ids((str(source),)))
    with pytest.raises(InputError, match=r"--column 1 is the column"):
        list(read_ids((str(source),), column=parse_column("1")))
    named = header.split(separator, maxsplit=1)[0].lstrip("#")
    chosen = list(read_ids((str(source),), column=parse_column(named)))  # by name: their call
    assert 9606 in chosen


@pytest.mark.parametrize("header", ["#tax_id\tGeneID\tSymbol", "tax_id,GeneID,Symbol",
                                    "PubMed_ID\tGeneID\tSymbol"])
def test_a_column_chosen_by_number_that_the_header_names_tax_id_is_refused(
        tmp_path: Path, header: str) -> None:
    """--column 1 on gene_info (a 0-based habit) fetched the 9 tax IDs as genes, 'done'."""
    separator = "," if "," in header else "\t"
    source = tmp_path / "gene_info"
    source.write_text(header + "\n" + "".join(
        separator.join((str(tax), str(gene), "S")) + "\n"
        for tax, gene in [(9606, 7157), (10090, 22059), (7955, 30590)]))
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--column", "1",
                        "--dry-run")
    assert result.returncode == 1 and b"Traceback" not in result.stderr
    assert b"--column 2" in result.stderr  # where the GeneIDs are
    first = header.split(separator, maxsplit=1)[0].lstrip("#")
    assert f"--column {first}".encode() in result.stderr  # how to insist: by name
    assert not (tmp_path / "out").exists()
    insisted = list(read_ids((str(source),), column=parse_column(first)))
    assert 9606 in insisted  # chosen by name: the user's call


def test_a_column_of_a_few_values_warns_even_when_none_is_half(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Mixed taxa: nine tax IDs, none of them more than half of the column."""
    taxa = [9606, 10090, 10116, 7955, 7227, 6239, 3702, 559292, 511145]
    source = tmp_path / "taxa.txt"  # what `cut -f1` of a nine-species gene_info gives
    source.write_text("".join(f"{taxa[i % len(taxa)]}\n" for i in range(200)))
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        assert set(read_ids((str(source),))) == set(taxa)
    (warning,) = caplog.records
    assert "9 distinct values" in warning.getMessage() and "--column" in warning.getMessage()


def test_a_list_of_distinct_gene_ids_and_a_repeating_table_column_raise_no_alarm(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{gene}\n" for gene in range(1, 200)) * 2)  # two lists joined
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        for _ in read_ids((str(source),)):
            pass
    assert not caplog.records
