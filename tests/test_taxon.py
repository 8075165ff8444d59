"""``fetch --taxon`` end to end: the real CLI against the emulator, bytes on disk, what it was asked."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from helpers import (
    EmulatorFactory,
    assert_complete_output,
    cli_command,
    cli_env,
    expected_for,
    gene_ids_written,
    invoke_cli,
    read_records,
    read_summary,
    read_tsv,
    run_cli,
    served,
    write_ids,
)

from bulkgene.config import GENE_TYPES
from bulkgene.output import checkpoint as ckpt
from bulkgene.testing import EmulatorThread
from bulkgene.testing.state import Arrival
from bulkgene.testing.taxa import TaxonTree


def taxon_genes(emulator: EmulatorThread, taxon: str, subtree: bool = False,
                types: tuple[str, ...] = ()) -> list[int]:
    universe = emulator.state.universe
    found = universe.taxa.find(taxon)
    assert found is not None
    return universe.taxon_genes(found, subtree, types)


def listing_requests(arrivals: list[Arrival]) -> list[dict[str, object]]:
    """The bodies of the taxon page requests the emulator received, in order."""
    bodies = []
    for arrival in served(arrivals):
        if arrival.method == "POST" and arrival.query.startswith("{"):
            body = json.loads(arrival.query)
            if "taxon" in body:
                bodies.append(body)
    return bodies


def fetch(emulator: EmulatorThread, out: Path, *args: str) -> tuple[int, str]:
    result = invoke_cli("fetch", *args, "--out", str(out), env=cli_env(emulator.base_url))
    return result.returncode, result.stderr.decode()


def test_a_taxon_by_name_and_one_by_id_are_fetched_exactly_once(emulator: EmulatorThread,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stderr = fetch(emulator, out, "--taxon", "Homo sapiens", "--taxon", "7227")
    assert code == 0, stderr
    wanted = [*taxon_genes(emulator, "9606"), *taxon_genes(emulator, "7227")]
    assert_complete_output(out, expected_for(emulator.state.universe, wanted))
    taxa = {record["gene"]["tax_id"] for record in read_records(out)}
    assert taxa == {"9606", "7227"}, "the reports name the taxa asked for"
    bodies = listing_requests(emulator.state.arrivals())
    assert [body["taxon"] for body in bodies] in (
        ["Homo sapiens", "7227", "Homo sapiens"], ["7227", "Homo sapiens", "Homo sapiens"],
        ["Homo sapiens", "Homo sapiens", "7227"])
    assert all(body["returned_content"] == "IDS_ONLY" and body["page_size"] == 1000
               for body in bodies)
    assert read_tsv(out / "taxa.tsv") == [["Homo sapiens", "2000", "2000", "0", "2", ""],
                                          ["7227", "1000", "1000", "0", "1", ""]]
    assert read_tsv(out / "missing_taxa.tsv") == []
    assert "3000 GeneIDs listed for 2 of 2 taxa" in stderr
    assert run_cli("verify", str(out)).returncode == 0
    table = tmp_path / "genes.tsv"
    exported = invoke_cli("export", str(out), "--to", str(table), "--fields", "gene-id,tax-id")
    assert exported.returncode == 0, exported.stderr.decode()
    rows = read_tsv(table)
    assert len(rows) == 3000 and {row[1] for row in rows} == {"9606", "7227"}


async def test_the_library_fetches_a_taxon(emulator: EmulatorThread, tmp_path: Path) -> None:
    import bulkgene

    config = bulkgene.DownloadConfig(
        inputs=(), out_dir=tmp_path / "fly", taxa=bulkgene.TaxonSelection(("fruit fly",)),
        network=bulkgene.NetworkSpec(base_url=emulator.base_url, requests_per_second=1000.0),
        progress_interval_s=0)
    summary = await bulkgene.download(config)
    assert (summary.requested, summary.found, summary.missing) == (1000, 1000, 0)
    assert set(gene_ids_written(tmp_path / "fly")) == set(taxon_genes(emulator, "7227"))


@pytest.mark.parametrize("name", ["9606", "human", "HOMO SAPIENS"])
def test_names_and_tax_ids_give_the_same_genes(emulator: EmulatorThread, tmp_path: Path,
                                               name: str) -> None:
    out = tmp_path / "out"
    code, stderr = fetch(emulator, out, "--taxon", name, "--returned-content", "IDS_ONLY")
    assert code == 0, stderr
    assert set(gene_ids_written(out)) == set(taxon_genes(emulator, "9606"))


def test_a_taxa_file_with_an_unknown_taxon_fetches_the_rest_and_reports_it(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    taxa_file = tmp_path / "organisms.txt"
    taxa_file.write_text("# organisms of the study\nzebrafish\n\nNonesuch major\t(typo)\n"
                         "7227\nzebrafish\n")
    out = tmp_path / "out"
    code, stderr = fetch(emulator, out, "--taxa-file", str(taxa_file))
    assert code == 0, stderr
    wanted = [*taxon_genes(emulator, "7955"), *taxon_genes(emulator, "7227")]
    assert_complete_output(out, expected_for(emulator.state.universe, wanted))
    rows = read_tsv(out / "missing_taxa.tsv")
    assert [row[:2] for row in rows] == [["Nonesuch major", "NOTHING_FOUND"]]
    assert "taxon 'Nonesuch major' gave no GeneID: NOTHING_FOUND" in stderr
    assert [row[0] for row in read_tsv(out / "taxa.tsv")] == ["zebrafish", "Nonesuch major",
                                                             "7227"], "each taxon once"


def test_when_no_taxon_is_known_it_is_an_error_not_done(emulator: EmulatorThread,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stderr = fetch(emulator, out, "--taxon", "Nonesuch major", "--taxon", "Mammalia")
    assert code == 1
    assert "no taxon gave any GeneID" in stderr and "NOTHING_FOUND" in stderr
    assert "'Mammalia': ABOVE_SPECIES_TAXON" in stderr and "--include-subtree" in stderr
    assert not (out / "checkpoint.json").exists() and not (out / "summary.json").exists()
    assert len(read_tsv(out / "missing_taxa.tsv")) == 2


def test_above_species_with_the_subtree_takes_every_species_below(emulator: EmulatorThread,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stderr = fetch(emulator, out, "--taxon", "Mammalia", "--include-subtree",
                         "--returned-content", "IDS_ONLY")
    assert code == 0, stderr
    assert set(gene_ids_written(out)) == {*taxon_genes(emulator, "9606"),
                                          *taxon_genes(emulator, "10090")}
    assert "is above species: its list holds the genes of every taxon below it, 3500" in stderr
    assert listing_requests(emulator.state.arrivals())[0]["tax_search_subtree"] is True


def test_gene_types_filter_the_list(emulator: EmulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stderr = fetch(emulator, out, "--taxon", "human", "--gene-type", "PSEUDO",
                         "--gene-type", "tRNA")
    assert code == 0, stderr
    types = {record["gene"]["type"] for record in read_records(out)}
    assert types == {"PSEUDO", "tRNA"}
    assert set(gene_ids_written(out)) == set(taxon_genes(emulator, "9606",
                                                         types=("PSEUDO", "tRNA")))


def test_an_id_file_and_a_taxon_take_the_union(emulator: EmulatorThread, tmp_path: Path) -> None:
    fly = taxon_genes(emulator, "7227")
    ids = [7157, 672, *fly[:10], 5, 6]
    source = write_ids(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    code, stderr = fetch(emulator, out, str(source), "--taxon", "7227")
    assert code == 0, stderr
    assert_complete_output(out, expected_for(emulator.state.universe, [*ids, *fly]))
    summary = read_summary(out)
    assert summary["duplicates"] == 10, "the fly genes named in both are fetched once"


def test_a_re_run_neither_lists_nor_fetches_again(emulator: EmulatorThread,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert fetch(emulator, out, "--taxon", "7227")[0] == 0
    before = len(served(emulator.state.arrivals()))
    code, stderr = fetch(emulator, out, "--taxon", "7227")
    assert code == 0, stderr
    assert len(served(emulator.state.arrivals())) == before, "the list is fixed, the run done"


def test_other_taxa_into_a_finished_directory_are_refused(emulator: EmulatorThread,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert fetch(emulator, out, "--taxon", "7227")[0] == 0
    code, stderr = fetch(emulator, out, "--taxon", "7955")
    assert code == 1 and "taxa: was ['7227'], now ['7955']" in stderr, stderr
    code, stderr = fetch(emulator, out, "--taxon", "7955", "--restart")
    assert code == 0, stderr
    assert set(gene_ids_written(out)) == set(taxon_genes(emulator, "7955"))
    moved = list(tmp_path.glob("out.restarted-*"))
    assert len(moved) == 1 and (moved[0] / "taxa" / "list.json").exists()


def test_dry_run_counts_genes_by_type_and_writes_nothing(emulator: EmulatorThread,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke_cli("fetch", "--taxon", "human", "--taxon", "Nonesuch major", "--out",
                        str(out), "--dry-run", "--rate", "100", env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("taxon 'human': 2000 genes to fetch; NCBI's counts by type: "
                               "PROTEIN_CODING ")
    assert lines[1].startswith("taxon 'Nonesuch major': no gene to fetch (NOTHING_FOUND")
    assert lines[2].startswith("taxa: 2000 GeneIDs at most")
    assert lines[3].startswith("time: about 0 s at 100 requests/s; disk: about 10 MB")
    assert "4 requests were sent to count; nothing was written" in lines[3]
    assert not out.exists()
    paths = [a.path for a in served(emulator.state.arrivals())]
    assert paths.count("/datasets/v2/gene/taxon/counts") == 2


def test_taxon_options_need_a_taxon_and_fetch_needs_an_input(emulator: EmulatorThread,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stderr = fetch(emulator, out, "--gene-type", "PSEUDO")
    assert code == 2 and "apply to --taxon or --taxa-file" in stderr
    code, stderr = fetch(emulator, out)
    assert code == 2 and "--taxon" in stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    code, stderr = fetch(emulator, out, "--taxa-file", str(empty))
    assert code == 2 and "names no taxon" in stderr


def _chain_pages(out: Path) -> int:
    """Pages committed by every chain of the listing (a big taxon's parts included)."""
    pages = 0
    for path in (out / "taxa").glob("chain-*.json"):
        try:
            pages += int(orjson.loads(path.read_bytes())["pages"])
        except (OSError, ValueError, KeyError):
            continue  # being replaced: counted at the next look
    return pages


def clean_pages(emulator: EmulatorThread, taxon: str) -> int:
    """The pages a listing of ``taxon`` takes without a kill: page 1, then one chain per gene
    type (a type with no gene answers one empty page)."""
    universe = emulator.state.universe
    found = universe.taxa.find(taxon)
    assert found is not None
    return 1 + sum(max(1, -(-len(universe.taxon_genes(found, types=(gene_type,))) // 1000))
                   for gene_type in GENE_TYPES)


def ask(body: dict[str, object]) -> tuple[object, object]:
    """A listing request by what it asks: its gene types and its page token."""
    return str(body.get("types")), body.get("page_token")


def _committed(out: Path) -> int:
    state = ckpt.load(out)
    return state.committed_batches if state else 0


def _kill_when(process: subprocess.Popen[bytes], reached: int, measure: Callable[[], int],
               rng: random.Random) -> None:
    """SIGKILL ``process`` a random moment after ``measure()`` reached ``reached``."""
    deadline = time.monotonic() + 120  # a hang guard only: progress is what is waited for
    while measure() < reached:
        assert process.poll() is None, f"the run exited ({process.returncode}) before its kill"
        assert time.monotonic() < deadline, f"no progress past {measure()}"
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.05))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _killed_then_finished(emulator: EmulatorThread, out: Path, args: list[str],
                          pages: int, batches: int, listing_kills: int, fetch_kills: int,
                          seed: int) -> int:
    """Kill the run ``listing_kills`` times while it lists and ``fetch_kills`` times while it
    fetches (each after a little more observed progress), then run it to the end; the number
    of kills that landed while listing."""
    env = cli_env(emulator.base_url)
    rng = random.Random(seed)
    for _ in range(listing_kills):
        process = subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        # two pages at least (a re-run that listed from page 1 again would show), and never
        # near the end: the parts' pages land several at once
        target = min(pages * 3 // 4, _chain_pages(out) + rng.randint(2, max(2, pages // 8)))
        _kill_when(process, target, lambda: _chain_pages(out), rng)
        assert process.returncode == -signal.SIGKILL
        assert not (out / "taxa" / "list.json").exists(), "killed while listing"
    for _ in range(fetch_kills):
        process = subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        target = min(batches - 1, _committed(out) + rng.randint(1, max(1, batches // 8)))
        _kill_when(process, target, lambda: _committed(out), rng)
        assert process.returncode == -signal.SIGKILL
    # the pace is no part of the run's identity: the finishing run may go fast
    rate_at = args.index("--rate") + 1
    final = [*args[:rate_at], "400", *args[rate_at + 1:]]
    for _ in range(3):
        result = subprocess.run(cli_command(*final), env=env, capture_output=True, timeout=600,
                                check=False)
        if result.returncode == 0:
            return listing_kills
    raise AssertionError(result.stderr.decode())


@pytest.mark.slow
def test_killed_while_listing_and_while_fetching_it_resumes_exactly(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.01)
    out = tmp_path / "out"
    strain = "Escherichia coli str. K-12 substr. MG1655"  # 4300 genes: listed in parts
    pages = clean_pages(emulator, strain)
    args = ["fetch", "--taxon", strain, "--out", str(out), "--rate", "8", "--batch-size", "100",
            "--returned-content", "IDS_ONLY"]
    kills = _killed_then_finished(emulator, out, args, pages=pages, batches=43,
                                  listing_kills=1, fetch_kills=1, seed=24)
    genes = taxon_genes(emulator, strain)
    assert_complete_output(out, expected_for(emulator.state.universe, genes))
    asks = Counter(ask(body) for body in listing_requests(emulator.state.arrivals()))
    assert len(asks) == pages, "every page of the listing asked for"
    assert asks[ask({})] == 1, "page 1 once: the re-run went on from what was committed"
    # a kill loses at most the pages in flight (13 gene types side by side at most)
    assert sum(asks.values()) - pages <= 13 * kills
    assert run_cli("verify", str(out)).returncode == 0


@pytest.mark.slow
def test_sigterm_while_listing_exits_75_and_the_re_run_goes_on(make_emulator: EmulatorFactory,
                                                              tmp_path: Path) -> None:
    emulator = make_emulator()
    out = tmp_path / "out"
    strain = "Escherichia coli str. K-12 substr. MG1655"
    args = ["fetch", "--taxon", strain, "--out", str(out), "--rate", "4",
            "--returned-content", "IDS_ONLY"]
    env = cli_env(emulator.base_url)
    process = subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _chain_pages(out) < 2:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr.decode()
    assert "interrupted while listing" in stderr.decode()
    assert 2 <= _chain_pages(out) < clean_pages(emulator, strain)
    assert not (out / "checkpoint.json").exists()
    status = run_cli("status", str(out))
    assert status.returncode == 0, status.stderr.decode()
    assert re.search(r"interrupted while listing the taxa's GeneIDs, before anything was "
                     r"fetched \(\d+ so far of about 4300, 0 of 1 taxa done\): re-run",
                     status.stdout.decode()), status.stdout.decode()
    result = run_cli(*args[:5], "--returned-content", "IDS_ONLY", env=env)  # at full pace
    assert result.returncode == 0, result.stderr.decode()
    assert set(gene_ids_written(out)) == set(taxon_genes(emulator, strain))
    asks = Counter(ask(body) for body in listing_requests(emulator.state.arrivals()))
    assert asks[ask({})] == 1, "page 1 once: the re-run went on from what was committed"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_100_000_gene_taxon_killed_at_random_is_fetched_exactly(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.005, taxon_page_overlap=3)
    out = tmp_path / "out"
    args = ["fetch", "--taxon", "Triticum aestivum", "--out", str(out), "--rate", "40",
            "--endpoint", "dataset-report", "--compress", "gzip"]
    pages = clean_pages(emulator, "wheat")
    kills = _killed_then_finished(emulator, out, args, pages=pages, batches=100,
                                  listing_kills=6, fetch_kills=6, seed=100_000)
    genes = taxon_genes(emulator, "wheat")
    assert len(genes) == 100_000
    assert_complete_output(out, expected_for(emulator.state.universe, genes))
    assert {record["gene"]["tax_id"] for record in read_records(out)} == {"4565"}
    rows = read_tsv(out / "taxa.tsv")
    assert rows[0][:3] == ["Triticum aestivum", "100000", "100000"]
    asks = Counter(ask(body) for body in listing_requests(emulator.state.arrivals()))
    assert asks[ask({})] == 1, "page 1 once: every re-run went on from what was committed"
    assert sum(asks.values()) - len(asks) <= 13 * kills, "a kill loses the pages in flight"
    # each chain's pages after its first repeat 3 GeneIDs of the page before: dropped, counted
    assert int(rows[0][3]) == 3 * (int(rows[0][4]) - (1 + len(GENE_TYPES)))
    assert run_cli("verify", str(out)).returncode == 0


@pytest.mark.slow
def test_an_array_lists_once_and_its_tasks_share_the_list(make_emulator: EmulatorFactory,
                                                          tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.02)
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    processes = []
    for task in range(3):
        task_env = {**env, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "3",
                    "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_JOB_ID": "7"}
        processes.append(subprocess.Popen(
            cli_command("fetch", "--taxon", "Escherichia coli", "--include-subtree", "--out",
                        str(out), "--split", "slurm", "--batch-size", "200",
                        "--returned-content", "IDS_ONLY", "--rate", "300"),
            env=task_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
    genes = taxon_genes(emulator, "562", subtree=True)
    written: list[int] = []
    for task_dir in sorted(out.glob("task-*")):
        written.extend(gene_ids_written(task_dir).elements())
    assert sorted(written) == sorted(genes), "every gene once across the tasks"
    asks = Counter(ask(body) for body in listing_requests(emulator.state.arrivals()))
    assert set(asks.values()) == {1}, "one listing for the three tasks"
    assert (out / "taxa" / "list.json").exists() and not (out / "task-0000" / "taxa").exists()
    status = run_cli("status", str(out))
    assert status.returncode == 0, status.stderr.decode()
    assert run_cli("verify", str(out)).returncode == 0


def _fly_changes(emulator: EmulatorThread, left: int, new: int) -> tuple[list[int], list[int]]:
    """NCBI's fly list changes: its first ``left`` genes go, ``new`` genes come after its last;
    (the GeneIDs gone, the GeneIDs new)."""
    universe = emulator.state.universe
    old = taxon_genes(emulator, "7227")
    fly = universe.taxa.find("7227")
    assert fly is not None
    taxa = tuple(dataclasses.replace(t, gene_base=fly.gene_base + fly.gene_step * left,
                                     gene_count=fly.gene_count - left + new)
                 if t.tax_id == 7227 else t for t in universe.taxa.taxa)
    universe.taxa = TaxonTree(taxa)
    universe._listings.clear()
    now = taxon_genes(emulator, "7227")
    return sorted(set(old) - set(now)), sorted(set(now) - set(old))


def test_refresh_list_fetches_only_new_ids_and_reports_the_ones_that_left(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert fetch(emulator, out, "--taxon", "7227")[0] == 0
    old = taxon_genes(emulator, "7227")
    gone, new = _fly_changes(emulator, left=50, new=150)
    emulator.state.reset()
    code, stderr = fetch(emulator, out, "--taxon", "7227", "--refresh-list")
    assert code == 0, stderr
    assert "refresh 1: 150 GeneIDs NCBI lists now are new to the run" in stderr
    written = gene_ids_written(out)
    assert set(written) == {*old, *new} and max(written.values()) == 1, "the gone stay"
    summary = read_summary(out)
    assert (summary["requested"], summary["found"], summary["missing"]) == (1150, 1150, 0)
    fetched = [a for a in served(emulator.state.arrivals()) if a.path.startswith(
        "/datasets/v2/gene/id/")]
    assert sum(a.n_ids for a in fetched) == 150, "only the new GeneIDs are fetched"
    assert read_tsv(out / "taxa_left.tsv") == [[str(gene_id), "1"] for gene_id in gone]
    assert read_tsv(out / "taxa.tsv")[0][:3] == ["7227", "1100", "1100"]
    assert run_cli("verify", str(out)).returncode == 0
    # the same again: listed again, nothing new, nothing more gone
    code, stderr = fetch(emulator, out, "--taxon", "7227", "--refresh-list")
    assert code == 0 and "refresh 2: 0 GeneIDs NCBI lists now are new to the run" in stderr
    assert len(read_tsv(out / "taxa_left.tsv")) == 50
    # without --refresh-list the grown run is simply done
    before = len(served(emulator.state.arrivals()))
    assert fetch(emulator, out, "--taxon", "7227")[0] == 0
    assert len(served(emulator.state.arrivals())) == before


@pytest.mark.slow
def test_a_refresh_killed_while_fetching_goes_on_without_listing_again(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator(latency_s=0.01)
    out = tmp_path / "out"
    env = cli_env(emulator.base_url)
    first = run_cli("fetch", "--taxon", "7227", "--out", str(out), "--returned-content",
                    "IDS_ONLY", "--batch-size", "100", env=env)
    assert first.returncode == 0, first.stderr.decode()
    old = taxon_genes(emulator, "7227")
    _, new = _fly_changes(emulator, left=0, new=4000)
    args = ["fetch", "--taxon", "7227", "--out", str(out), "--refresh-list", "--rate", "8",
            "--batch-size", "100", "--returned-content", "IDS_ONLY"]
    process = subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    committed = _committed(out)
    _kill_when(process, committed + 3, lambda: _committed(out), random.Random(5))
    assert process.returncode == -signal.SIGKILL
    listed = len(listing_requests(emulator.state.arrivals()))
    result = run_cli(*args[:-7], "--refresh-list", "--batch-size", "100",
                     "--returned-content", "IDS_ONLY", env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert "going on with them" in result.stderr.decode()
    assert len(listing_requests(emulator.state.arrivals())) == listed, "not listed again"
    assert set(gene_ids_written(out)) == {*old, *new}
    assert max(gene_ids_written(out).values()) == 1
    assert not (out / "taxa" / "refresh-0002").exists()
