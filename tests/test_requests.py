"""Requests per endpoint from one field table, and GET packing up to the URL budget."""

from __future__ import annotations

import itertools
import random

import pytest

from bulkgene.config import ApiQuery
from bulkgene.errors import ConfigError
from bulkgene.ncbi.requests import MAX_PATH_BYTES, ids_path, pack, page_request


@pytest.mark.parametrize("endpoint", ["gene-id", "gene-id-report"])
def test_packing_sends_every_id_once_in_order_and_under_the_budget(endpoint: str) -> None:
    rng = random.Random(7)
    ids = tuple(rng.randrange(10 ** (d - 1), 10 ** d) for d in rng.choices(range(5, 10), k=1000))
    parts = pack(endpoint, ids)
    assert tuple(gene_id for part in parts for gene_id in part) == ids
    assert all(len(ids_path(endpoint, part)) <= MAX_PATH_BYTES for part in parts)
    # greedy: no part could have taken the next part's first ID
    for part, following in itertools.pairwise(parts):
        assert len(ids_path(endpoint, (*part, following[0]))) > MAX_PATH_BYTES


def test_nine_digit_ids_fill_a_request_to_about_780() -> None:
    ids = tuple(range(100_000_000, 100_001_000))
    parts = pack("gene-id", ids)
    assert [len(p) for p in parts] == [779, 221]


def test_post_takes_the_whole_batch_in_one_request() -> None:
    ids = tuple(range(100_000_000, 100_001_000))
    assert pack("dataset-report", ids) == [ids]


def test_the_three_endpoints_carry_the_same_query() -> None:
    query = ApiQuery(returned_content="IDS_ONLY", page_size=500, sort_field="gene_id",
                     sort_direction="SORT_DIRECTION_ASCENDING")
    get = page_request(query, "gene-id", (7157, 672), "tok")
    twin = page_request(query, "gene-id-report", (7157, 672), "tok")
    post = page_request(query, "dataset-report", (7157, 672), "tok")
    assert get.method == twin.method == "GET" and post.method == "POST"
    assert get.path == "/gene/id/7157,672" and twin.path == "/gene/id/7157,672/dataset_report"
    assert get.params == twin.params == [
        ("returned_content", "IDS_ONLY"), ("page_size", "500"), ("page_token", "tok"),
        ("sort.field", "gene_id"), ("sort.direction", "SORT_DIRECTION_ASCENDING")]
    assert post.json_body == {"gene_ids": [7157, 672], "returned_content": "IDS_ONLY",
                              "page_size": 500, "page_token": "tok",
                              "sort": [{"field": "gene_id",
                                        "direction": "SORT_DIRECTION_ASCENDING"}]}


def test_gene_id_report_refuses_the_parameters_it_does_not_have() -> None:
    with pytest.raises(ConfigError, match="--locus-tag"):
        ApiQuery(endpoint="gene-id-report", locus_tags=("b0001",))
    with pytest.raises(ConfigError, match="--tax-search-subtree"):
        ApiQuery(endpoint="gene-id-report", tax_search_subtree=True)
    assert ApiQuery(locus_tags=("b0001",)).unsupported_by("gene-id-report") == ["--locus-tag"]
