"""The emulator is honest: NCBI's schema (via the generated client), NCBI's quirks, its limits."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers import SAMPLES, EmulatorFactory, cli_env, invoke_cli, read_records

from bulkgene.testing import EmulatorThread, GeneUniverse
from bulkgene.testing.universe import real_reports

models = pytest.importorskip("ncbi.datasets.openapi.models")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback emulator
    try:
        with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback emulator
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def contained(original: Any, parsed: Any, where: str = "$") -> None:
    """Every key and value of ``original`` survived the model round trip (none unknown)."""
    if isinstance(original, dict):
        assert isinstance(parsed, dict), where
        for key, value in original.items():
            assert key in parsed, f"{where}.{key} is not in NCBI's schema"
            contained(value, parsed[key], f"{where}.{key}")
    elif isinstance(original, list):
        assert isinstance(parsed, list) and len(parsed) == len(original), where
        for index, (a, b) in enumerate(zip(original, parsed, strict=True)):
            contained(a, b, f"{where}[{index}]")
    else:
        assert original == parsed, f"{where}: {original!r} became {parsed!r}"


def validate_page(body: bytes) -> None:
    data = json.loads(body)
    page = models.V2reportsGeneDataReportPage.from_dict(data)
    contained(data, page.to_dict())


@pytest.fixture
def universe() -> GeneUniverse:
    return GeneUniverse(unknown=frozenset({11}), discontinued=frozenset({12}),
                        replaced={13: 1_500_000_013})


@pytest.fixture
def contract_emulator(make_emulator: EmulatorFactory, universe: GeneUniverse) -> EmulatorThread:
    return make_emulator(universe)


@pytest.mark.parametrize("query", [
    "672,3105,7157",                                      # the real records
    "7157,11,12,13,5,6",                                  # silent unknowns, a replaced gene
    "11,12",                                              # nothing found at all
    "1,2,3,4,5,6,7,8,9,10?page_size=3",                   # first of several pages
    "1,2,3,4,5?returned_content=IDS_ONLY",
    "672,7157,5?returned_content=COUNTS_ONLY",
])
def test_every_page_kind_validates_against_ncbis_schema(contract_emulator: EmulatorThread,
                                                        query: str) -> None:
    status, _, body = get(f"{contract_emulator.base_url}/gene/id/{query}")
    assert status == 200
    validate_page(body)


def test_real_records_are_served_verbatim_in_ncbis_order(contract_emulator: EmulatorThread) -> None:
    _, _, body = get(f"{contract_emulator.base_url}/gene/id/672,3105,7157")
    page = json.loads(body)
    assert page["total_count"] == 3 and "next_page_token" not in page and "messages" not in page
    genes = [report["gene"] for report in page["reports"]]
    assert [g["gene_id"] for g in genes] != ["672", "3105", "7157"], "not in input order"
    assert {g["gene_id"]: g for g in genes} == {str(k): v for k, v in real_reports().items()}


def test_every_page_kind_validates_with_the_old_guesses_too(make_emulator: EmulatorFactory,
                                                           universe: GeneUniverse) -> None:
    emulator = make_emulator(universe, unknown_id_messages=True, total_count_on_every_page=True)
    _, _, body = get(f"{emulator.base_url}/gene/id/7157,11,12,13,5,6")
    validate_page(body)
    token = json.loads(get(f"{emulator.base_url}/gene/id/1,2,3?page_size=2")[2])["next_page_token"]
    status, _, body = get(f"{emulator.base_url}/gene/id/1,2,3?page_size=2&page_token={token}")
    assert status == 200 and json.loads(body)["total_count"] == 3
    validate_page(body)


def test_later_pages_validate_against_ncbis_schema(contract_emulator: EmulatorThread) -> None:
    base = f"{contract_emulator.base_url}/gene/id/1,2,3,4,5?page_size=2"
    token = json.loads(get(base)[2])["next_page_token"]
    status, _, body = get(f"{base}&page_token={token}")
    assert status == 200 and "total_count" not in json.loads(body)
    validate_page(body)


def test_quirks_unknown_discontinued_replaced_and_strings(make_emulator: EmulatorFactory,
                                                          universe: GeneUniverse) -> None:
    # the page messages are the emulator's old guess (NCBI was recorded silent): a knob
    emulator = make_emulator(universe, unknown_id_messages=True)
    _, _, body = get(f"{emulator.base_url}/gene/id/7157%2C11,12,13,5")
    page = json.loads(body)
    codes = {m["warning"]["unrecognized_identifier"]: m["warning"]["gene_warning_code"]
             for m in page["messages"]}
    assert codes == {"11": "UNRECOGNIZED_GENE_ID", "12": "DISCONTINUED_GENE_ID"}
    by_query = {r["query"][0]: r for r in page["reports"]}
    replaced = by_query["13"]
    assert replaced["gene"]["gene_id"] == "1500000013"
    assert replaced["gene"]["replaced_gene_id"] == "13"
    assert replaced["warnings"][0]["replaced_id"] == {"requested": "13", "returned": "1500000013"}
    synthetic = by_query["5"]["gene"]
    assert isinstance(synthetic["gene_id"], str) and isinstance(synthetic["tax_id"], str)
    assert all(isinstance(e["begin"], str) for e in
               synthetic["annotations"][0]["genomic_locations"][0]["exons"])
    assert 900 <= len(json.dumps(synthetic)) <= 9000
    assert all(value not in ("", [], {}, None) for value in synthetic.values()), "empties omitted"


def test_page_tokens_are_opaque_and_bound_to_the_query(contract_emulator: EmulatorThread) -> None:
    base = contract_emulator.base_url
    _, _, body = get(f"{base}/gene/id/1,2,3,4,5?page_size=2")
    token = json.loads(body)["next_page_token"]
    status, _, _ = get(f"{base}/gene/id/1,2,3,4,5?page_size=2&page_token={token}")
    assert status == 200
    status, _, error = get(f"{base}/gene/id/1,2,3,4,6?page_size=2&page_token={token}")
    assert status == 500 and json.loads(error)["code"] == 500, "NCBI's answer to a bad token"
    for bad in ("page_size=0", "page_size=1001"):
        assert get(f"{base}/gene/id/1?{bad}")[0] == 400
    assert get(f"{base}/gene/id/abc")[0] == 400


def test_rate_limit_is_per_key_with_retry_after(make_emulator: EmulatorFactory) -> None:
    emulator = make_emulator(rate_limit=True)
    now_s = [1000.0]  # a frozen clock: the counts can't depend on how fast this machine asks
    emulator.state.clock = lambda: now_s[0]
    url = f"{emulator.base_url}/gene/id/7157"
    anonymous = [get(url)[0] for _ in range(7)]
    assert anonymous.count(200) == 5 and anonymous.count(429) == 2
    keyed = [get(url, {"api-key": "k1"})[0] for _ in range(11)]
    assert keyed.count(200) == 10, "a key has its own, larger window"
    status, headers, body = get(url, {"api-key": "k1"})
    assert status == 429 and headers["Retry-After"] == "1" and json.loads(body)["code"] == 429
    now_s[0] += 0.99
    assert get(url)[0] == 429, "still inside the anonymous window"
    now_s[0] += 0.02
    assert get(url)[0] == 200, "the window slides"


def test_the_generated_ncbi_client_runs_end_to_end(contract_emulator: EmulatorThread) -> None:
    from ncbi.datasets.openapi import ApiClient, Configuration, GeneApi

    with ApiClient(Configuration(host=contract_emulator.base_url)) as client, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        api = GeneApi(client)
        first = api.gene_reports_by_id(gene_ids=[1, 2, 3, 4, 5, 672], page_size=4)
        second = api.gene_reports_by_id(gene_ids=[1, 2, 3, 4, 5, 672], page_size=4,
                                        page_token=first.next_page_token)
    genes = {r.gene.gene_id if r.gene else None
             for r in [*(first.reports or []), *(second.reports or [])]}
    assert genes == {"1", "2", "3", "4", "5", "672"} and second.next_page_token is None


def test_every_line_bulkgene_writes_is_a_report_match(emulator: EmulatorThread,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke_cli("fetch", str(SAMPLES / "human_genes.txt"), str(SAMPLES / "messy_ids.txt"),
                        "--out", str(out), "--rate", "50", env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    records = read_records(out)
    assert len(records) > 300
    for record in records:
        contained(record, models.V2reportsGeneReportMatch.from_dict(record).to_dict())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_bulkgene_emulate_stops_cleanly_on_a_signal(signum: signal.Signals) -> None:
    process = subprocess.Popen([sys.executable, "-m", "bulkgene", "emulate", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
    assert get(f"{url}/gene/id/7157")[0] == 200
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "before the download started" not in stderr, "no fetch's message for the emulator"


def test_an_arrival_says_how_late_the_emulators_own_loop_was(
        make_emulator: EmulatorFactory) -> None:
    """A loop held up 150 ms (as a starved CPU does) marks the next second's arrivals; a
    test then doesn't blame the client for a 429 the emulator's lateness made."""
    emulator = make_emulator()
    url = emulator.base_url + "/gene/id/7157"

    def arrival() -> Any:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - our http URL
            answer.read()
        return emulator.state.arrivals()[-1]

    held = threading.Event()

    def starve() -> None:  # runs on the emulator's loop, as a CPU hog would hold it
        held.set()
        time.sleep(0.15)

    emulator._loop.call_soon_threadsafe(starve)
    held.wait(30)
    late = arrival()
    assert late.server_lag_s >= 0.1
    after = late.t + 1.2
    while (calm := arrival()).t < after:  # a rate window later, by observed arrivals
        pass
    assert calm.server_lag_s < late.server_lag_s


@pytest.mark.parametrize("fault", ["truncate", "reset"])
def test_a_fault_for_a_client_that_left_is_no_traceback(make_emulator: EmulatorFactory,
                                                        fault: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """`bulkgene emulate --fault truncate/reset` printed aiohttp tracebacks when the client
    had gone before the fault was dealt (an assert on the transport, a reset write)."""
    emulator = make_emulator(faults={fault: 1.0}, latency_s=0.2)
    request = (f"GET /datasets/v2/gene/id/7157 HTTP/1.1\r\nHost: 127.0.0.1:{emulator.port}"
               "\r\n\r\n").encode()
    with caplog.at_level(logging.DEBUG, "aiohttp"):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", emulator.port), timeout=30) as client:
                client.sendall(request)  # and gone before the answer's latency is over
        count = len(emulator.state.arrivals())
        while len(emulator.state.arrivals()) == count:  # the last one dealt its fault
            with socket.create_connection(("127.0.0.1", emulator.port), timeout=30) as client:
                client.sendall(request)
                with contextlib.suppress(OSError):  # reset: the connection is aborted
                    client.recv(1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
