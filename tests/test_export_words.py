"""What export and open say: field names as people write them, what a Ctrl-C stopped, what a
path is, what a suffix or separator would do, which IDs have no row, and no stale leftovers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from helpers import cli_command, cli_env, invoke_cli, write_ids

import bulkgene
from bulkgene.ncbi.fields import FIELD_LIST
from bulkgene.testing import EmulatorThread

IDS = [*range(1, 1201), 7157, 672]


@pytest.fixture
def run(emulator: EmulatorThread, tmp_path: Path) -> Path:
    out = tmp_path / "genes"
    fetched = invoke_cli("fetch", str(write_ids(tmp_path / "ids.txt", IDS)), "--out", str(out),
                         "-q", env=cli_env(emulator.base_url))
    assert fetched.returncode == 0, fetched.stderr.decode()
    return out


def _header(path: Path) -> list[str]:
    return path.read_text().splitlines()[0].split("\t")


def test_fields_are_taken_as_people_write_them(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "t.tsv"
    done = invoke_cli("export", str(run), "--to", str(target), "--fields",
                      "NCBI GeneID,Symbol,tax_name,query")
    assert done.returncode == 0, done.stderr.decode()
    assert _header(target) == ["NCBI GeneID", "Symbol", "Taxonomic Name", "Query"]
    for fields, said in (("genomic-range-start",
                          b"unknown field 'genomic-range-start' (did you mean "
                          b"annotation-genomic-range-range-start?)"),
                         ("entrezgene", b"(did you mean gene-id?)"),
                         ("Symbol,symbol", b"field(s) symbol given twice"),
                         ("all,symbol", b"'all' stands for every field: give it alone")):
        refused = invoke_cli("export", str(run), "--to", str(target), "--fields", fields)
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
    plain = invoke_cli("export", "--list-fields", "--plain").stdout.decode()
    assert plain.splitlines() == ["query", *(f.mnemonic for f in FIELD_LIST)]
    for fields in (plain, "all"):  # the list piped back, and its short name
        assert invoke_cli("export", str(run), "--to", str(target), "--fields",
                          fields).returncode == 0
        assert _header(target) == ["Query", *(f.title for f in FIELD_LIST)]
    opened = bulkgene.open(run)
    assert list(opened.to_frame(fields="symbol").columns) == ["symbol"]
    assert list(opened.to_frame(fields="gene_id,Symbol").columns) == ["gene-id", "symbol"]
    with pytest.raises(bulkgene.ConfigError, match=r"explode='synonym' is not a field \(did "
                                                   r"you mean synonyms\?\)"):
        opened.to_frame(fields=["synonyms"], explode="synonym")


def test_ctrl_c_during_export_says_what_it_stopped(run: Path) -> None:
    # standard output that nobody reads: the export blocks on it, mid-table, for sure
    process = subprocess.Popen(cli_command("export", str(run), "--to", "-", "--fields", "all"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stdout.read(1)  # it is writing
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 75
    assert (f"bulkgene: SIGINT while exporting {run}; standard output got part of the "
            "table. Run the same command again.").encode() in stderr
    assert b"download" not in stderr


@pytest.mark.parametrize("shape", ["absent", "file"])
def test_a_path_that_holds_no_run_says_what_it_is(tmp_path: Path, shape: str) -> None:
    path = tmp_path / "genes"
    if shape == "file":
        path.write_text("7157\n")
    said = "does not exist" if shape == "absent" else "is a file"
    for command in (("export", str(path), "--to", str(tmp_path / "x.tsv")),
                    ("status", str(path)), ("verify", str(path))):
        result = invoke_cli(*command)
        assert result.returncode != 0
        assert said.encode() in result.stderr or (
            shape == "file" and b"is a file" in result.stderr), (command, result.stderr)
    with pytest.raises(bulkgene.StateError, match=f"{said}.*the fetch: out=") as raised:
        bulkgene.open(path)
    assert "--out" not in str(raised.value)


def test_suffixes_and_separators_that_would_mislead_are_refused(run: Path,
                                                                 tmp_path: Path) -> None:
    for name, said in (("t.txt", b"a .txt file could hold any text: name it .tsv"),
                       ("t.json", b"name it .jsonl (pandas.read_json(path, lines=True)")):
        refused = invoke_cli("export", str(run), "--to", str(tmp_path / name))
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert not (tmp_path / name).exists()
    assert invoke_cli("export", str(run), "--to", str(tmp_path / "t.txt"), "--format",
                      "tsv").returncode == 0
    glued = invoke_cli("export", str(run), "--to", str(tmp_path / "s.tsv"),
                       "--list-separator", "")
    assert glued.returncode == 2 and b"would glue a list's values together" in glued.stderr


def test_the_end_line_says_how_many_ids_have_no_row(run: Path, tmp_path: Path) -> None:
    missing = len((run / "missing.tsv").read_text().splitlines()) - 1
    assert missing > 0
    said = invoke_cli("export", str(run), "--to", str(tmp_path / "t.tsv")).stderr.decode()
    assert (f"{missing} requested GeneIDs have no record, so no row (missing.tsv says why); "
            "--with-missing adds a row for each") in said
    with_missing = invoke_cli("export", str(run), "--to", str(tmp_path / "t.tsv"),
                              "--with-missing").stderr.decode()
    assert f"+ {missing} missing" in with_missing and "have no record" not in with_missing


def test_what_a_killed_export_left_is_removed_by_the_next(run: Path, tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(gone.stdout)  # a process that has ended: its pid is free
    host = socket.gethostname().split(".")[0]
    stale = [tmp_path / f".t.tsv.{dead}.tmp", tmp_path / f".t.tsv.{host}.{dead}.tmp"]
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    kept = [tmp_path / f".t.tsv.{host}.{live.pid}.tmp",  # a live export's
            tmp_path / f".t.tsv.elsewhere.{dead}.tmp",  # another host's: can't be judged
            tmp_path / f".other.tsv.{dead}.tmp"]  # another target's
    for path in [*stale, *kept]:
        path.write_text("half a table\n")
    try:
        assert invoke_cli("export", str(run), "--to", str(tmp_path / "t.tsv")).returncode == 0
    finally:
        live.communicate(b"", timeout=60)
    assert [path.exists() for path in stale] == [False, False]
    assert [path.name for path in kept if not path.exists()] == []


def test_the_demos_commands_lead_with_export_and_work_as_printed(run: Path,
                                                                 tmp_path: Path) -> None:
    from bulkgene.cli.demo import how_to_look

    lines = [line.strip() for line in how_to_look(run).splitlines()[1:]]
    assert lines[0].startswith(f"bulkgene export {run} --to genes.tsv")
    assert "bulkgene.open(" in lines[1]
    assert not any("read_json(f, lines=True" in line for line in lines)  # no whole-JSON pandas
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in lines:
        needs = line.split()[0] if not line.startswith("find") else "jq"
        if shutil.which(needs, path=env["PATH"]) is None:
            continue  # a tool this machine lacks (jq, column)
        done = subprocess.run(["bash", "-c", f"set -o pipefail; {line.split('   #')[0]}"],
                              cwd=tmp_path, env=env, capture_output=True, timeout=120,
                              check=False)
        assert done.returncode in (0, 141), (line, done.stderr)  # 141: head closed the pipe
        assert done.stdout or (tmp_path / "genes.tsv").exists(), line
    assert (tmp_path / "genes.tsv").read_text().startswith("Query\tNCBI GeneID\tSymbol")


def test_a_missing_ids_gene_fields_are_null_and_a_genes_empty_list_is_empty(
        run: Path, tmp_path: Path) -> None:
    """No record: nothing is known (null); a record without synonyms says it has none ([])."""
    target = tmp_path / "t.jsonl"
    assert invoke_cli("export", str(run), "--to", str(target), "--fields",
                      "query,gene-id,synonyms,omim-ids,annotation-genomic-range-range-start",
                      "--with-missing").returncode == 0
    rows = [orjson.loads(line) for line in target.read_bytes().splitlines()]
    missing = [row for row in rows if row["missing_reason"]]
    assert missing and all(row["gene-id"] is None and row["synonyms"] is None
                           and row["annotation-genomic-range-range-start"] is None
                           for row in missing)
    assert any(row["omim-ids"] == [] for row in rows if not row["missing_reason"])
    frame = bulkgene.open(run).to_frame(fields=["gene-id", "synonyms"], with_missing=True)
    assert frame.loc[frame["missing_reason"].notna(), "synonyms"].isna().all()
