"""bulkgene export: exact rows from the shards, NCBI's fields byte for byte, types, arrays as one."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from helpers import (
    EmulatorFactory,
    cli_env,
    gene_ids_written,
    invoke_cli,
    read_records,
    read_tsv,
    write_ids,
)

from bulkgene.ncbi.fields import FIELD_LIST
from bulkgene.testing import EmulatorThread, GeneUniverse

# 1..2400 holds found, unknown, discontinued and replaced IDs of the emulator's universe;
# the three real NCBI records bring GO terms, OMIM IDs and two annotations
IDS = [*range(1, 2401), 7157, 672, 3105]


def _fetch(emulator: EmulatorThread, tmp_path: Path, ids: list[int], name: str,
           *options: str) -> Path:
    out = tmp_path / name
    result = invoke_cli("fetch", str(write_ids(tmp_path / f"{name}.txt", ids)), "--out",
                        str(out), "-q", *options, env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    return out


def _export(*args: str) -> str:
    result = invoke_cli("export", *args)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    return result.stderr.decode()


def _gene(record: dict[str, Any]) -> dict[str, Any]:
    gene = record.get("gene", record)
    assert isinstance(gene, dict)
    return gene


@pytest.mark.parametrize("compress", ["none", "gzip"])
def test_export_has_one_row_per_record_of_every_shard(emulator: EmulatorThread, tmp_path: Path,
                                                      compress: str) -> None:
    out = _fetch(emulator, tmp_path, IDS, "genes", "--compress", compress, "--batch-size", "500")
    records = read_records(out)
    missing = read_tsv(out / "missing.tsv")
    table = tmp_path / "genes.tsv"
    said = _export(str(out), "--to", str(table), "--with-missing")
    lines = table.read_text().splitlines()
    header, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
    assert header[:3] == ["Query", "NCBI GeneID", "Symbol"]
    assert header[-1] == "missing_reason"
    from_records = [row for row in rows if row[1]]
    assert len(from_records) == len(records)
    assert sorted(int(row[1]) for row in from_records) == sorted(gene_ids_written(out))
    assert sorted((int(row[0]), row[-1]) for row in rows if not row[1]) == sorted(
        (int(gene_id), reason) for gene_id, reason in missing)
    assert f"wrote {len(records) + len(missing)} rows" in said
    symbols = {int(_gene(r)["gene_id"]): _gene(r).get("symbol", "") for r in records}
    assert all(row[2] == symbols[int(row[1])] for row in from_records)


def test_every_mnemonic_matches_the_servers_own_tsv_byte_for_byte(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    """The same genes fetched as JSON and exported, and fetched as NCBI's server-side TSV
    (the emulator's, from the same field table) give the same header and the same rows."""
    ids = [*range(1, 900), 7157, 672, 3105]  # one batch: one request each way
    mnemonics = [field.mnemonic for field in FIELD_LIST]
    json_run = _fetch(emulator, tmp_path, ids, "json", "--shards", "1")
    table_options = [option for name in mnemonics for option in ("--table-field", name)]
    tsv_run = _fetch(emulator, tmp_path, ids, "tsv", "--shards", "1", "--format", "tsv",
                     *table_options)
    exported = tmp_path / "exported.tsv"
    _export(str(json_run), "--to", str(exported), "--fields", ",".join(mnemonics),
            "--list-separator", ",")
    server = (tsv_run / "shard-0000.tsv").read_bytes().split(b"\n")
    ours = exported.read_bytes().split(b"\n")
    assert ours[0] == server[0]  # NCBI's titles, in the order asked
    assert sorted(ours[1:]) == sorted(server[1:])
    assert len(ours) > 800
    tp53 = next(line for line in ours if line.startswith(b"7157\t")).split(b"\t")
    go_names = mnemonics.index("go-mf-name")
    assert tp53[go_names]  # the real record's GO terms came through


def test_parquet_keeps_types_and_lists(emulator: EmulatorThread, tmp_path: Path) -> None:
    out = _fetch(emulator, tmp_path, IDS, "genes")
    target = tmp_path / "genes.parquet"
    _export(str(out), "--to", str(target), "--fields",
            "query,gene-id,tax-id,transcript-count,synonyms,annotation-genomic-range-range-start")
    table = pq.read_table(target)
    types = {field.name: str(field.type) for field in table.schema}
    assert types["gene-id"] == "int64"
    assert types["tax-id"] == "int64"
    assert types["transcript-count"] == "int64"
    assert types["query"] == "list<element: int64>"
    assert types["synonyms"] == "list<element: string>"
    assert types["annotation-genomic-range-range-start"] == "list<element: int64>"
    rows = {row["gene-id"]: row for row in table.to_pylist()}
    genes = {int(_gene(r)["gene_id"]): _gene(r) for r in read_records(out)}
    assert rows.keys() == genes.keys()
    for gene_id, gene in genes.items():
        assert rows[gene_id]["synonyms"] == gene.get("synonyms", [])
        assert rows[gene_id]["transcript-count"] == gene.get("transcript_count")


def test_query_maps_every_row_back_to_the_ids_asked_for(make_emulator: EmulatorFactory,
                                                        tmp_path: Path) -> None:
    # 11 and 12 were merged into one gene; 13's gene was asked for itself too
    universe = GeneUniverse(replaced={11: 1_000_000_001, 12: 1_000_000_001, 13: 1_000_000_002})
    emulator = make_emulator(universe)
    out = _fetch(emulator, tmp_path, [11, 7157, 12, 13, 1_000_000_002], "genes",
                 "--batch-size", "2")
    whole = tmp_path / "whole.jsonl"
    _export(str(out), "--to", str(whole), "--fields", "query,gene-id")
    rows = {row["gene-id"]: row["query"] for row in map(orjson.loads, whole.read_bytes().splitlines())}
    assert rows == {1_000_000_001: [11, 12], 1_000_000_002: [13, 1_000_000_002], 7157: [7157]}
    exploded = tmp_path / "exploded.tsv"
    _export(str(out), "--to", str(exploded), "--fields", "query,gene-id", "--explode", "query")
    pairs = sorted(tuple(map(int, line.split("\t"))) for line in exploded.read_text().splitlines()[1:])
    assert pairs == [(11, 1_000_000_001), (12, 1_000_000_001), (13, 1_000_000_002),
                     (7157, 7157), (1_000_000_002, 1_000_000_002)]


def test_explode_keeps_the_values_of_one_item_together(emulator: EmulatorThread,
                                                       tmp_path: Path) -> None:
    out = _fetch(emulator, tmp_path, [672, 7157], "genes")
    target = tmp_path / "ranges.jsonl"
    fields = ("gene-id,annotation-assembly-accession,annotation-genomic-range-accession,"
              "annotation-genomic-range-range-start,synonyms")
    _export(str(out), "--to", str(target), "--fields", fields, "--explode",
            "annotation-genomic-range-range-start")
    rows = [orjson.loads(line) for line in target.read_bytes().splitlines()]
    genes = {int(_gene(r)["gene_id"]): _gene(r) for r in read_records(out)}
    expected = []
    for gene_id, gene in genes.items():
        for annotation in gene.get("annotations", []):
            for location in annotation.get("genomic_locations", []):
                expected.append((gene_id, annotation["assembly_accession"],
                                 location["genomic_accession_version"],
                                 int(location["genomic_range"]["begin"]),
                                 gene.get("synonyms", [])))
    got = [(row["gene-id"], row["annotation-assembly-accession"],
            row["annotation-genomic-range-accession"],
            row["annotation-genomic-range-range-start"], row["synonyms"]) for row in rows]
    assert sorted(got) == sorted(expected)
    by_synonym = tmp_path / "synonyms.tsv"
    _export(str(out), "--to", str(by_synonym), "--fields", "gene-id,synonyms,symbol",
            "--explode", "synonyms")
    pairs = [line.split("\t") for line in by_synonym.read_text().splitlines()[1:]]
    assert sorted(pairs) == sorted([str(gene_id), synonym, str(gene["symbol"])]
                                   for gene_id, gene in genes.items()
                                   for synonym in gene.get("synonyms", []))
    assert len(pairs) > len(genes)


def test_missing_rows_carry_every_column_of_missing_tsv(emulator: EmulatorThread,
                                                        tmp_path: Path) -> None:
    out = _fetch(emulator, tmp_path, IDS, "genes")
    # explain (gene_history) adds columns to missing.tsv, committed; export passes them on
    lines = (out / "missing.tsv").read_text().splitlines()
    history = tmp_path / "history.txt"
    history.write_text("#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\t"
                       "Discontinue_Date\n" + "".join(f"9606\t-\t{line.split()[0]}\tOLD\t"
                                                      "20050508\n" for line in lines[1:]))
    explained = invoke_cli("explain", str(out), "--history", str(history))
    assert explained.returncode == 0, explained.stderr.decode()
    target = tmp_path / "with-missing.csv"
    _export(str(out), "--to", str(target), "--fields", "query,gene-id", "--with-missing")
    table = target.read_text().splitlines()
    assert table[0] == ("Query,NCBI GeneID,missing_reason,missing_history,"
                        "missing_current_gene_id,missing_discontinued_on,missing_symbol,"
                        "missing_tax_id")
    missing_rows = [line for line in table[1:] if line.split(",")[1] == ""]
    assert len(missing_rows) == len(lines) - 1
    assert all(line.endswith(",NOT_RETURNED,DISCONTINUED,,2005-05-08,OLD,9606")
               for line in missing_rows)


def test_a_parquet_export_without_pyarrow_names_the_extra(emulator: EmulatorThread,
                                                          tmp_path: Path) -> None:
    out = _fetch(emulator, tmp_path, IDS[:50], "genes")
    target = tmp_path / "genes.parquet"
    blocked = f"""
import sys
class NoPyarrow:
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("No module named " + repr(name))
sys.meta_path.insert(0, NoPyarrow())
sys.argv = ["bulkgene", "export", {str(out)!r}, "--to", {str(target)!r}]
from bulkgene.cli import main
main()
"""
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, timeout=120,
                            check=False)
    assert result.returncode == 1
    assert b"pip install 'bulkgene[parquet]'" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if "parquet" in p.name) == []


def test_a_failed_export_leaves_the_old_table_whole(emulator: EmulatorThread,
                                                    tmp_path: Path) -> None:
    out = _fetch(emulator, tmp_path, IDS, "genes")
    target = tmp_path / "genes.tsv"
    _export(str(out), "--to", str(target))
    before = target.read_bytes()
    shard = sorted(out.glob("shard-*.ndjson"))[-1]
    shard.write_bytes(shard.read_bytes()[:100])  # data lost outside bulkgene
    result = invoke_cli("export", str(out), "--to", str(target))
    assert result.returncode == 1
    assert b"shorter than" in result.stderr
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_an_incomplete_run_is_exported_only_when_asked(make_emulator: EmulatorFactory,
                                                       tmp_path: Path) -> None:
    emulator = make_emulator(faults={"http_503": 1.0})  # every batch fails: exit 3
    out = tmp_path / "genes"
    failed = invoke_cli("fetch", str(write_ids(tmp_path / "ids.txt", IDS)), "--out", str(out),
                        "-q", "--max-attempts", "1", env=cli_env(emulator.base_url))
    assert failed.returncode == 3
    refused = invoke_cli("export", str(out), "--to", str(tmp_path / "x.tsv"))
    assert refused.returncode == 1
    assert b"--partial" in refused.stderr and b"not complete" in refused.stderr
    assert not (tmp_path / "x.tsv").exists()
    _export(str(out), "--to", str(tmp_path / "x.tsv"), "--partial")
    assert (tmp_path / "x.tsv").read_text().count("\n") == 1  # the header: nothing committed


def test_an_array_reads_as_one_run(emulator: EmulatorThread, tmp_path: Path) -> None:
    listed = [*IDS, 5, 6, 7]  # 672 and these three twice
    ids_file = write_ids(tmp_path / "ids.txt", listed)
    out = tmp_path / "genes"
    ends = []
    for index in range(3):
        result = invoke_cli("fetch", str(ids_file), "--out", str(out), "--task-index",
                            str(index), "--task-count", "3", "--batch-size", "500",
                            "--compress", "gzip" if index == 1 else "none",
                            env=cli_env(emulator.base_url))
        assert result.returncode == 0, result.stderr.decode()
        ends.append(result.stderr.decode())
    # each task's end line leaves the list's counts to the array's one merged line
    assert all("duplicates" not in line for end in ends for line in end.splitlines()
               if f"task {ends.index(end)} of 3: requested" in line)
    assert "array of 3 tasks" not in ends[0] + ends[1]
    assert "array of 3 tasks" in ends[2] and "4 duplicates" in ends[2]
    summary = orjson.loads((out / "summary.json").read_bytes())
    tasks = [orjson.loads((out / f"task-000{i}" / "summary.json").read_bytes())
             for i in range(3)]
    assert summary["duplicates"] == len(listed) - len(set(listed)) == 4
    assert summary["found"] == sum(task["found"] for task in tasks)
    assert summary["requested"] == len(set(listed)) and summary["complete"]
    merged_missing = (out / "missing.tsv").read_text().splitlines()
    assert merged_missing[0] == "gene_id\treason"
    task_rows = [line for i in range(3)
                 for line in (out / f"task-000{i}" / "missing.tsv").read_text().splitlines()[1:]]
    assert sorted(merged_missing[1:]) == sorted(task_rows)
    assert sum(1 for line in merged_missing if line.startswith("gene_id")) == 1
    target = tmp_path / "all.tsv.gz"
    _export(str(out), "--to", str(target))
    rows = gzip.decompress(target.read_bytes()).decode().splitlines()[1:]
    written = sum(len(read_records(out / f"task-000{i}")) for i in range(3))
    assert len(rows) == written == summary["records"]
    import bulkgene

    run = bulkgene.open(out)
    assert len(run.missing()) == len(task_rows)
    assert run.summary["found"] == summary["found"]
    # merged files lost (or out of date): verify writes them again
    (out / "missing.tsv").unlink()
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0, verified.stderr.decode()
    assert b"merged into" in verified.stdout
    assert (out / "missing.tsv").read_text().splitlines() == merged_missing
    again = invoke_cli("verify", str(out))
    assert b"merged into" not in again.stdout  # current: left alone


def test_list_fields_names_every_mnemonic() -> None:
    result = invoke_cli("export", "--list-fields")
    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.decode().splitlines()[1:] if line.strip()}
    assert {field.mnemonic for field in FIELD_LIST} | {"query"} <= listed


def test_unknown_fields_and_formats_are_usage_errors(emulator: EmulatorThread,
                                                     tmp_path: Path) -> None:
    out = _fetch(emulator, tmp_path, IDS[:20], "genes")
    for args, said in ((("--fields", "gene-id,nope"), b"unknown field 'nope'"),
                       (("--explode", "symbol", "--fields", "symbol"), b"only list fields"),
                       (("--format", "xlsx"), b"xlsx")):
        result = invoke_cli("export", str(out), "--to", str(tmp_path / "x.tsv"), *args)
        assert result.returncode == 2
        assert said in result.stderr
    result = invoke_cli("export", str(out), "--to", str(tmp_path / "x.xlsx"))
    assert result.returncode == 2 and b"can't tell the format" in result.stderr
