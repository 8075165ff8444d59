"""Listing a taxon's GeneIDs: every decision of run/enumeration.py on a scripted server and a
virtual clock (no sockets, no real time), and what lands in the directory."""

# page tokens in these tests are opaque strings, not secrets
# ruff: noqa: S105, S106

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pytest
from scripted_taxa import (
    TaxonServer,
    config_for,
    inline,
    page,
    run_listing,
    status,
)

from bulkgene.config import GENE_TYPES, DownloadConfig, TaxonSelection
from bulkgene.errors import AuthError, InputError, Interrupted, ListingIncomplete, StateError
from bulkgene.input.taxon_list import TaxonList
from bulkgene.net.attempt import HttpRequest, Reply
from bulkgene.net.exchange import Exchanger
from bulkgene.run.enumeration import list_taxa
from bulkgene.run.taxa import TaxonCount, count_taxa

HUMAN = list(range(5000, 7500))  # 2500 GeneIDs: three pages of 1000


def listed(server: TaxonServer, config: DownloadConfig,
           stop: asyncio.Event | None = None) -> TaxonList:
    async def body(exchanger: Exchanger) -> TaxonList:
        return await list_taxa(exchanger, config, config.out_dir, stop, offload=inline)

    config.out_dir.mkdir(parents=True, exist_ok=True)
    return run_listing(server, config, body)[0]


def genes_txt(config: DownloadConfig) -> list[int]:
    return [int(line) for line in (config.out_dir / "taxa" / "genes.txt").read_text().split()]


def tsv_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


def test_a_taxon_is_listed_in_pages_of_1000_following_the_tokens(tmp_path: Path) -> None:
    server = TaxonServer({"9606": HUMAN})
    config = config_for(tmp_path, "9606", gene_types=("PROTEIN_CODING",), include_subtree=True)
    done = listed(server, config)
    assert [asked.body for asked in server.asked] == [
        {"taxon": "9606", "returned_content": "IDS_ONLY", "page_size": 1000,
         "types": ["PROTEIN_CODING"], "tax_search_subtree": True},
        {"taxon": "9606", "returned_content": "IDS_ONLY", "page_size": 1000,
         "types": ["PROTEIN_CODING"], "tax_search_subtree": True, "page_token": "9606@1000#1"},
        {"taxon": "9606", "returned_content": "IDS_ONLY", "page_size": 1000,
         "types": ["PROTEIN_CODING"], "tax_search_subtree": True, "page_token": "9606@2000#1"},
    ]
    assert genes_txt(config) == HUMAN and done.gene_ids == 2500
    assert tsv_rows(config.out_dir / "taxa.tsv") == [["9606", "2500", "2500", "0", "3", ""]]
    assert tsv_rows(config.out_dir / "missing_taxa.tsv") == []
    assert (config.out_dir / "taxa" / "list.json").exists()


def test_a_complete_list_is_read_back_without_a_request(tmp_path: Path) -> None:
    config = config_for(tmp_path, "9606")
    listed(TaxonServer({"9606": HUMAN}), config)
    again = TaxonServer({"9606": [1, 2, 3]})  # NCBI's list changed since: the run's list doesn't
    done = listed(again, config)
    assert again.asked == [] and done.gene_ids == 2500 and genes_txt(config) == HUMAN


def test_a_stopped_listing_goes_on_from_the_last_committed_token(tmp_path: Path) -> None:
    stop = asyncio.Event()
    server = TaxonServer({"9606": HUMAN},
                         on_ask=lambda asked: stop.set() if asked.offset == 1000 else None)
    config = config_for(tmp_path, "9606")
    with pytest.raises(Interrupted, match="run the same command again"):
        listed(server, config, stop)
    assert [asked.offset for asked in server.asked] == [None, 1000]
    assert not (config.out_dir / "taxa" / "list.json").exists()
    resumed = TaxonServer({"9606": HUMAN})
    listed(resumed, config)
    assert [asked.token for asked in resumed.asked] == ["9606@2000#1"], "page 3 only"
    assert genes_txt(config) == HUMAN


def test_a_token_refused_on_resume_starts_the_taxon_over(tmp_path: Path) -> None:
    stop = asyncio.Event()
    config = config_for(tmp_path, "9606")
    with pytest.raises(Interrupted):
        listed(TaxonServer({"9606": HUMAN}, on_ask=lambda asked: stop.set()), config, stop)
    resumed = TaxonServer({"9606": HUMAN}, generation=5, stale_below=5)  # restarted since
    listed(resumed, config)
    # the committed token twice (token_attempts), then from page 1 with fresh tokens
    assert [asked.token for asked in resumed.asked] == [
        "9606@1000#1", "9606@1000#1", None, "9606@1000#6", "9606@2000#6"]
    assert genes_txt(config) == HUMAN
    state = orjson.loads((config.out_dir / "taxa" / "chain-0000.json").read_bytes())
    assert state["restarts"] == 1 and state["pages"] == 3


def test_a_token_refused_in_the_middle_starts_over_then_gives_up(tmp_path: Path) -> None:
    server = TaxonServer({"9606": HUMAN}, refuse_offsets={2000})
    config = config_for(tmp_path, "9606")
    with pytest.raises(ListingIncomplete, match="'9606': its page chain kept breaking"):
        listed(server, config)
    assert sum(1 for asked in server.asked if asked.token is None) == 4, "1 + 3 new starts"
    assert not (config.out_dir / "taxa" / "genes.txt").exists()


def test_duplicates_across_pages_are_dropped_and_counted(tmp_path: Path) -> None:
    server = TaxonServer({"9606": HUMAN}, overlap=10)
    config = config_for(tmp_path, "9606")
    done = listed(server, config)
    assert genes_txt(config) == HUMAN, "each GeneID once, in the pages' order"
    result = done.taxa[0]
    assert (result.gene_ids, result.total_count, result.duplicates, result.short) == (
        2500, 2500, 20, False)
    assert tsv_rows(config.out_dir / "taxa.tsv")[0][3] == "20"


def test_two_pages_of_nothing_new_in_a_row_do_not_cut_a_listing_short(tmp_path: Path) -> None:
    # the guard against a chain going round waits for three such pages: a list that shifted
    # under its pages twice over still ends where it ends, in one pass
    replies = [page(HUMAN[:1000], total=2500, token="t1"), page(HUMAN[:1000], token="t2"),
               page([], token="t3"), page(HUMAN[1000:2000], token="t4"), page(HUMAN[2000:])]
    server = TaxonServer({}, special={"9606": lambda asked: replies.pop(0)})
    config = config_for(tmp_path, "9606")
    done = listed(server, config)
    assert genes_txt(config) == HUMAN and not done.taxa[0].short
    assert [asked.token for asked in server.asked] == [None, "t1", "t2", "t3", "t4"]


def test_pages_short_of_total_count_are_listed_again_then_kept_and_flagged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = TaxonServer({"9606": HUMAN}, short_by=3)
    config = config_for(tmp_path, "9606")
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        done = listed(server, config)
    assert sum(1 for asked in server.asked if asked.token is None) == 2, "listed twice"
    assert done.taxa[0].short and done.gene_ids == 2497
    assert genes_txt(config) == HUMAN[:-3]
    assert tsv_rows(config.out_dir / "taxa.tsv")[0][5] == "SHORT_OF_TOTAL_COUNT(2500)"
    assert "promised 2500 GeneIDs, its pages gave 2497" in caplog.text


def test_an_unknown_taxon_is_reported_and_the_others_listed(tmp_path: Path) -> None:
    server = TaxonServer({"9606": HUMAN[:10], "7227": [1, 2]})
    config = config_for(tmp_path, "9606", "Nonesuch major", "7227")
    done = listed(server, config)
    assert genes_txt(config) == [*HUMAN[:10], 1, 2]
    assert [result.gene_ids for result in done.taxa] == [10, 0, 2]
    assert tsv_rows(config.out_dir / "missing_taxa.tsv") == [
        ["Nonesuch major", "NOTHING_FOUND",
         "NCBI answered with no gene: an unknown tax ID or name, no genes annotated at exactly "
         "this taxon (try --include-subtree), or a taxonomy outage at NCBI"]]


def test_when_every_taxon_is_unknown_it_is_an_error_and_nothing_is_fixed(tmp_path: Path) -> None:
    config = config_for(tmp_path, "Nonesuch major", "Nonesuch minor")
    with pytest.raises(InputError, match=r"no taxon gave any GeneID.*'Nonesuch major': "
                       r"NOTHING_FOUND"):
        listed(TaxonServer({}), config)
    assert len(tsv_rows(config.out_dir / "missing_taxa.tsv")) == 2
    assert not (config.out_dir / "taxa" / "list.json").exists()
    later = TaxonServer({"Nonesuch major": [5]})  # an outage over: the next run asks again
    assert listed(later, config).gene_ids == 1 and len(later.asked) == 2


def test_unknown_taxa_beside_an_id_file_are_no_error(tmp_path: Path) -> None:
    config = config_for(tmp_path, "Nonesuch major", inputs=("ids.txt",))
    assert listed(TaxonServer({}), config).gene_ids == 0


def test_a_taxon_the_server_refuses_is_missing_with_its_words(tmp_path: Path) -> None:
    server = TaxonServer({"9606": [1]}, special={
        "bad/name": lambda asked: status(400, "Invalid argument provided: taxon.")})
    config = config_for(tmp_path, "9606", "bad/name")
    listed(server, config)
    assert tsv_rows(config.out_dir / "missing_taxa.tsv") == [
        ["bad/name", "REFUSED_BY_SERVER", "HTTP 400: Invalid argument provided: taxon."]]


def test_above_species_without_the_subtree_is_missing_with_ncbis_code_and_a_hint(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    warning = {"warning": {"gene_warning_code": "ABOVE_SPECIES_TAXON",
                           "message": "Mammalia is above the species level."}}
    server = TaxonServer({"9606": [1]}, special={
        "Mammalia": lambda asked: page([], messages=[warning])})
    config = config_for(tmp_path, "9606", "Mammalia")
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        listed(server, config)
    assert tsv_rows(config.out_dir / "missing_taxa.tsv") == [
        ["Mammalia", "ABOVE_SPECIES_TAXON", "Mammalia is above the species level."]]
    assert "add --include-subtree" in caplog.text


def test_above_species_with_the_subtree_is_listed_with_a_size_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    warning = {"warning": {"gene_warning_code": "ABOVE_SPECIES_TAXON", "message": "above"}}
    listing = list(range(1, 1501))
    replies = [page(listing[:1000], total=1500, token="t", messages=[warning]),
               page(listing[1000:])]
    server = TaxonServer({}, special={"Mammalia": lambda asked: replies.pop(0)})
    config = config_for(tmp_path, "Mammalia", include_subtree=True)
    with caplog.at_level(logging.WARNING, logger="bulkgene"):
        done = listed(server, config)
    assert done.gene_ids == 1500 and done.taxa[0].notices == [("ABOVE_SPECIES_TAXON", "above")]
    assert "above species: its list holds the genes of every taxon below it, 1500" in caplog.text
    assert tsv_rows(config.out_dir / "taxa.tsv")[0][5] == "ABOVE_SPECIES_TAXON"


def test_the_same_token_twice_starts_the_taxon_over(tmp_path: Path) -> None:
    replies = [page(HUMAN[:1000], total=2500, token="t1"), page(HUMAN[1000:2000], token="t1"),
               page(HUMAN[:1000], total=2500, token="t2"), page(HUMAN[1000:2000], token="t3"),
               page(HUMAN[2000:])]
    server = TaxonServer({}, special={"9606": lambda asked: replies.pop(0)})
    config = config_for(tmp_path, "9606")
    listed(server, config)
    assert [asked.token for asked in server.asked] == [None, "t1", None, "t2", "t3"]
    assert genes_txt(config) == HUMAN


def test_taxa_are_listed_concurrently(tmp_path: Path) -> None:
    server = TaxonServer({str(n): list(range(n * 10_000, n * 10_000 + 2500)) for n in (1, 2, 3)},
                         latency_s=1.0)
    config = config_for(tmp_path, "1", "2", "3")
    done = listed(server, config)
    assert done.gene_ids == 7500
    # three chains of three pages side by side: about 3 s of virtual time, not 9
    assert max(asked.at_s for asked in server.asked) < 3.0
    assert [asked.taxon for asked in server.asked[:3]] == ["1", "2", "3"]


def test_a_taxon_that_never_answers_fails_the_listing_after_the_others_commit(
        tmp_path: Path) -> None:
    server = TaxonServer({"9606": HUMAN}, special={"7227": lambda asked: status(503)})
    config = config_for(tmp_path, "9606", "7227")
    with pytest.raises(ListingIncomplete, match=r"'7227': gave up after 3 attempts; last: "
                       r"HTTP 503.*go on from there"):
        listed(server, config)
    state = orjson.loads((config.out_dir / "taxa" / "chain-0000.json").read_bytes())
    assert state["done"] and state["pages"] == 3
    server.special.clear()
    server.listings = {"9606": HUMAN, "7227": [1, 2]}
    server.asked.clear()
    listed(server, config)
    assert [asked.taxon for asked in server.asked] == ["7227"], "9606 is not listed again"


def test_a_bad_key_stops_every_chain_with_its_own_error(tmp_path: Path) -> None:
    server = TaxonServer({}, special={"9606": lambda asked: status(401, "Invalid API key.")})
    with pytest.raises(AuthError, match="rejected the API key"):
        listed(server, config_for(tmp_path, "9606"))


def test_reports_without_a_usable_geneid_are_skipped_and_counted(tmp_path: Path) -> None:
    body = orjson.dumps({"reports": [{"gene": {"gene_id": "12"}}, {"gene": {"gene_id": "x1"}},
                                     {"gene": {"gene_id": "99999999999"}}], "total_count": 1})
    server = TaxonServer({}, special={"9606": lambda asked: Reply(200, {}, body)})
    config = config_for(tmp_path, "9606")
    done = listed(server, config)
    assert genes_txt(config) == [12] and done.gene_ids == 1


def test_taxa_tsv_counts_the_values_skipped_as_no_geneid(tmp_path: Path) -> None:
    # what a GeneID is, as in an ID file (docs/input.md): ASCII digits, at most 10 of them,
    # 1..2147483647; leading zeros are read as the number ("00672" is 672, as in an ID file
    # and as NCBI's CLI parses it). The rest is skipped, and taxa.tsv says how many.
    skipped = ["0", "-5", "99999999999", "1e3", "\u0663", " 672", "672 ", "4294967297"]
    body = orjson.dumps({"reports": [{"gene": {"gene_id": value}}
                                     for value in ["00672", "7157", *skipped]],
                         "total_count": 10})
    server = TaxonServer({}, special={"9606": lambda asked: Reply(200, {}, body)})
    config = config_for(tmp_path, "9606")
    done = listed(server, config)
    assert tsv_rows(config.out_dir / "taxa.tsv") == [
        ["9606", "2", "10", "0", "1", "SHORT_OF_TOTAL_COUNT(10),UNUSABLE_GENE_IDS(8)"]]
    assert genes_txt(config) == [672, 7157] and done.taxa[0].unusable == len(skipped)


def test_another_selection_is_refused_once_the_list_is_complete(tmp_path: Path) -> None:
    config = config_for(tmp_path, "9606")
    listed(TaxonServer({"9606": HUMAN}), config)
    with pytest.raises(StateError, match=r"gene list of its taxa, made with other settings "
                                         r"\(taxa: was \['9606'\], now \['10090'\]\).*"
                                         r"--taxon 9606.*--restart"):
        listed(TaxonServer({"10090": [1]}), config_for(tmp_path, "10090"))


def test_an_unfinished_listing_with_other_settings_is_refused_not_mixed(tmp_path: Path
                                                                        ) -> None:
    stop = asyncio.Event()
    with pytest.raises(Interrupted):
        listed(TaxonServer({"9606": HUMAN}, on_ask=lambda asked: stop.set()),
               config_for(tmp_path, "9606"), stop)
    pseudo = config_for(tmp_path, "9606", gene_types=("PSEUDO",))
    with pytest.raises(StateError, match=r"interrupted.*gene_types: was none, now \['PSEUDO'\]"):
        listed(TaxonServer({"9606": HUMAN[:5]}), pseudo)
    elsewhere = config_for(tmp_path, "9606", base_url="http://other.test:8080/datasets/v2")
    with pytest.raises(StateError, match=r"server: was 'http://ncbi.test', now "
                                         r"'http://other.test:8080'"):
        listed(TaxonServer({"9606": HUMAN}), elsewhere)
    server = TaxonServer({"9606": HUMAN})
    assert listed(server, config_for(tmp_path, "9606")).gene_ids == len(HUMAN)
    assert server.asked[0].token is not None, "it went on from the page committed"


def test_taxa_listing_the_same_genes_are_fetched_once(tmp_path: Path) -> None:
    server = TaxonServer({"9606": HUMAN, "human": HUMAN, "Homo": [*HUMAN[:5], 1]})
    config = config_for(tmp_path, "9606", "human", "Homo")
    done = listed(server, config)
    assert genes_txt(config) == [*HUMAN, 1]
    assert done.shared == 2505 and done.gene_ids == 2501


def test_dry_run_counts_by_type_and_what_would_be_listed(tmp_path: Path) -> None:
    async def body(exchanger: Exchanger) -> list[TaxonCount]:
        return await count_taxa(exchanger, config)

    config = config_for(tmp_path, "9606", gene_types=("PSEUDO",))
    counts_body = orjson.dumps({"report": [{"gene_type": "PROTEIN_CODING", "count": 20},
                                           {"gene_type": "PSEUDO", "count": 7}]})
    class Counting(TaxonServer):
        async def __call__(self, request: HttpRequest) -> Reply:
            if request.url.endswith("/gene/taxon/counts"):
                request.on_sent()
                assert request.page.json_body == {"taxon": "9606"}
                return Reply(200, {}, counts_body)
            return await super().__call__(request)

    server = Counting({"9606": list(range(7))})
    (result,), _ = run_listing(server, config, body)
    assert result == TaxonCount("9606", [("PROTEIN_CODING", 20), ("PSEUDO", 7)], 7, [])
    assert server.asked[0].body["page_size"] == 1 and server.asked[0].body["types"] == ["PSEUDO"]


def test_a_selection_needs_a_taxon_and_checks_gene_types() -> None:
    from bulkgene.errors import ConfigError

    with pytest.raises(ConfigError, match="no taxon given"):
        TaxonSelection(())
    with pytest.raises(ConfigError, match=r"gene type.*'protein-coding' is not one of"):
        TaxonSelection(("9606",), ("protein-coding",))
    with pytest.raises(ConfigError, match="surrounding spaces"):
        TaxonSelection((" human",))


def test_a_stop_gives_the_page_in_flight_a_grace_then_cancels_it(tmp_path: Path) -> None:
    stop = asyncio.Event()
    server = TaxonServer({"9606": HUMAN}, hang_offsets={1000},
                         on_ask=lambda asked: stop.set() if asked.offset == 1000 else None)
    config = config_for(tmp_path, "9606", shutdown_grace_s=5.0)
    with pytest.raises(Interrupted):
        listed(server, config, stop)
    state = orjson.loads((config.out_dir / "taxa" / "chain-0000.json").read_bytes())
    assert state["pages"] == 1 and state["token"] == "9606@1000#1"


WHEAT = list(range(120_000, 126_000))  # 6000 GeneIDs, three gene types
TYPES = {gene_id: ("PROTEIN_CODING", "ncRNA", "PSEUDO")[gene_id % 3] for gene_id in WHEAT}


def test_a_big_taxon_is_listed_in_parts_by_gene_type_side_by_side(tmp_path: Path) -> None:
    server = TaxonServer({"4565": WHEAT}, types_of=TYPES, latency_s=1.0)
    config = config_for(tmp_path, "4565")
    done = listed(server, config)
    assert sorted(genes_txt(config)) == WHEAT
    typed = [asked for asked in server.asked if "types" in asked.body]
    assert {tuple(asked.body["types"]) for asked in typed} == {(t,) for t in GENE_TYPES}
    # one chain of 6 pages would take 6 round trips; page 1, then the parts' 2 pages each
    assert max(asked.at_s for asked in server.asked) < 4.0
    result = done.taxa[0]
    assert (result.gene_ids, result.total_count, result.pages) == (6000, 6000, 1 + 10 + 3 * 2)
    assert tsv_rows(config.out_dir / "taxa.tsv") == [["4565", "6000", "6000", "0", "17", ""]]


def test_gene_types_that_dont_add_up_fall_back_to_one_chain(tmp_path: Path) -> None:
    server = TaxonServer({"4565": WHEAT})  # ignores ``types``: every part is the whole
    config = config_for(tmp_path, "4565")
    done = listed(server, config)
    assert genes_txt(config) == WHEAT and done.taxa[0].gene_ids == 6000
    untyped = [asked.offset for asked in server.asked if "types" not in asked.body]
    assert untyped == [None, 1000, 2000, 3000, 4000, 5000], "on from page 2, not over"
    assert sum(1 for asked in server.asked if "types" in asked.body) == len(GENE_TYPES)


def test_a_split_listing_resumes_its_parts(tmp_path: Path) -> None:
    stop = asyncio.Event()
    server = TaxonServer({"4565": WHEAT}, types_of=TYPES,
                         on_ask=lambda asked: stop.set() if asked.offset == 1000 else None)
    config = config_for(tmp_path, "4565")
    with pytest.raises(Interrupted):
        listed(server, config, stop)
    resumed = TaxonServer({"4565": WHEAT}, types_of=TYPES)
    listed(resumed, config)
    assert sorted(genes_txt(config)) == WHEAT
    assert all(asked.token is not None for asked in resumed.asked), "no page 1 asked again"


def test_with_many_taxa_in_flight_a_big_one_stays_one_chain(tmp_path: Path) -> None:
    listings = {str(n): list(range(n * 10_000, n * 10_000 + 4000)) for n in range(1, 9)}
    server = TaxonServer(listings, types_of={g: "PSEUDO" for ids in listings.values()
                                             for g in ids})
    config = config_for(tmp_path, *listings)
    assert listed(server, config).gene_ids == 32_000
    assert not any("types" in asked.body for asked in server.asked)


def test_one_gene_type_asked_is_never_split(tmp_path: Path) -> None:
    server = TaxonServer({"4565": WHEAT}, types_of=TYPES)
    config = config_for(tmp_path, "4565", gene_types=("ncRNA",))
    assert listed(server, config).gene_ids == 2000
    assert {tuple(asked.body["types"]) for asked in server.asked} == {("ncRNA",)}
    assert len(server.asked) == 2


def test_a_long_listing_says_how_far_it_got_every_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = TaxonServer({"4565": WHEAT}, types_of={g: "PSEUDO" for g in WHEAT}, latency_s=2.0)
    config = config_for(tmp_path, "4565", gene_types=("PSEUDO",), progress_interval_s=0.5)
    with caplog.at_level(logging.INFO, logger="bulkgene"):
        listed(server, config)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("listing taxa")]
    # six pages of 2 s: a line at 10 s at the soonest, however small the run's interval
    assert lines == ["listing taxa: 0 of 1 done, 5000 GeneIDs listed of about 6000"]
