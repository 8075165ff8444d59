"""Shared test code (importable; conftest.py only wires fixtures): run the CLI, read outputs."""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import orjson

from bulkgene.config import ApiQuery, DownloadConfig, NetworkSpec, OutputSpec
from bulkgene.testing import EmulatorThread, Fate, GeneUniverse
from bulkgene.testing.emulator import Arrival

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_inputs"


class EmulatorFactory(Protocol):
    """The ``make_emulator`` fixture: an emulator with these config fields, stopped at teardown."""

    def __call__(self, universe: GeneUniverse | None = None, **config: Any) -> EmulatorThread: ...


def make_config(inputs: tuple[str, ...] | list[str], out_dir: Path, **settings: Any
                ) -> DownloadConfig:
    """A DownloadConfig from flat settings, each routed to its group by field name."""
    groups: dict[type[Any], dict[str, Any]] = {ApiQuery: {}, OutputSpec: {}, NetworkSpec: {}}
    top: dict[str, Any] = {}
    for name, value in settings.items():
        owner = next((g for g in groups if name in {f.name for f in fields(g)}), None)
        (groups[owner] if owner else top)[name] = value
    return DownloadConfig(inputs=tuple(map(str, inputs)), out_dir=out_dir,
                          query=ApiQuery(**groups[ApiQuery]),
                          output=OutputSpec(**groups[OutputSpec]),
                          network=NetworkSpec(**groups[NetworkSpec]), **top)


def write_ids(path: Path, ids: list[int] | range) -> Path:
    path.write_text("".join(f"{gene_id}\n" for gene_id in ids))
    return path


def cli_env(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NCBI_API_KEY", "BULKGENE_BASE_URL")}
    env["BULKGENE_BASE_URL"] = base_url
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulkgene", *args]


def _paced(args: tuple[str, ...]) -> tuple[str, ...]:
    """A fetch (or retry, or explain --follow-replaced) without its own --rate runs at a fixed
    1000/s in tests: a shared-budget lease
    waits ~1.3 s to be admitted, which tests of other things need not pay (the lease itself
    is tested in test_budget*.py, test_sharing.py and the array tests)."""
    fetches = args[:1] in (("fetch",), ("retry",)) or (args[:1] == ("explain",)
                                                       and "--follow-replaced" in args)
    if fetches and not any(a == "--rate" or a.startswith("--rate=")
                           for a in args) and "--dry-run" not in args:
        return (*args, "--rate", "1000")
    return args


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cli_command(*_paced(args)), env=env, input=stdin,
                          capture_output=True, timeout=timeout, check=False)


def invoke_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``run_cli`` in this process (click's CliRunner): same result, no interpreter start-up.

    For exit codes and output only; signals, kills, terminals and a second concurrent run
    need a real process (``run_cli``). ``env`` replaces the environment, as for a child.
    """
    del timeout  # kept so the call reads like run_cli; an in-process run is bounded by pytest
    args = _paced(args)
    from click.testing import CliRunner

    from bulkgene.cli.main import main

    overrides: dict[str, str | None] = {}
    if env is not None:
        overrides = {name: None for name in os.environ if name not in env}
        overrides.update(env)
    argv = sys.argv  # the printed resume command repeats the command line
    sys.argv = ["bulkgene", *args]
    try:
        result = CliRunner().invoke(main, list(args), input=stdin, env=overrides,
                                    prog_name="bulkgene")
    finally:
        sys.argv = argv
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["bulkgene", *args], result.exit_code,
                                       result.stdout_bytes, result.stderr_bytes)


def shard_files(out_dir: Path) -> list[Path]:
    return sorted([*out_dir.glob("shard-*.ndjson"), *out_dir.glob("shard-*.ndjson.gz")])


def read_records(out_dir: Path) -> list[dict[str, Any]]:
    """Every NDJSON line of every shard, asserting each is complete JSON ending in a newline."""
    records = []
    for shard in shard_files(out_dir):
        data = gzip.decompress(shard.read_bytes()) if shard.suffix == ".gz" else shard.read_bytes()
        assert not data or data.endswith(b"\n"), f"{shard} ends in a torn line"
        for number, line in enumerate(data.splitlines(), 1):
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:  # pragma: no cover - the failure message
                raise AssertionError(f"{shard}:{number} is not JSON: {line[:80]!r}") from exc
    return records


def gene_ids_written(out_dir: Path) -> Counter[int]:
    """GeneIDs in the shards, whether lines are report matches or (--record gene) genes."""
    return Counter(int(record["gene"]["gene_id"] if "gene" in record else record["gene_id"])
                   for record in read_records(out_dir))


def tsv_gene_ids(out_dir: Path) -> Counter[int]:
    """GeneIDs in the first column of TSV shards (each starting with its header line)."""
    counts: Counter[int] = Counter()
    for shard in sorted([*out_dir.glob("shard-*.tsv"), *out_dir.glob("shard-*.tsv.gz")]):
        data = gzip.decompress(shard.read_bytes()) if shard.suffix == ".gz" else shard.read_bytes()
        assert data.endswith(b"\n"), f"{shard} ends in a torn row"
        counts.update(int(line.split(b"\t")[0]) for line in data.split(b"\n")[1:-1])
    return counts


def read_tsv(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [line.split("\t") for line in lines[1:]]


def read_summary(out_dir: Path) -> dict[str, Any]:
    summary: dict[str, Any] = orjson.loads((out_dir / "summary.json").read_bytes())
    return summary


@dataclass
class Expected:
    """What a complete run over ``ids`` must produce, according to the emulator's universe."""

    found: set[int]
    missing: dict[int, str]
    replaced: dict[int, int]
    genes: set[int]  # GeneIDs that must appear exactly once in the shards


def expected_for(universe: GeneUniverse, ids: list[int] | range, messages: bool = False
                 ) -> Expected:
    """What a complete run of ``ids`` must write; reasons as page messages give them when the
    emulator sends messages (an old guess), else NOT_RETURNED, as NCBI was recorded."""
    unique = list(dict.fromkeys(ids))
    requested = set(unique)
    found: set[int] = set()
    missing: dict[int, str] = {}
    replaced: dict[int, int] = {}
    genes: set[int] = set()
    for gene_id in unique:
        fate = universe.fate(gene_id)
        if fate is Fate.FOUND:
            found.add(gene_id)
            genes.add(gene_id)
        elif fate is Fate.REPLACED:
            found.add(gene_id)
            target = universe.replacement(gene_id)
            replaced[gene_id] = target
            genes.add(target)
        else:
            missing[gene_id] = ("NOT_RETURNED" if not messages
                                else "UNRECOGNIZED_GENE_ID" if fate is Fate.UNKNOWN
                                else "DISCONTINUED_GENE_ID")
    assert requested == found | set(missing)
    return Expected(found, missing, replaced, genes)


def assert_complete_output(out_dir: Path, expected: Expected) -> None:
    """Every gene exactly once, side reports exact, summary reconciles."""
    written = gene_ids_written(out_dir)
    duplicates = {gene_id: n for gene_id, n in written.items() if n > 1}
    assert not duplicates, f"genes written more than once: {sorted(duplicates)[:10]}"
    assert set(written) == expected.genes
    missing = {int(row[0]): row[1] for row in read_tsv(out_dir / "missing.tsv")}
    assert missing == expected.missing
    replaced = {int(row[0]): int(row[1]) for row in read_tsv(out_dir / "replaced.tsv")}
    assert replaced == expected.replaced
    summary = read_summary(out_dir)
    assert summary["requested"] == len(expected.found) + len(expected.missing)
    assert summary["found"] == len(expected.found)
    assert summary["missing"] == len(expected.missing)
    assert summary["failed"] == 0
    assert summary["pending"] == 0
    assert summary["records"] == len(expected.genes)
    assert summary["requested"] == (summary["found"] + summary["missing"] + summary["failed"]
                                    + summary["pending"])


def served(arrivals: list[Arrival]) -> list[Arrival]:
    return [a for a in arrivals if a.path.startswith("/datasets/v2/")]


def rewrite_checkpoint(out_dir: Path, change: Any) -> None:
    """Edit ``checkpoint.json`` as someone outside bulkgene would, checksum made to match."""
    from bulkgene.output.checkpoint import content_checksum

    path = out_dir / "checkpoint.json"
    state = orjson.loads(path.read_bytes())
    state.pop("checksum", None)
    change(state)
    state["checksum"] = content_checksum(state)
    path.write_bytes(orjson.dumps(state))


def wait_for_commits(out_dir: Path, batches: int = 1, deadline_s: float = 60) -> None:
    """Return once ``out_dir``'s checkpoint shows ``batches`` committed batches (a fresh run's
    checkpoint exists before anything is sent, so its existence proves nothing)."""
    from bulkgene.errors import CorruptCheckpoint
    from bulkgene.output.checkpoint import load

    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        try:
            state = load(out_dir)
        except CorruptCheckpoint:  # read while being replaced: look again
            state = None
        if state is not None and state.committed_batches >= batches:
            return
        time.sleep(0.02)
    raise AssertionError(f"{out_dir} never committed {batches} batches")


EXPLAINED_MISSING_HEADER = ("gene_id\treason\thistory\tcurrent_gene_id\tdiscontinued_on\tsymbol"
                            "\ttax_id")


def expected_explanation(universe: GeneUniverse, gene_id: int, history_max_id: int = 1_000_000
                         ) -> list[str]:
    """The five explanation fields the emulator's gene_history implies for ``gene_id``."""
    listed = (gene_id <= history_max_id or gene_id in universe.discontinued
              or gene_id in universe.replaced)
    steps = universe.history(gene_id) if listed else ()
    if not steps:
        return ["NOT_IN_HISTORY", "", "", "", ""]
    last = steps[-1]
    day = f"{last.date // 10000:04d}-{last.date // 100 % 100:02d}-{last.date % 100:02d}"
    history = "DISCONTINUED" if last.successor is None else "REPLACED"
    current = "" if last.successor is None else str(last.successor)
    return [history, current, day, universe.symbol(gene_id), str(universe.tax_id(gene_id))]


def explained_rows(path: Path) -> dict[int, list[str]]:
    """A report's rows by GeneID (its first column): every other field, explanation included."""
    lines = path.read_text().split("\n")
    assert lines[-1] == "", f"{path} ends in a torn row"
    return {int(row.split("\t")[0]): row.split("\t")[1:] for row in lines[1:-1]}
@contextlib.contextmanager
def small_filesystem(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``2m``) at ``mount`` (needs root and mount; the test is skipped
    where the machine can't), unmounted afterwards."""
    import pytest

    mount.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# the emulator's loop this late in a rate window may have bunched its arrivals: the pacer's
# narrowest margin is 25 ms, so lateness below that can't turn its sends into a 429
SERVER_LAG_BLAMED_S = 0.02


def earned_429s(arrivals: list[Arrival]) -> list[Arrival]:
    """The 429s the client earned: not those judged while the emulator's own loop was late.

    The emulator shares the test's CPU; on a loaded machine (CI runs tests three at a time,
    and issue 21 asks for passing beside a CPU hog on every core) its loop can stamp a request
    late and judge two sends a second and a margin apart as one second's (testing/lag.py).
    """
    return [a for a in arrivals if a.status == 429 and a.server_lag_s < SERVER_LAG_BLAMED_S]


def assert_key_budget_kept(arrivals: list[Arrival], limit: int = 10, what: str = "") -> None:
    """What the server received on one key kept within ``limit`` a second, by its clock.

    One 429 the client earned is allowed too: bulkgene's answer to a lone 429 is to resend it
    (a cost the pacer accepts). A second one, or more than one request over ``limit`` in any
    second, is a real overrun.
    """
    from bulkgene.testing.windows import max_in_window

    earned = earned_429s(arrivals)
    shown = [(round(a.t - arrivals[0].t, 3), a.first_id, round(a.server_lag_s, 3))
             for a in arrivals if a.status == 429]
    assert len(earned) <= 1, f"{what}429s (s from the first request, first ID, server lag): {shown}"
    excused = {id(a) for a in arrivals if a.status == 429} - {id(a) for a in earned}
    times = [a.t for a in arrivals if id(a) not in excused]
    assert max_in_window(times) <= limit + len(earned), what
