"""The emulator's taxon routes: NCBI's schema, the recorded paging quirks, names, the knobs."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from helpers import EmulatorFactory
from test_emulator import contained, get, validate_page

from bulkgene.testing import EmulatorThread, GeneUniverse
from bulkgene.testing.universe import Content

models = pytest.importorskip("ncbi.datasets.openapi.models")


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(  # noqa: S310 - loopback emulator
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
        method="POST")
    try:
        with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback emulator
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def walk(emulator: EmulatorThread, route: str, taxon: str, page_size: int = 100,
         **params: Any) -> tuple[list[int], list[dict[str, Any]]]:
    """Every GeneID of ``taxon`` page by page through ``route`` ("get", "deprecated",
    "post"), and the pages themselves."""
    ids: list[int] = []
    pages: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        if route == "post":
            body = {"taxon": taxon, "returned_content": "IDS_ONLY", "page_size": page_size,
                    **params}
            if token:
                body["page_token"] = token
            status, _, raw = post(f"{emulator.base_url}/gene/dataset_report", body)
        else:
            query = {"returned_content": "IDS_ONLY", "page_size": page_size, **params}
            if token:
                query["page_token"] = token
            suffix = "/dataset_report" if route == "get" else ""
            path = urllib.parse.quote(taxon, safe="")
            status, _, raw = get(f"{emulator.base_url}/gene/taxon/{path}{suffix}?"
                                 f"{urllib.parse.urlencode(query, doseq=True)}")
        assert status == 200, raw
        page = json.loads(raw)
        pages.append(page)
        ids.extend(int(report["gene"]["gene_id"]) for report in page.get("reports", []))
        token = page.get("next_page_token")
        if token is None:
            return ids, pages


@pytest.mark.parametrize("route", ["get", "deprecated", "post"])
def test_a_taxon_pages_through_every_route_in_geneid_order(emulator: EmulatorThread,
                                                           route: str) -> None:
    ids, pages = walk(emulator, route, "9606", page_size=300)
    universe = emulator.state.universe
    human = universe.taxa.find("9606")
    assert human is not None
    assert ids == universe.taxon_genes(human) and len(ids) == 2000
    assert {7157, 672, 3105} <= set(ids), "the real records are human genes"
    assert pages[0]["total_count"] == 2000
    assert all("total_count" not in page for page in pages[1:]), "total_count on page 1 only"
    assert "next_page_token" not in pages[-1]
    for page in pages:
        validate_page(json.dumps(page).encode())


@pytest.mark.parametrize("name", ["9606", "human", "Homo sapiens", "HOMO SAPIENS"])
@pytest.mark.parametrize("route", ["get", "post"])
def test_names_and_ids_name_the_same_taxon(emulator: EmulatorThread, name: str,
                                           route: str) -> None:
    ids, _ = walk(emulator, route, name, page_size=1000)
    assert len(ids) == 2000 and ids[:3] == [672, 3105, 7157]


def test_an_unknown_taxon_is_answered_with_an_empty_object(emulator: EmulatorThread) -> None:
    assert get(f"{emulator.base_url}/gene/taxon/Nonesuch%20major/dataset_report")[2] == b"{}"
    assert post(f"{emulator.base_url}/gene/dataset_report", {"taxon": "999999999"})[2] == b"{}"
    assert get(f"{emulator.base_url}/gene/taxon/nonesuch/counts")[2] == b"{}"


@pytest.mark.parametrize("content", ["IDS_ONLY", "COUNTS_ONLY", "COMPLETE"])
def test_every_taxon_page_validates_against_ncbis_schema(emulator: EmulatorThread,
                                                         content: str) -> None:
    status, _, body = get(f"{emulator.base_url}/gene/taxon/7227/dataset_report?"
                          f"returned_content={content}&page_size=20")
    assert status == 200
    validate_page(body)
    page = json.loads(body)
    if content == "IDS_ONLY":
        assert page["reports"][0] == {"gene": {"gene_id": "31000003"}}
    if content == "COMPLETE":
        assert {report["gene"]["tax_id"] for report in page["reports"]} == {"7227"}
        assert {report["gene"]["taxname"] for report in page["reports"]} == {
            "Drosophila melanogaster"}


def test_counts_by_type_add_up_and_validate(emulator: EmulatorThread) -> None:
    for raw in (get(f"{emulator.base_url}/gene/taxon/human/counts")[2],
                post(f"{emulator.base_url}/gene/taxon/counts", {"taxon": "9606"})[2]):
        data = json.loads(raw)
        contained(data, models.V2GeneCountsByTaxonReply.from_dict(data).to_dict())
        assert sum(item["count"] for item in data["report"]) == 2000
    protein_coding = next(item["count"] for item in data["report"]
                          if item["gene_type"] == "PROTEIN_CODING")
    ids, _ = walk(emulator, "post", "9606", page_size=1000, types=["PROTEIN_CODING"])
    assert len(ids) == protein_coding
    universe = emulator.state.universe
    assert {universe.gene_type(gene_id) for gene_id in ids} == {"PROTEIN_CODING"}


def test_above_species_warns_and_needs_the_subtree(emulator: EmulatorThread) -> None:
    _, pages = walk(emulator, "get", "Mammalia")
    assert pages == [{"messages": [pages[0]["messages"][0]]}]
    assert pages[0]["messages"][0]["warning"]["gene_warning_code"] == "ABOVE_SPECIES_TAXON"
    validate_page(json.dumps(pages[0]).encode())
    ids, pages = walk(emulator, "post", "40674", page_size=1000, tax_search_subtree=True)
    assert pages[0]["messages"][0]["warning"]["gene_warning_code"] == "ABOVE_SPECIES_TAXON"
    assert len(ids) == 2000 + 1500 == pages[0]["total_count"], "human and mouse"


def test_a_species_whose_genes_sit_at_a_strain_says_so(emulator: EmulatorThread) -> None:
    _, pages = walk(emulator, "get", "Escherichia coli")
    assert pages[0]["messages"][0]["warning"]["gene_warning_code"] == "NO_GENE_ANNOTATION_FOUND"
    assert "reports" not in pages[0]
    ids, _ = walk(emulator, "post", "562", page_size=1000, tax_search_subtree=True)
    strain, _ = walk(emulator, "post", "Escherichia coli str. K-12 substr. MG1655",
                     page_size=1000)
    assert ids == sorted(strain) and len(ids) == 4300 and 944742 in ids


def test_a_bad_or_foreign_token_is_a_500_as_recorded(emulator: EmulatorThread) -> None:
    _, pages = walk(emulator, "get", "7227", page_size=999)
    token = pages[0]["next_page_token"]
    status, headers, body = get(f"{emulator.base_url}/gene/taxon/9606/dataset_report?"
                                f"returned_content=IDS_ONLY&page_size=999&page_token={token}")
    assert status == 500 and headers.get("Connection") == "close"
    assert json.loads(body)["code"] == 500
    status, _, _ = post(f"{emulator.base_url}/gene/dataset_report",
                        {"taxon": "7227", "returned_content": "IDS_ONLY", "page_token": "x"})
    assert status == 500


def test_the_overlap_knob_repeats_ids_across_pages(make_emulator: EmulatorFactory) -> None:
    emulator = make_emulator(taxon_page_overlap=7)
    ids, pages = walk(emulator, "post", "7955", page_size=100)
    assert pages[0]["total_count"] == 1200 == len(set(ids))
    assert len(ids) - len(set(ids)) == 7 * (len(pages) - 1)
    assert ids[100:107] == ids[93:100], "page 2 starts with the last 7 of page 1"


def test_taxon_answers_carry_the_limit_headers_and_count(make_emulator: EmulatorFactory) -> None:
    emulator = make_emulator(rate_limit=True)
    emulator.state.clock = lambda: 1000.0
    statuses = [post(f"{emulator.base_url}/gene/dataset_report",
                     {"taxon": "human", "returned_content": "IDS_ONLY"}) for _ in range(6)]
    assert [status for status, _, _ in statuses] == [200] * 5 + [429]
    assert [headers["X-RateLimit-Remaining"] for _, headers, _ in statuses[:5]] == [
        "4", "3", "2", "1", "0"]
    logged = emulator.state.arrivals()
    assert all(json.loads(a.query)["taxon"] == "human" for a in logged)


def test_a_retired_taxon_route_says_so(make_emulator: EmulatorFactory) -> None:
    emulator = make_emulator(retired_endpoints=frozenset({"gene_reports_by_taxon"}))
    status, _, body = get(f"{emulator.base_url}/gene/taxon/9606")
    assert status == 404 and b"retired" in body
    assert get(f"{emulator.base_url}/gene/taxon/9606/dataset_report")[0] == 200


def test_the_universe_builds_no_taxon_list_until_asked(emulator: EmulatorThread) -> None:
    universe = emulator.state.universe
    status, _, _ = get(f"{emulator.base_url}/gene/id/120000007,7157")
    assert status == 200 and not universe._listings, "GeneID requests build no listing"
    wheat = universe.taxa.find("wheat")
    assert wheat is not None and universe.taxa.owner(120_000_007 + 7 * 99_999) is wheat
    assert universe.taxa.owner(120_000_007 + 7 * 100_000) is None


def test_taxon_genes_are_current_and_their_reports_name_the_taxon() -> None:
    universe = GeneUniverse(unknown_per_mille=1000)  # every other GeneID unknown
    wheat = universe.taxa.find("4565")
    assert wheat is not None
    genes = universe.taxon_genes(wheat)
    assert len(genes) == 100_000
    assert all(universe.fate(gene_id).value == "found" for gene_id in genes[::97])
    report = json.loads(universe.gene_bytes(genes[-1], Content.COMPLETE))
    assert (report["tax_id"], report["taxname"], report["common_name"]) == (
        "4565", "Triticum aestivum", "bread wheat")
    assert report["type"] == universe.gene_type(genes[-1])
