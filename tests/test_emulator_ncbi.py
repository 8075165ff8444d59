"""The emulator behaves as NCBI was recorded (docs/ncbi-api.md), seen through a real aiohttp client."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from test_emulator import validate_page

from bulkgene.testing import ENDPOINTS, FAULTS, EmulatorConfig, EmulatorThread, GeneUniverse
from bulkgene.testing.state import DOCS, EmulatorState

models = pytest.importorskip("ncbi.datasets.openapi.models")

async def fetch(session: aiohttp.ClientSession, url: str, **kwargs: Any
                ) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url, **kwargs) as response:
        return response.status, dict(response.headers), await response.read()


def start(make_emulator: Any, universe: GeneUniverse | None = None,
          **config: Any) -> EmulatorThread:
    emulator: EmulatorThread = make_emulator(universe, **config)
    return emulator


@pytest.fixture
def universe() -> GeneUniverse:
    return GeneUniverse(unknown=frozenset({11}), discontinued=frozenset({12}),
                        replaced={13: 1_500_000_013})


async def test_every_answer_carries_ncbis_headers(make_emulator: Any) -> None:
    emulator = start(make_emulator, rate_limit=True)
    emulator.state.clock = lambda: 1000.0  # one instant: every request lands in one window
    async with aiohttp.ClientSession() as session:
        answers = [await fetch(session, f"{emulator.base_url}/gene/id/7157") for _ in range(7)]
        _, bad_headers, _ = await fetch(session, f"{emulator.base_url}/gene/id/abc",
                                        headers={"api-key": "k"})
    statuses = [status for status, _, _ in answers]
    assert statuses == [200] * 5 + [429] * 2
    for _, headers, _ in answers:
        assert headers["Server"] == "Finatra" and headers["X-Datasets-Version"] == "18.23.0"
        assert headers["X-RateLimit-Limit"] == "5"
        assert headers["Keep-Alive"] == "timeout=4, max=40"
        assert re.fullmatch(r"[0-9A-F]{24}\.1\.1", headers["Ncbi-Phid"])
    remaining = [int(headers["X-RateLimit-Remaining"]) for _, headers, _ in answers]
    assert remaining == [4, 3, 2, 1, 0, 0, 0], "what is left of the 1-s window, never negative"
    assert len({headers["Ncbi-Phid"] for _, headers, _ in answers}) == 7
    assert bad_headers["X-RateLimit-Limit"] == "10" and bad_headers["X-RateLimit-Remaining"] == "9"


async def test_a_server_without_a_rate_limit_names_none(make_emulator: Any) -> None:
    emulator = start(make_emulator)  # the fixture's default: rate_limit=False
    async with aiohttp.ClientSession() as session:
        answers = [await fetch(session, f"{emulator.base_url}/gene/id/7157") for _ in range(7)]
    assert [status for status, _, _ in answers] == [200] * 7
    assert not any("X-RateLimit-Limit" in headers for _, headers, _ in answers)
    assert all(headers["Server"] == "Finatra" for _, headers, _ in answers)


async def test_knob_restores_rate_headers_on_429s_only(make_emulator: Any) -> None:
    emulator = start(make_emulator, rate_limit=True, rate_limit_headers_only_on_429=True)
    emulator.state.clock = lambda: 1000.0
    async with aiohttp.ClientSession() as session:
        answers = [await fetch(session, f"{emulator.base_url}/gene/id/7157") for _ in range(6)]
    for status, headers, _ in answers[:5]:
        assert status == 200 and "X-RateLimit-Remaining" not in headers
    status, headers, _ = answers[5]
    assert status == 429 and headers["X-RateLimit-Remaining"] == "0"


@pytest.mark.parametrize(("counted_at", "expected"), [("arrival", 9), ("answer", 6)])
@pytest.mark.slow
async def test_remaining_is_counted_at_arrival_or_as_the_answer_leaves(
        make_emulator: Any, universe: GeneUniverse, counted_at: str, expected: int) -> None:
    """docs/ncbi-api.md §6 leaves open when NCBI counts: a knob serves both readings."""
    emulator = start(make_emulator, universe, rate_limit=True, latency_per_gene_s=1.0,
                     remaining_counted_at=counted_at)
    now = [1000.0]
    emulator.state.clock = lambda: now[0]
    key = {"api-key": "k"}
    async with aiohttp.ClientSession() as session:
        slow = asyncio.create_task(fetch(session, f"{emulator.base_url}/gene/id/7157",
                                         headers=key))  # one gene: answered a second later
        for _ in range(6000):  # until it has arrived (at most a minute)
            if emulator.state.remaining("key:k", 10, now[0]) < 10:
                break
            await asyncio.sleep(0.01)
        now[0] += 0.5
        for _ in range(3):  # no gene found: answered at once, while the first is still held
            status, headers, _ = await fetch(session, f"{emulator.base_url}/gene/id/11",
                                             headers=key)
            assert status == 200
        assert not slow.done()
        status, headers, _ = await slow
    assert status == 200 and headers["X-RateLimit-Remaining"] == str(expected)


async def test_the_path_knobs_change_while_serving(make_emulator: Any) -> None:
    emulator = start(make_emulator, rate_limit=True)
    root = emulator.base_url.removesuffix("/datasets/v2")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{root}/_emulator/path", params={
                "arrival_jitter_ms": "30", "remaining_counted_at": "answer"}) as response:
            assert response.status == 200
        for bad in ({"arrival_jitter_ms": "-1"}, {"arrival_jitter_ms": "nan"},
                    {"remaining_counted_at": "never"}):
            async with session.post(f"{root}/_emulator/path", params=bad) as response:
                assert response.status == 400
    assert emulator.state.config.arrival_jitter_ms == 30.0
    assert emulator.state.config.remaining_counted_at == "answer"


async def test_pages_mirror_count_and_token_in_headers(make_emulator: Any) -> None:
    emulator = start(make_emulator)
    async with aiohttp.ClientSession() as session:
        _, headers, body = await fetch(session, f"{emulator.base_url}/gene/id/1,2,3,4,5",
                                       params={"page_size": "2"})
    page = json.loads(body)
    assert headers["X-Ncbi-Total-Count"] == "5"
    assert headers["X-Ncbi-Next-Page-Token"] == page["next_page_token"]


async def test_total_count_on_the_first_page_only_and_no_token_on_the_last(
        make_emulator: Any) -> None:
    emulator = start(make_emulator)
    url = f"{emulator.base_url}/gene/id/1,2,3,4,5"
    pages: list[dict[str, Any]] = []
    token = None
    async with aiohttp.ClientSession() as session:
        while True:
            params = {"page_size": "2", **({"page_token": token} if token else {})}
            status, headers, body = await fetch(session, url, params=params)
            assert status == 200
            validate_page(body)
            pages.append(json.loads(body))
            token = pages[-1].get("next_page_token")
            if token is None:
                break
    assert [sorted(page) for page in pages] == [
        ["next_page_token", "reports", "total_count"], ["next_page_token", "reports"], ["reports"]]
    assert pages[0]["total_count"] == 5 and "X-Ncbi-Total-Count" not in headers
    assert sum(len(page["reports"]) for page in pages) == 5


async def test_knob_restores_total_count_on_every_page(make_emulator: Any) -> None:
    emulator = start(make_emulator, total_count_on_every_page=True)
    url = f"{emulator.base_url}/gene/id/1,2,3"
    async with aiohttp.ClientSession() as session:
        _, _, first = await fetch(session, url, params={"page_size": "2"})
        token = json.loads(first)["next_page_token"]
        _, _, last = await fetch(session, url, params={"page_size": "2", "page_token": token})
    assert json.loads(last)["total_count"] == 3


async def test_nothing_found_is_exactly_an_empty_object(make_emulator: Any,
                                                        universe: GeneUniverse) -> None:
    emulator = start(make_emulator, universe)
    async with aiohttp.ClientSession() as session:
        status, headers, body = await fetch(session, f"{emulator.base_url}/gene/id/11,12")
        _, _, mixed = await fetch(session, f"{emulator.base_url}/gene/id/7157,11,12")
    assert status == 200 and body == b"{}" and "X-Ncbi-Total-Count" not in headers
    validate_page(body)
    page = json.loads(mixed)
    assert sorted(page) == ["reports", "total_count"], "unknown IDs are simply missing"
    assert page["total_count"] == 1


async def test_knob_restores_messages_for_unknown_ids(make_emulator: Any,
                                                      universe: GeneUniverse) -> None:
    emulator = start(make_emulator, universe, unknown_id_messages=True)
    async with aiohttp.ClientSession() as session:
        _, _, body = await fetch(session, f"{emulator.base_url}/gene/id/7157,11,12")
    validate_page(body)
    codes = {m["warning"]["gene_warning_code"] for m in json.loads(body)["messages"]}
    assert codes == {"UNRECOGNIZED_GENE_ID", "DISCONTINUED_GENE_ID"}


async def test_an_invalid_page_token_is_a_500_with_ncbis_envelope(make_emulator: Any) -> None:
    emulator = start(make_emulator)
    async with aiohttp.ClientSession() as session:
        answers = [await fetch(session, f"{emulator.base_url}/gene/id/1,2,3",
                               params={"page_token": "not-a-token"}) for _ in range(3)]
    for status, headers, body in answers:
        assert status == 500 and headers["Connection"] == "close"
        assert "Keep-Alive" not in headers
        assert body.endswith(b"\n")
        error = json.loads(body)
        assert sorted(error) == ["code", "error", "message"]
        assert error["error"] == "Internal Server Error" and error["code"] == 500
        assert error["message"].endswith(f"{DOCS} ({headers['Ncbi-Phid']})")


async def test_knob_restores_400_for_an_invalid_page_token(make_emulator: Any) -> None:
    emulator = start(make_emulator, bad_token_status=400)
    async with aiohttp.ClientSession() as session:
        status, _, body = await fetch(session, f"{emulator.base_url}/gene/id/1,2,3",
                                      params={"page_token": "not-a-token"})
    assert status == 400 and json.loads(body)["code"] == 400


def test_invalid_ids_are_deterministic_from_the_seed() -> None:
    ids = range(1, 20_001)
    first = {i for i in ids if EmulatorConfig(seed=3, invalid_id_per_mille=50).is_invalid_id(i)}
    again = {i for i in ids if EmulatorConfig(seed=3, invalid_id_per_mille=50).is_invalid_id(i)}
    other = {i for i in ids if EmulatorConfig(seed=4, invalid_id_per_mille=50).is_invalid_id(i)}
    assert first == again and first != other
    assert 800 < len(first) < 1200, "about the share asked for"
    assert not any(EmulatorConfig(seed=3).is_invalid_id(i) for i in ids), "off by default"


async def test_a_request_naming_an_invalid_id_fails_whole_with_404(make_emulator: Any) -> None:
    emulator = start(make_emulator, seed=3, invalid_id_per_mille=50,
                     invalid_ids=frozenset({7157}))
    config = emulator.config
    bad = next(i for i in range(1, 1000) if config.is_invalid_id(i))
    good = [i for i in range(1, 1000) if not config.is_invalid_id(i)][:5]
    async with aiohttp.ClientSession() as session:
        ok_status, _, ok_body = await fetch(
            session, f"{emulator.base_url}/gene/id/{','.join(map(str, good))}")
        answers = [await fetch(session, f"{emulator.base_url}/gene/id/"
                               f"{','.join(map(str, [*good, extra]))}") for extra in (bad, 7157)]
    assert ok_status == 200 and json.loads(ok_body)["total_count"] == 5
    for status, headers, body in answers:
        assert status == 404 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body) == {"error": "Not Found", "code": 404,
                                    "message": f"Your request is invalid. {DOCS}"}
    assert [a.fault for a in emulator.state.arrivals()] == [None, "invalid_id", "invalid_id"]


async def test_apache_404_fault_lies_about_its_content_type(make_emulator: Any) -> None:
    emulator = start(make_emulator, faults={"apache_404": 1.0})
    async with aiohttp.ClientSession() as session:
        status, headers, body = await fetch(session, f"{emulator.base_url}/gene/id/7157")
    assert status == 404 and headers["Server"] == "Apache"
    assert headers["Content-Type"].startswith("text/html")
    assert "X-Datasets-Version" not in headers and "Ncbi-Phid" not in headers
    assert json.loads(body)["code"] == 404
    assert emulator.state.arrivals()[-1].fault == "apache_404"


async def test_apache_404_is_drawn_per_request_like_other_faults(make_emulator: Any) -> None:
    emulator = start(make_emulator, seed=1, faults={"apache_404": 0.5})
    async with aiohttp.ClientSession() as session:
        statuses = [(await fetch(session, f"{emulator.base_url}/gene/id/7157"))[0]
                    for _ in range(20)]
    assert set(statuses) == {200, 404}


@pytest.mark.parametrize("status", [404, 410])
async def test_a_retired_endpoint_answers_with_ncbis_retirement_notice(
        make_emulator: Any, status: int) -> None:
    emulator = start(make_emulator, retired_endpoints=frozenset({"gene_reports_by_id"}),
                     retired_status=status)
    async with aiohttp.ClientSession() as session:
        old_status, _, old_body = await fetch(session, f"{emulator.base_url}/gene/id/7157")
        new_status, _, new_body = await fetch(
            session, f"{emulator.base_url}/gene/id/7157/dataset_report")
        async with session.post(f"{emulator.base_url}/gene/dataset_report",
                                json={"gene_ids": [7157]}) as response:
            post_status = response.status
    assert old_status == status
    notice = json.loads(old_body)
    assert list(notice) == ["error"]
    assert notice["error"].startswith("This version of the API has been retired. Please migrate "
                                      "to the latest version")
    assert new_status == 200 and post_status == 200
    validate_page(new_body)


def test_retired_endpoints_must_be_known_operation_ids() -> None:
    with pytest.raises(ValueError, match="gene_dataset_report"):
        EmulatorConfig(retired_endpoints=frozenset({"gene_by_taxon"}))


async def test_dataset_report_get_serves_the_same_records_with_its_own_parameters(
        make_emulator: Any) -> None:
    emulator = start(make_emulator)
    ids = "672,3105,7157,1,2,3,4,5"
    async with aiohttp.ClientSession() as session:
        _, _, old = await fetch(session, f"{emulator.base_url}/gene/id/{ids}")
        _, _, new = await fetch(session, f"{emulator.base_url}/gene/id/{ids}/dataset_report",
                                params={"locus_tags": "nothing-matches"})  # not its parameter
        _, _, typed = await fetch(session, f"{emulator.base_url}/gene/id/{ids}/dataset_report",
                                  params={"types": "PROTEIN_CODING", "query": "BRCA1"})
    validate_page(new)
    assert json.loads(new) == json.loads(old)
    assert [r["gene"]["symbol"] for r in json.loads(typed)["reports"]] == ["BRCA1"]


async def test_idle_connections_are_closed_after_the_keepalive_timeout(
        make_emulator: Any) -> None:
    emulator = start(make_emulator, keepalive_timeout_s=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    writer.write(b"GET /datasets/v2/gene/id/7157 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Keep-Alive: timeout=0.2, max=40" in head
    length_match = re.search(rb"Content-Length: (\d+)", head)
    assert length_match is not None, head
    length = int(length_match.group(1))
    await reader.readexactly(length)
    # the server, not us, ends the idle connection: EOF arrives with nothing more sent
    assert await asyncio.wait_for(reader.read(), timeout=60) == b""
    writer.close()


async def test_every_connection_closes_after_its_40th_answer(make_emulator: Any) -> None:
    emulator = start(make_emulator)
    opened: list[object] = []

    async def on_create(_session: object, _context: object, params: object) -> None:
        opened.append(params)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        answers = [await fetch(session, f"{emulator.base_url}/gene/id/{i}") for i in range(1, 42)]
    assert all(status == 200 for status, _, _ in answers)
    assert [h.get("Connection") for _, h, _ in answers[:39]] == [None] * 39
    assert answers[39][1]["Connection"] == "close" and "Keep-Alive" not in answers[39][1]
    assert answers[40][1]["Keep-Alive"] == "timeout=4, max=40"
    assert len(opened) == 2, "the 41st request needed a new connection"


async def test_keepalive_knobs_change_the_numbers(make_emulator: Any) -> None:
    emulator = start(make_emulator, keepalive_timeout_s=None, keepalive_max_requests=3)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        answers = [await fetch(session, f"{emulator.base_url}/gene/id/7157") for _ in range(3)]
    assert answers[0][1]["Keep-Alive"] == "max=3"
    assert answers[2][1]["Connection"] == "close"


async def test_arrival_jitter_keeps_order_per_connection(make_emulator: Any) -> None:
    every_id_found = GeneUniverse(unknown_per_mille=0, discontinued_per_mille=0,
                                  replaced_per_mille=0)
    emulator = start(make_emulator, every_id_found, arrival_jitter_ms=30)
    ids_per_connection = [list(range(base, base + 6)) for base in (100, 200, 300)]

    async def pipelined(ids: list[int]) -> list[bytes]:
        # all requests written at once on one connection: the server must answer in order
        reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
        writer.write(b"".join(b"GET /datasets/v2/gene/id/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
                              for i in ids))
        await writer.drain()
        bodies = []
        for _ in ids:
            head = await reader.readuntil(b"\r\n\r\n")
            length_match = re.search(rb"Content-Length: (\d+)", head)
            assert length_match is not None, head
            length = int(length_match.group(1))
            bodies.append(await reader.readexactly(length))
        writer.close()
        return bodies

    results = await asyncio.gather(*(pipelined(ids) for ids in ids_per_connection))
    for ids, bodies in zip(ids_per_connection, results, strict=True):
        assert [json.loads(b)["reports"][0]["query"] for b in bodies] == [[str(i)] for i in ids]
    arrived = [a.first_id for a in emulator.state.arrivals()]
    for ids in ids_per_connection:
        assert [i for i in arrived if i in ids] == ids, "arrivals keep each connection's order"


def test_arrival_jitter_is_seeded_and_bounded() -> None:
    universe = GeneUniverse()

    def delays(seed: int) -> list[float]:
        state = EmulatorState(EmulatorConfig(seed=seed, arrival_jitter_ms=40), universe)
        return [state.arrival_delay_s() for _ in range(50)]

    assert delays(1) == delays(1) != delays(2)
    assert all(0 <= d <= 0.04 for d in delays(1))
    assert EmulatorState(EmulatorConfig(), universe).arrival_delay_s() == 0


def test_emulate_help_lists_the_faults_and_new_knobs() -> None:
    from bulkgene.cli import main

    result = CliRunner().invoke(main, ["emulate", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in (*FAULTS, *ENDPOINTS):
        assert name in text
    for option in ("--keepalive-timeout", "--keepalive-max", "--invalid-id-per-mille",
                   "--retire", "--arrival-jitter-ms", "--unknown-id-messages",
                   "--total-count-every-page", "--bad-token-status", "--remaining-only-on-429",
                   "--remaining-counted-at"):
        assert option in text
