"""A taxon listing that never ends, end to end: the real CLI against a scripted bad server.

Each server here turns honest after ``HONEST_AFTER`` requests (a last page, no token), so a
bulkgene that follows it too far ends with a false success instead of hanging the test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from helpers import cli_env, invoke_cli
from hostile import HostileServer

from bulkgene.errors import EXIT_FAILED_BATCHES

HONEST_AFTER = 200
MAX_ATTEMPTS = 3  # --max-attempts: how often a broken chain starts over


def _page(gene_ids: list[str], token: str | None, total: int | None = None) -> web.Response:
    body: dict[str, object] = {"reports": [{"gene": {"gene_id": g}} for g in gene_ids]}
    if total is not None:
        body["total_count"] = total
    if token is not None:
        body["next_page_token"] = token
    return web.Response(body=orjson.dumps(body), content_type="application/json")


Script = Callable[[int, int], web.Response]  # (pages this taxon was asked, its page number)


class EndlessTaxon:
    """Answers taxon pages by ``script`` for ``taxon`` and an honest two-page list of 1500
    GeneIDs for any other; counts the pages each taxon was asked."""

    def __init__(self, taxon: str, script: Script) -> None:
        self.taxon = taxon
        self.script = script
        self.asked: dict[str, int] = {}

    async def __call__(self, request: web.Request) -> web.Response:
        if request.method != "POST" or not request.path.endswith("/gene/dataset_report"):
            return web.Response(status=404, text='{"error":"Not Found","code":404}')
        body = orjson.loads(await request.read())
        taxon = str(body["taxon"])
        asked = self.asked[taxon] = self.asked.get(taxon, 0) + 1
        number = 1 + int(body.get("page_token", "p1")[1:]) if "page_token" in body else 1
        if taxon != self.taxon:
            first = number == 1
            ids = [str(n) for n in (range(1, 1001) if first else range(1001, 1501))]
            return _page(ids, "p1" if first else None, 1500 if first else None)
        if asked > HONEST_AFTER:
            return _page([], None)
        return self.script(asked, number)


def _fetch(server: HostileServer, tmp_path: Path, *taxa: str) -> tuple[int, str, Path]:
    out = tmp_path / "out"
    args = [arg for taxon in taxa for arg in ("--taxon", taxon)]
    result = invoke_cli("fetch", *args, "--out", str(out), "--max-attempts", str(MAX_ATTEMPTS),
                        "--retry-wait", "0.01", env=cli_env(server.base_url))
    return result.returncode, result.stderr.decode(), out


def _not_done(out: Path) -> None:
    assert not (out / "taxa" / "list.json").exists(), "the list was never complete"
    assert not (out / "summary.json").exists() or not orjson.loads(
        (out / "summary.json").read_bytes()).get("done")


def test_endless_pages_without_a_total_count_fail_the_taxon_at_once(tmp_path: Path) -> None:
    # page 1 with GeneIDs and a next page but no total_count (NCBI always counts page 1),
    # then new GeneIDs and a new token on every page: nothing bounds such a chain
    def script(_asked: int, number: int) -> web.Response:
        return _page([str(number * 1000 + n) for n in range(1000)], f"p{number}")

    bad = EndlessTaxon("9606", script)
    with HostileServer(bad) as server:
        code, stderr, out = _fetch(server, tmp_path, "7227", "9606")
    assert code == EXIT_FAILED_BATCHES, stderr
    assert "'9606'" in stderr and "no total_count" in stderr, stderr
    assert bad.asked["9606"] == 1, "its page 1 alone decided"
    assert bad.asked["7227"] == 2, "the other taxon was listed to its end"
    _not_done(out)


def test_an_absurd_total_count_is_not_trusted_as_a_bound(tmp_path: Path) -> None:
    # 10**15 genes promised (NCBI has not 10**9 GeneIDs in all), then GeneID 7157 on every page
    def script(_asked: int, number: int) -> web.Response:
        return _page(["7157"], f"p{number}", 10**15 if number == 1 else None)

    bad = EndlessTaxon("9606", script)
    with HostileServer(bad) as server:
        code, stderr, out = _fetch(server, tmp_path, "9606")
    assert code == EXIT_FAILED_BATCHES, stderr
    assert "'9606'" in stderr and "1000000000000000" in stderr, stderr
    assert bad.asked["9606"] == 1
    _not_done(out)


@pytest.mark.parametrize("repeat", ["the same GeneIDs", "no reports"])
def test_pages_that_add_no_new_geneid_end_the_chain(tmp_path: Path, repeat: str) -> None:
    # a believable count (3000: three pages), then page after page of nothing new: past 3
    # such pages the chain is going round, whatever the count still allows (11 pages)
    def script(_asked: int, number: int) -> web.Response:
        ids = [str(n) for n in range(1, 1001)]
        if number > 1 and repeat == "no reports":
            ids = []
        return _page(ids, f"p{number}", 3000 if number == 1 else None)

    bad = EndlessTaxon("9606", script)
    with HostileServer(bad) as server:
        code, stderr, out = _fetch(server, tmp_path, "9606")
    assert code == EXIT_FAILED_BATCHES, stderr
    assert "'9606'" in stderr and "no new GeneID" in stderr, stderr
    # the first pass and MAX_ATTEMPTS new starts: page 1 and three pages of nothing new each
    assert bad.asked["9606"] == 4 * (1 + MAX_ATTEMPTS)
    _not_done(out)


def test_a_page_bigger_than_asked_for_fails_the_taxon(tmp_path: Path) -> None:
    # page 1 promises 1000 genes and holds 300 000, with no next page: it was taken whole,
    # "done", exit 0 (only an info line said it was more than the count)
    def script(_asked: int, _number: int) -> web.Response:
        return _page([str(n) for n in range(1, 300_001)], None, 1000)

    bad = EndlessTaxon("9606", script)
    with HostileServer(bad) as server:
        code, stderr, out = _fetch(server, tmp_path, "9606")
    assert code == EXIT_FAILED_BATCHES, stderr
    assert "'9606'" in stderr and "300000 reports, more than the 1000" in stderr, stderr
    _not_done(out)
