"""Every command in the README's fenced blocks is run as written here, or named where it is checked.

The README's commands target real NCBI; here they reach the emulator through the variable the
product honours (``BULKGENE_BASE_URL``) and, for the library example, which has no such variable,
through an HTTPS proxy that tunnels ``api.ncbi.nlm.nih.gov`` to an emulator holding a
certificate for that name from a throwaway CA (``HTTPS_PROXY``, ``SSL_CERT_FILE``). The command
text is never edited. ``REGISTRY`` says for each command how it is checked; a command the README
gains without an entry there fails ``test_every_readme_command_is_registered``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from helpers import REPO, EmulatorFactory, read_summary, write_ids

from bulkgene.testing import EmulatorConfig, EmulatorThread

README = (REPO / "README.md").read_text()
COMMAND_LANGUAGES = ("sh", "bash", "console", "python")
OUTPUT_LANGUAGES = ("json",)  # samples of what is written, not commands
MARK = "@@readme-command"


@dataclass(frozen=True)
class Command:
    """One command of a fenced README block, as written."""

    section: str  # the heading the block is under
    language: str
    text: str  # the whole line (console: after "$ "; python: the whole block)
    line_no: int
    shown: tuple[str, ...] = ()  # console: the output the README shows under it

    @property
    def key(self) -> str:
        """What the registry knows it by: the command without its trailing comment."""
        if self.language == "python":
            return self.text.splitlines()[0]
        return strip_comment(self.text)


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` after blank space, outside quotes)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def fenced_blocks(page: str = README) -> list[tuple[str, str, str, int]]:
    """(section, language, text, line number of the first text line) of every fenced block."""
    blocks = []
    section = ""
    lines = page.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.startswith("```"):
            language = line[3:].strip()
            end = lines.index("```", index + 1)
            blocks.append((section, language, "\n".join(lines[index + 1:end]) + "\n", index + 2))
            index = end
        index += 1
    return blocks


def readme_commands(page: str = README) -> list[Command]:
    commands: list[Command] = []
    for section, language, text, first in fenced_blocks(page):
        assert language in COMMAND_LANGUAGES + OUTPUT_LANGUAGES, (
            f"README.md:{first - 1}: a fenced block of language {language!r}; this test knows "
            f"{COMMAND_LANGUAGES + OUTPUT_LANGUAGES}: mark shell commands sh/bash/console so "
            "they are checked")
        if language == "python":
            commands.append(Command(section, language, text, first))
        elif language in ("sh", "bash"):
            pending = ""
            for offset, line in enumerate(text.splitlines()):
                pending += line
                if pending.endswith("\\"):  # continued on the next line
                    pending = pending[:-1] + " "
                    continue
                if pending.strip() and not pending.lstrip().startswith("#"):
                    commands.append(Command(section, language, pending, first + offset))
                pending = ""
        elif language == "console":
            current: list[tuple[int, str]] = []
            shown: list[list[str]] = []
            for offset, line in enumerate(text.splitlines()):
                if line.startswith("$ "):
                    current.append((first + offset, line[2:]))
                    shown.append([])
                elif shown:
                    shown[-1].append(line)
            commands += [Command(section, language, line, number, tuple(out))
                         for (number, line), out in zip(current, shown, strict=True)]
    return commands


@dataclass(frozen=True)
class Runs:
    """Run as written by the test named ``scenario`` in this file."""

    scenario: str


@dataclass(frozen=True)
class Elsewhere:
    """Checked by something else, named in ``where``; ``instead`` runs in its place here."""

    where: str
    instead: str | None = None


SBATCH_INSTEAD = (
    # what `sbatch --export=ALL,IDS=ids.txt,OUT=genes` runs on each node, minus the scheduling
    'for task in 0 1 2 3; do IDS=ids.txt OUT=genes SLURM_ARRAY_JOB_ID=77 SLURM_ARRAY_TASK_ID=$task '
    'SLURM_ARRAY_TASK_COUNT=4 SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=3 '
    'bash examples/fetch-array.sbatch || exit; done')

REGISTRY: dict[tuple[str, str], Runs | Elsewhere] = {
    ("bulkgene", "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/bulkgene fetch "
                 "sample_inputs/human_genes.txt --out genes/"):
        Elsewhere(".ci/run makes a fresh venv and installs the project (with its test extra, a "
                  "superset of -e .); the fetch is the quick start's, run by test_quick_start"),
    ("bulkgene", "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && "
                 ".venv/bin/python -m pytest"):
        Elsewhere(".ci/run: a fresh venv, pip install -e '.[test]', then every test"),
    ("bulkgene", "export NCBI_API_KEY=your-api-key"): Runs("test_quick_start"),
    ("bulkgene", "bulkgene fetch sample_inputs/human_genes.txt --out genes/"): Runs("test_quick_start"),
    ("bulkgene", "jq -r '.gene | [.gene_id, .symbol, .description] | @tsv' genes/shard-*.ndjson | head"):
        Runs("test_quick_start"),
    ("bulkgene", "bulkgene verify genes/"): Runs("test_quick_start"),
    ("Usage", "bulkgene fetch INPUT... --out DIR [options]"): Runs("test_usage_synopses"),
    ("Usage", "bulkgene status DIR [--json]"): Runs("test_usage_synopses"),
    ("Usage", "bulkgene verify DIR"): Runs("test_usage_synopses"),
    ("Usage", "bulkgene explain DIR [--follow-replaced]"): Runs("test_usage_synopses"),
    ("Usage", "bulkgene retry DIR"): Runs("test_usage_synopses"),
    ("Usage", "bulkgene export DIR --to FILE [--fields F,...]"): Runs("test_usage_synopses"),
    ("Usage", "bulkgene doctor [--json]"): Runs("test_usage_synopses"),
    ("Usage", "bulkgene demo [--out DIR]"): Runs("test_usage_synopses"),
    ("Usage", "bulkgene emulate [--port 8765]"): Runs("test_usage_emulate"),
    ("Whole organisms", "bulkgene fetch --taxon human --out human/ --dry-run"):
        Runs("test_whole_organisms"),
    ("Whole organisms", "bulkgene fetch --taxon human --out human/"): Runs("test_whole_organisms"),
    ("Whole organisms", "bulkgene fetch --taxa-file organisms.txt --gene-type PROTEIN_CODING "
                        "--out coding/"): Runs("test_whole_organisms"),
    ("Whole organisms", "bulkgene fetch my_ids.txt --taxon 7227 --out genes/"):
        Runs("test_whole_organisms"),
    ("Output", "head -3 genes/missing.tsv genes/replaced.tsv"): Runs("test_side_reports_shown"),
    ("Reading the output", "bulkgene export genes/ --to genes.tsv"): Runs("test_reading_the_output"),
    ("Reading the output", "bulkgene export genes/ --to genes.parquet --fields query,gene-id,symbol,"
                           "tax-id,synonyms"): Runs("test_reading_the_output"),
    ("Reading the output", "find genes -name 'shard-*.ndjson' -exec jq -r '.gene | [.gene_id, .symbol, "
                           ".taxname] | @tsv' {} +"): Runs("test_reading_the_output"),
    ("Reading the output", "python -c \"import duckdb; print(duckdb.sql(\\\"select gene.symbol, "
                           "gene.type from read_json('genes/**/shard-*.ndjson')\\\"))\""):
        Runs("test_reading_the_output"),
    ("Reading the output", "python -c \"import bulkgene; print(bulkgene.open('genes').to_frame("
                           "fields=['query', 'gene-id', 'symbol', 'tax-name']).shape)\""):
        Runs("test_reading_the_output"),
    ("HPC", 'exec bulkgene fetch "${IDS:-ids.txt}" --out "${OUT:-genes}" --split slurm '
            "${BULKGENE_OPTIONS:-}"): Runs("test_hpc"),
    ("HPC", "export NCBI_API_KEY=your-api-key"): Runs("test_hpc"),
    ("HPC", "sbatch --export=ALL,IDS=ids.txt,OUT=genes examples/fetch-array.sbatch"):
        Elsewhere("tests/test_slurm.py::test_readme_hpc_commands_run_as_written runs it as "
                  "written on a real one-node SLURM (SBATCH_WAIT=1 in the environment); here "
                  "the script runs as each array task would", instead=SBATCH_INSTEAD),
    ("HPC", "bulkgene status genes/"): Runs("test_hpc"),
    ("HPC", "bulkgene verify genes/"): Runs("test_hpc"),
    ("HPC", "rule fetch_gene_reports:"): Runs("test_snakemake_rule"),
    ("Library", "import bulkgene"): Runs("test_library_fetch_example"),
    ("Development", "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'"):
        Elsewhere(".ci/run: a fresh venv and pip install -e '.[test]'"),
    ("Development", ".venv/bin/python -m pytest"):
        Elsewhere("the test command itself: this suite"),
    ("Development", '.venv/bin/python -m pytest -m "slow or not slow" -n 3'):
        Elsewhere(".ci/run runs exactly this selection"),
    ("Development", "BULKGENE_SLURM_TESTS=1 .venv/bin/python -m pytest -m slow tests/test_slurm.py"):
        Elsewhere(".ci/run sets BULKGENE_SLURM_TESTS=1 for its run of every test"),
    ("Development", ".ci/run"): Elsewhere("CI runs it"),
}


def commands_of(scenario: str) -> list[Command]:
    return [c for c in readme_commands()
            if REGISTRY.get((c.section, c.key)) == Runs(scenario)]


def doc_commands(page: str, section: str) -> list[Command]:
    """The commands of a block the README moved to ``docs/``: run as written there too."""
    return [c for c in readme_commands((REPO / page).read_text()) if c.section == section]


def test_every_readme_command_is_registered() -> None:
    found = {(c.section, c.key) for c in readme_commands()}
    unchecked = sorted(found - REGISTRY.keys())
    assert not unchecked, (
        "README commands without an entry in REGISTRY (tests/test_readme_commands.py), so "
        f"nothing runs them: {unchecked}; add each with the test that runs it as written")
    stale = sorted(REGISTRY.keys() - found)
    assert not stale, f"REGISTRY names commands the README no longer has: {stale}"
    scenarios = {check.scenario for check in REGISTRY.values() if isinstance(check, Runs)}
    missing = sorted(name for name in scenarios if not callable(globals().get(name)))
    assert not missing, f"REGISTRY names tests that don't exist: {missing}"


def test_the_readme_script_and_rule_are_the_example_files() -> None:
    script = {line.rstrip() for line in (REPO / "examples" / "fetch-array.sbatch").read_text()
              .splitlines()}
    shown = next(text for section, language, text, _ in fenced_blocks() if language == "bash")
    for line in shown.splitlines():
        assert strip_comment(line.removeprefix("#SBATCH ")) in {
            strip_comment(s.removeprefix("#SBATCH ")) for s in script}, (
            f"README's {line!r} is not in examples/fetch-array.sbatch")
    rule = next(c.text for c in readme_commands() if c.key == "rule fetch_gene_reports:")

    def bare(text: str) -> str:
        return re.sub(r"\s+", "", "\n".join(strip_comment(line) for line in text.splitlines()))

    assert bare(rule) == bare((REPO / "examples" / "Snakefile").read_text())


# -- running them ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Ran:
    command: str
    status: int
    stdout: str
    stderr: str


@dataclass
class Place:
    """A temp dir with copies of sample_inputs/ and examples/, and a PATH whose bulkgene is ours."""

    root: Path
    env: dict[str, str]

    def run(self, lines: list[str], timeout_s: float = 120) -> list[Ran]:
        """The lines in one bash, as a script in README order; each one's status and output."""
        script = []
        for number, line in enumerate(lines):
            script += [line, f"__s=$?; printf '\\n{MARK} {number} %d\\n' $__s; "
                             f"printf '\\n{MARK} {number}\\n' >&2"]
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=self.root, env=self.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        outs = re.split(rf"\n{MARK} \d+ (\d+)\n", done.stdout)
        errs = re.split(rf"\n{MARK} \d+\n", done.stderr)
        assert len(outs) == 2 * len(lines) + 1, f"the script stopped early:\n{done.stderr}"
        return [Ran(line, int(outs[2 * i + 1]), outs[2 * i], errs[i])
                for i, line in enumerate(lines)]

    def run_ok(self, lines: list[str], timeout_s: float = 120) -> list[Ran]:
        results = self.run(lines, timeout_s)
        for result in results:
            assert result.status == 0, (f"README command exited {result.status}: "
                                        f"{result.command}\n{result.stderr[-3000:]}")
        return results


def as_run(commands: list[Command]) -> list[str]:
    """The commands as written; one checked elsewhere is replaced by its stand-in."""
    lines = []
    for command in commands:
        check = REGISTRY.get((command.section, command.key))  # none for a docs/ block
        line = check.instead if isinstance(check, Elsewhere) else command.text
        assert line is not None, f"{command.key!r} is checked elsewhere and has no stand-in here"
        lines.append(line)
    return lines


@pytest.fixture
def place(tmp_path: Path) -> Place:
    root = tmp_path / "work"
    root.mkdir()
    shutil.copytree(REPO / "sample_inputs", root / "sample_inputs")
    shutil.copytree(REPO / "examples", root / "examples")
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, program in (("bulkgene", f"'{sys.executable}' -m bulkgene"),
                          ("python", f"'{sys.executable}'")):
        (shims / name).write_text(f'#!/bin/sh\nexec {program} "$@"\n')
        (shims / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NCBI_API_KEY", "BULKGENE_BASE_URL", "SSL_CERT_FILE", "BULKGENE_HISTORY",
                        "BULKGENE_CACHE_DIR")
           and k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
           and not k.startswith("SLURM_")}
    env["PATH"] = os.pathsep.join([str(shims), str(Path(sys.executable).parent), env["PATH"]])
    env["PYTHONPATH"] = str(REPO)  # this tree's bulkgene, whatever the venv's install points at
    return Place(root, env)


@pytest.fixture
def ncbi(make_emulator: EmulatorFactory, place: Place) -> EmulatorThread:
    """The emulator as NCBI was recorded (rate limit on), where the README's commands go."""
    emulator = make_emulator(rate_limit=True)
    place.env["BULKGENE_BASE_URL"] = emulator.base_url
    # `bulkgene explain` reads NCBI's gene_history: the emulator's, cached in the test's tree
    place.env["BULKGENE_HISTORY"] = emulator.history_url
    place.env["BULKGENE_CACHE_DIR"] = str(place.root.parent / "cache")
    return emulator


def need_jq() -> None:
    if shutil.which("jq") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("jq is not installed, and the README's commands need it (.ci/run "
                        "installs it with apt-get as root)")
        pytest.skip("jq is not installed here; the README's jq commands need it")


def assert_shows(shown: tuple[str, ...], printed: str) -> None:
    """The README's output appears in ``printed``: each run of lines between ``...`` whole,
    in order."""
    lines = [line.rstrip() for line in printed.splitlines()]
    start = 0
    runs: list[list[str]] = [[]]
    for line in shown:
        if line.strip() == "...":
            runs.append([])
        else:
            runs[-1].append(line.rstrip())
    for run in filter(None, runs):
        at = next((i for i in range(start, len(lines) - len(run) + 1)
                   if lines[i:i + len(run)] == run), None)
        assert at is not None, (f"the README shows\n{chr(10).join(run)}\nbut the command "
                                f"printed\n{printed}")
        start = at + len(run)


def tsv_rows(text: str, fields: int) -> list[list[str]]:
    rows = [line.split("\t") for line in text.splitlines()]
    assert rows and all(len(row) == fields and row[0].isdigit() for row in rows), text[:2000]
    return rows


def test_dry_run(place: Place) -> None:
    [command] = doc_commands("docs/resume.md", "Before a run: `--dry-run`")
    [result] = place.run_ok(as_run([command]))
    assert_shows(command.shown, result.stdout + result.stderr)
    assert not (place.root / "genes").exists(), "a dry run writes nothing"


@pytest.mark.slow
def test_whole_organisms(place: Place, ncbi: EmulatorThread) -> None:
    (place.root / "organisms.txt").write_text("# the study's organisms\nhuman\nzebrafish\n")
    write_ids(place.root / "my_ids.txt", [7157, 672, 31000003])
    dry, fetched, coding, union = place.run_ok(as_run(commands_of("test_whole_organisms")))
    assert dry.stdout.startswith("taxon 'human': 2000 genes to fetch; NCBI's counts by type:")
    assert "nothing was written" in dry.stdout
    assert "done" in fetched.stderr and read_summary(place.root / "human")["found"] == 2000
    assert "done" in coding.stderr
    types = {orjson.loads(line)["gene"]["type"] for shard in (place.root / "coding").glob(
        "shard-*.ndjson") for line in shard.read_bytes().splitlines()}
    assert types == {"PROTEIN_CODING"}
    assert "done" in union.stderr
    summary = read_summary(place.root / "genes")
    assert summary["found"] == 1002 and summary["duplicates"] == 1, "fly's 1000, TP53, BRCA1"


@pytest.mark.slow
def test_quick_start(place: Place, ncbi: EmulatorThread) -> None:
    need_jq()
    _, fetch, peek, verify = place.run_ok(as_run(commands_of("test_quick_start")))
    assert "done" in fetch.stderr
    assert len(tsv_rows(peek.stdout, 3)) == 10, "`| head`: ten genes, one TSV row each"
    assert verify.stdout.startswith("ok:"), verify.stdout
    assert read_summary(place.root / "genes")["complete"]
    assert all(a.has_key for a in ncbi.state.arrivals()), "the exported key was sent"


@pytest.mark.slow
def test_usage_synopses(place: Place, ncbi: EmulatorThread) -> None:
    # a synopsis has placeholders: each is run with them filled in, without and with the
    # [optional] part (the fills are the only change)
    fills = {"INPUT...": "sample_inputs/human_genes.txt", "DIR": "genes", " [options]": "",
             "FILE": "genes.tsv", "F,...": "gene-id,symbol"}
    synopses = commands_of("test_usage_synopses")
    assert len(synopses) == 8
    instances: list[str] = []
    for synopsis in synopses:
        text = synopsis.key
        for placeholder, value in fills.items():
            text = text.replace(placeholder, value)
        optional = re.search(r" \[(.*?)\]", text)
        variants = [text] if optional is None else [
            text[:optional.start()], text[:optional.start()] + " " + optional[1]]
        if text.startswith("bulkgene demo"):  # demo --out genes: test_side_reports_shown
            variants = variants[:1]
        instances += variants
    results = place.run_ok(instances)  # the instances stand for the synopses
    by_command = {r.command: r for r in results}
    assert "done" in by_command["bulkgene fetch sample_inputs/human_genes.txt --out genes"].stderr
    assert "complete" in by_command["bulkgene status genes"].stdout
    assert orjson.loads(by_command["bulkgene status genes --json"].stdout)
    assert by_command["bulkgene verify genes"].stdout.startswith("ok:")
    assert "explained" in by_command["bulkgene explain genes"].stderr
    assert "--follow-replaced: " in by_command["bulkgene explain genes --follow-replaced"].stderr
    assert "nothing to fetch again" in by_command["bulkgene retry genes"].stderr
    assert "wrote" in by_command["bulkgene export genes --to genes.tsv --fields gene-id,symbol"].stderr
    assert "a fetch would work" in by_command["bulkgene doctor"].stdout
    assert orjson.loads(by_command["bulkgene doctor --json"].stdout)
    assert "bulkgene demo: requested" in by_command["bulkgene demo"].stdout


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # as the emulator's server binds: connections of an earlier run in TIME_WAIT don't count
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_usage_emulate(place: Place) -> None:
    [synopsis] = commands_of("test_usage_emulate")
    optional = re.search(r" \[(.*?)\]", synopsis.key)
    assert optional is not None and optional[1] == "--port 8765"
    for line in (synopsis.key[:optional.start()], synopsis.key.replace("[", "").replace("]", "")):
        if not _port_is_free(8765):
            pytest.skip("port 8765, the one the README's `bulkgene emulate` takes, is in use here")
        with subprocess.Popen(["bash", "-c", line], cwd=place.root, env=place.env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              start_new_session=True) as server:
            try:
                assert server.stdout is not None
                said = server.stdout.readline()
                assert "listening on http://127.0.0.1:8765/datasets/v2" in said, (line, said)
                said = server.stdout.readline()
                assert ("gene history at http://127.0.0.1:8765/gene/DATA/gene_history.gz"
                        in said), said
                with urllib.request.urlopen(
                        "http://127.0.0.1:8765/datasets/v2/gene/id/7157", timeout=30) as answer:
                    assert b'"gene_id":"7157"' in answer.read().replace(b" ", b"")
            finally:  # the session this test started: bash and the bulkgene it runs
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)


@pytest.mark.slow
def test_doctor_shown(place: Place, make_emulator: EmulatorFactory) -> None:
    # the README shows doctor where NCBI has retired GET /gene/id, with a key set
    emulator = make_emulator(rate_limit=True, retired_endpoints=frozenset({"gene_reports_by_id"}))
    place.env.update(BULKGENE_BASE_URL=emulator.base_url, NCBI_API_KEY="doctor-key")
    [command] = doc_commands("docs/network.md", "Checking a machine first: `bulkgene doctor`")
    [result] = place.run_ok(as_run([command]))
    assert_shows(command.shown, result.stdout)
    assert "doctor-key" not in result.stdout + result.stderr


@pytest.mark.slow
def test_side_reports_shown(place: Place) -> None:
    place.run_ok(["bulkgene demo --out genes"])  # the output the README shows: the demo's
    assert read_summary(place.root / "genes")["complete"]
    [command] = commands_of("test_side_reports_shown")
    [result] = place.run_ok(as_run([command]))
    # which missing IDs come first follows the order batches commit in, so the rows the README
    # shows are checked to be in the files, and head's output to have the same shape
    # (a row's empty explanation fields end it in tabs, which the README doesn't show)
    shape = [re.sub(r"^\d+\t.*$", "<row>", line) for line in command.shown]
    assert [re.sub(r"^\d+\t.*$", "<row>", line) for line in result.stdout.splitlines()] == shape
    files = {name: [line.rstrip("\t") for line in
                    (place.root / "genes" / f"{name}.tsv").read_text().splitlines()]
             for name in ("missing", "replaced")}
    current = ""
    for line in command.shown:
        if line.startswith("==>"):
            current = "missing" if "missing" in line else "replaced"
        elif line:
            assert line in files[current], f"{line!r} is not in genes/{current}.tsv"


@pytest.mark.slow
def test_reading_the_output(place: Place, ncbi: EmulatorThread) -> None:
    need_jq()
    fetch = next(c for c in commands_of("test_quick_start") if c.key.startswith("bulkgene fetch"))
    place.run_ok(as_run([fetch]))
    records = read_summary(place.root / "genes")["records"]
    _check_reading(place, records)


def _check_reading(place: Place, records: int) -> None:
    """The Reading-the-output commands, run as written, each seeing every record."""
    import pyarrow.parquet as pq

    tsv, parquet, duck, found, frame = place.run_ok(as_run(commands_of("test_reading_the_output")))
    assert f"wrote {records} rows" in tsv.stderr
    table = (place.root / "genes.tsv").read_text().splitlines()
    assert table[0].startswith("Query\tNCBI GeneID\tSymbol") and len(table) == records + 1
    assert f"wrote {records} rows" in parquet.stderr
    assert pq.read_table(place.root / "genes.parquet").num_rows == records
    assert "symbol" in duck.stdout and "PROTEIN_CODING" in duck.stdout
    assert len(tsv_rows(found.stdout, 3)) == records
    assert frame.stdout.strip() == f"({records}, 4)"


@pytest.mark.slow
def test_hpc(place: Place, ncbi: EmulatorThread) -> None:
    need_jq()
    shutil.copy(place.root / "sample_inputs" / "human_genes.txt", place.root / "ids.txt")
    # four batches, so each of the four tasks has one; a fixed rate spares each task the wait
    # for a lease on the key's budget (the sharing is tested in test_sharing.py)
    place.env["BULKGENE_OPTIONS"] = "--batch-size 100 --rate 50"
    script = commands_of("test_hpc")[0]
    assert script.key in (place.root / "examples" / "fetch-array.sbatch").read_text().splitlines()
    commands = [c for c in readme_commands() if c.section == "HPC" and c.language == "sh"]
    _, _, status, verify = place.run_ok(as_run(commands))
    tasks = sorted(p.name for p in (place.root / "genes").glob("task-*"))
    assert tasks == ["task-0000", "task-0001", "task-0002", "task-0003"]
    assert all(read_summary(place.root / "genes" / task)["complete"] for task in tasks)
    assert "task-0003" in status.stdout and "complete" in status.stdout
    assert verify.stdout.startswith("ok: 4 task(s)"), verify.stdout
    # the Reading-the-output commands are said to work for an array too
    records = sum(read_summary(place.root / "genes" / task)["records"] for task in tasks)
    _check_reading(place, records)


@pytest.mark.slow
def test_snakemake_rule(place: Place, ncbi: EmulatorThread) -> None:
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent))
    if snakemake is None:
        if os.environ.get("CI") == "true":
            pytest.fail("snakemake is not installed (it is in the test extra)")
        pytest.skip("snakemake is not installed (it is in the test extra)")
    [rule] = commands_of("test_snakemake_rule")
    (place.root / "Snakefile").write_text(rule.text)
    write_ids(place.root / "ids.txt", [7157, 672, 3105, 59067])
    done = subprocess.run([snakemake, "--cores", "1", "genes/summary.json"], cwd=place.root,
                          env=place.env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_summary(place.root / "genes")["complete"]


class TunnelProxy:
    """A CONNECT proxy on 127.0.0.1 that tunnels one host name to a local port, nothing else."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host, self.target_port = host, target_port
        self.tunnels: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._stop = asyncio.Event()  # bound to the loop that first waits on it
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TunnelProxy:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _serve(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        server = await asyncio.start_server(self._tunnel, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        tunnels = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tunnels:
            task.cancel()
        await asyncio.gather(*tunnels, return_exceptions=True)
        await server.wait_closed()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        method, target = head.split(" ")[:2]
        self.tunnels.append(target)
        if method != "CONNECT" or target != f"{self.host}:443":
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def ncbi_by_name(place: Place) -> Iterator[EmulatorThread]:
    """The emulator answering for https://api.ncbi.nlm.nih.gov, the library's default URL."""
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("api.ncbi.nlm.nih.gov").configure_cert(context)
    authority.cert_pem.write_to_path(str(place.root.parent / "ca.pem"))
    with EmulatorThread(EmulatorConfig(), ssl_context=context) as emulator, \
            TunnelProxy("api.ncbi.nlm.nih.gov", int(emulator.base_url.split(":")[2].split("/")[0])
                        ) as proxy:
        place.env.update(HTTPS_PROXY=f"http://127.0.0.1:{proxy.port}",
                         SSL_CERT_FILE=str(place.root.parent / "ca.pem"))
        yield emulator
        assert proxy.tunnels and set(proxy.tunnels) == {"api.ncbi.nlm.nih.gov:443"}


@pytest.mark.slow
def test_library_fetch_example(place: Place, ncbi_by_name: EmulatorThread) -> None:
    [example] = commands_of("test_library_fetch_example")
    (place.root / "example.py").write_text(example.text)
    done = subprocess.run([sys.executable, "example.py"], cwd=place.root, env=place.env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(place.root / "genes-lib")
    assert done.stdout.split() == ["(3,", "4)", str(summary["missing"])]
    assert summary["complete"] and summary["found"] == 3
    assert ncbi_by_name.state.arrivals(), "the example's requests reached the emulator"


@pytest.mark.slow
def test_library_example(place: Place, ncbi_by_name: EmulatorThread) -> None:
    [example] = doc_commands("docs/export.md", "Every option: `bulkgene.download(config)`")
    shutil.copy(place.root / "sample_inputs" / "human_genes.txt", place.root / "ids.txt")
    (place.root / "example.py").write_text(example.text)
    done = subprocess.run([sys.executable, "example.py"], cwd=place.root, env=place.env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(place.root / "genes")
    assert done.stdout.split() == [str(summary["found"]), str(summary["missing"]), "0"]
    assert summary["complete"] and summary["found"] > 0
    assert list((place.root / "genes").glob("shard-*.ndjson.gz")), "OutputSpec(compress='gzip')"
    assert ncbi_by_name.state.arrivals(), "the example's requests reached the emulator"
