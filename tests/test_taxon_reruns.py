"""A ``--taxon`` run read again: an interrupted listing bound to its server and options, the
dry run against a dead host, a gene type a taxon has none of, what the messages show."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from helpers import (
    EmulatorFactory,
    cli_command,
    cli_env,
    gene_ids_written,
    invoke_cli,
    make_config,
    read_tsv,
    run_cli,
    served,
)

from bulkgene.config import RetryPolicy, TaxonSelection, Timeouts
from bulkgene.errors import FatalHTTPError
from bulkgene.run.taxa import count_taxa_now
from bulkgene.testing import EmulatorThread
from bulkgene.testing.blackhole import BlackHoleThread

STRAIN = "Escherichia coli str. K-12 substr. MG1655"  # 4300 genes: 5 pages and more


def _chain_pages(out: Path) -> int:
    pages = 0
    for path in (out / "taxa").glob("chain-*.json"):
        try:
            pages += int(orjson.loads(path.read_bytes())["pages"])
        except (OSError, ValueError, KeyError):
            continue  # being replaced: counted at the next look
    return pages


def _interrupted_while_listing(emulator: EmulatorThread, out: Path) -> None:
    """Run ``fetch --taxon STRAIN`` against ``emulator`` and Ctrl-C it once a page is listed."""
    args = ["fetch", "--taxon", STRAIN, "--out", str(out), "--rate", "4", "--no-progress"]
    process = subprocess.Popen(cli_command(*args), env=cli_env(emulator.base_url),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120  # a hang guard only: progress is what is waited for
    while _chain_pages(out) < 1:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr.decode()
    assert "interrupted while listing" in stderr.decode()
    assert not (out / "taxa" / "list.json").exists()


def test_a_listing_interrupted_on_one_server_is_not_resumed_on_another(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    first, second = make_emulator(), make_emulator(seed=9)
    out = tmp_path / "out"
    _interrupted_while_listing(first, out)

    args = ("fetch", "--taxon", STRAIN, "--out", str(out), "--no-progress")
    other = invoke_cli(*args, "--base-url", second.base_url, env=cli_env(first.base_url))
    stderr = other.stderr.decode()
    assert other.returncode == 1, stderr
    assert (f"server: was 'http://127.0.0.1:{first.port}', now "
            f"'http://127.0.0.1:{second.port}'") in stderr, stderr
    assert "--restart" in stderr
    assert not served(second.state.arrivals()), "nothing asked of the other server"

    typed = invoke_cli(*args, "--gene-type", "PROTEIN_CODING", env=cli_env(first.base_url))
    assert typed.returncode == 1, typed.stderr.decode()
    assert "gene_types: was none, now ['PROTEIN_CODING']" in typed.stderr.decode()

    status = run_cli("status", str(out))
    assert status.returncode == 0, status.stderr.decode()
    said = status.stdout.decode()
    assert "interrupted while listing the taxa's GeneIDs" in said, said
    assert "re-run the same fetch command" in said

    done = invoke_cli(*args, env=cli_env(first.base_url))
    assert done.returncode == 0, done.stderr.decode()
    universe = first.state.universe
    found = universe.taxa.find(STRAIN)
    assert found is not None
    assert set(gene_ids_written(out)) == set(universe.taxon_genes(found, False, ()))


def test_a_finished_list_names_the_taxa_it_holds_and_the_ones_asked(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    assert invoke_cli("fetch", "--taxon", "human", "--out", str(out), env=env).returncode == 0
    # the list is bound before the checkpoint: a kill between the two must not let another
    # spelling (or another organism) reuse it silently
    (out / "checkpoint.json").unlink()
    result = invoke_cli("fetch", "--taxon", "Human", "--out", str(out), env=env)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "taxa: was ['human'], now ['Human']" in stderr, stderr
    assert "--taxon human" in stderr, "how to go on with the list as it was made"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_dry_run_counts_against_a_dead_host_raise_one_error(tmp_path: Path) -> None:
    selection = TaxonSelection(("human", "7227"))
    fast = {"retry": RetryPolicy(max_attempts=2, unreachable_s=0.3),
            "timeouts": Timeouts(read_stall_s=0.5), "progress_interval_s": 0}
    refused = make_config([], tmp_path / "out", taxa=selection,
                          base_url=f"http://127.0.0.1:{_closed_port()}/datasets/v2", **fast)
    with pytest.raises(FatalHTTPError, match=r"cannot reach 127\.0\.0\.1"):
        await count_taxa_now(refused)
    with BlackHoleThread() as hole:
        silent = make_config([], tmp_path / "out", taxa=selection, base_url=hole.base_url,
                             **fast)
        with pytest.raises(FatalHTTPError, match="no answer"):
            await count_taxa_now(silent)


@pytest.mark.slow  # the 15 s a host is given to be reached, for real, through the CLI
def test_the_dry_run_against_a_refused_port_ends_as_the_run_does(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}/datasets/v2"
    ends = []
    for dry in (["--dry-run"], []):
        result = run_cli("fetch", "--taxon", "human", "--out", str(tmp_path / "out"),
                         "--no-progress", *dry, env=cli_env(base_url))
        stderr = result.stderr.decode()
        assert "Traceback" not in stderr and "Exception Group" not in stderr, stderr
        ends.append((result.returncode, stderr.strip().splitlines()[-1]))
    assert ends[0] == ends[1] and ends[0][0] == 1
    assert ends[0][1].startswith("bulkgene: error: cannot reach 127.0.0.1")


def test_a_gene_type_the_taxon_has_none_of_is_said_so(emulator: EmulatorThread,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    result = invoke_cli("fetch", "--taxon", "human", "--gene-type", "rRNA", "--out", str(out),
                        env=env)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "unknown tax ID" not in stderr and "Check the names" not in stderr, stderr
    assert "--include-subtree" not in stderr, stderr
    assert "no gene of the types asked (rRNA)" in stderr, stderr
    assert "PROTEIN_CODING 1066" in stderr, "the types it has, from NCBI's counts"
    rows = read_tsv(out / "missing_taxa.tsv")
    assert [row[:2] for row in rows] == [["human", "NO_GENE_OF_TYPES"]]

    dry = invoke_cli("fetch", "--taxon", "human", "--gene-type", "rRNA", "--out", str(out),
                     "--dry-run", env=env)
    said = dry.stdout.decode()
    assert dry.returncode == 0, dry.stderr.decode()
    assert "no gene of the types asked (rRNA)" in said and "unknown" not in said, said


def test_a_gene_type_is_taken_in_any_case(emulator: EmulatorThread, tmp_path: Path) -> None:
    result = invoke_cli("fetch", "--taxon", "human", "--gene-type", "protein_coding",
                        "--gene-type", "RRNA", "--out", str(tmp_path / "out"), "--dry-run",
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().startswith("taxon 'human': 1066 genes to fetch")
    assert TaxonSelection(("human",), ("protein_coding",)).gene_types == ("PROTEIN_CODING",)
