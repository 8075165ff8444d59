"""Every row of the failure table, on a scripted transport and a virtual clock (no sockets).

Each test scripts what the server answers, runs GeneClient.fetch_batch on a virtual-time
loop and checks the decision: what the client asked next, how long it waited (virtual
seconds) and the BatchOutcome or error. The backoff's jitter is pinned to its ceiling
(an rng whose ``uniform`` returns the upper bound), so every wait is exact: 1 s after the
first failure, 2 s after the second, Retry-After + 1 s when the server names a time.
The failure kinds that ``attempt`` translates run through the real ``attempt`` over a
scripted aiohttp session (the library faked, not our code).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import aiohttp
import pytest
from scripted import (
    CONNECTION_KEY,
    IDS,
    Answer,
    Asked,
    ScriptedTransport,
    ServerStep,
    answering,
    body,
    fetch,
    fetch_all,
    ok,
    page,
    status,
    via_attempt,
)

from bulkgene.config import RetryPolicy, Secret
from bulkgene.errors import AuthError, BulkgeneError, FatalHTTPError, OutageError
from bulkgene.model import BatchFailure, BatchOutcome
from bulkgene.net.attempt import HttpRequest, Reply, Transport
from bulkgene.net.client import PROBE_GENE_ID, REJECTED_BY_SERVER
from bulkgene.net.failures import StaleConnection

# -- 200: USE ----------------------------------------------------------------------------

def test_a_valid_page_is_used_at_once_and_unanswered_ids_are_missing() -> None:
    transport = ScriptedTransport(ok((1, 2, 4)))
    fetched = fetch(transport)
    assert transport.ids_asked == [IDS]
    assert fetched.outcome.found == 3 and fetched.outcome.missing == [(3, "NOT_RETURNED")]
    assert fetched.client.stats.requests == 1 and fetched.client.stats.retries == 0


BAD_BODIES = [
    pytest.param(b"<html><body>502 Bad Gateway</body></html>", "HTML page", id="html"),
    pytest.param(b'{"reports": [{"query": ["1"]', "not a valid report page", id="invalid-json"),
    pytest.param(b'{"reports": 5, "total_count": 1}', "not a valid report page",
                 id="wrong-shape"),
    pytest.param(b'{"total_count": 2}', "no 'reports'", id="reports-missing"),
    pytest.param(page((1, 9)), "did not ask for", id="a-stranger's-report"),
    pytest.param(page((1,), total=9), "more than the 4 GeneIDs", id="total-over-batch"),
    pytest.param(b'{"error": "Internal", "code": 13, "message": "try later"}',
                 "error instead of a page", id="error-envelope-in-200"),
    pytest.param(b'\xff\xfe{"reports": []}', "not a valid report page", id="not-utf8"),
]


@pytest.mark.parametrize(("body", "said"), BAD_BODIES)
def test_an_unusable_200_is_fetched_again_after_a_backoff(body: bytes, said: str) -> None:
    transport = ScriptedTransport(Reply(200, {}, body), ok(IDS))
    fetched = fetch(transport)
    assert transport.ids_asked == [IDS, IDS] and transport.gaps_s == [1.0]
    assert fetched.outcome.found == 4 and fetched.client.stats.retries == 1


@pytest.mark.parametrize(("body", "said"), BAD_BODIES)
def test_a_200_that_stays_unusable_fails_the_batch_with_the_reason(body: bytes, said: str
                                                                   ) -> None:
    transport = ScriptedTransport(then=lambda _: Reply(200, {}, body))
    failure = fetch(transport).failure
    assert len(transport.asked) == 3 and transport.gaps_s == [1.0, 2.0]
    assert "gave up after 3 attempts; last: invalid page" in failure.reason
    assert said in failure.reason


# -- 429: THROTTLED ----------------------------------------------------------------------

def test_a_lone_429_without_retry_after_backs_off_and_costs_only_the_resent_request() -> None:
    transport = ScriptedTransport(status(429), ok(IDS))
    fetched = fetch(transport)
    assert transport.gaps_s == [1.0]
    assert fetched.outcome.found == 4 and fetched.client.stats.throttled == 1
    assert fetched.client.limiter.rate == 1000.0  # no sign of anyone else: the rate is kept


def test_429s_that_keep_coming_halve_the_pacer() -> None:
    transport = ScriptedTransport(status(429), status(429), ok(IDS))
    fetched = fetch(transport)
    assert transport.gaps_s == [1.0, 2.0]
    assert fetched.outcome.found == 4 and fetched.client.stats.throttled == 2
    assert fetched.client.limiter.rate == 600.0  # halved, then one step back up in the 2 s


def test_429_with_retry_after_waits_what_the_server_named() -> None:
    transport = ScriptedTransport(status(429, headers={"Retry-After": "7"}), ok(IDS))
    fetched = fetch(transport)
    assert transport.gaps_s == [8.0]  # 7 s, spread by up to 1 s so retries don't clump
    assert fetched.outcome.found == 4 and fetched.client.stats.throttled == 1


def test_429_with_a_retry_after_past_the_cap_waits_only_the_cap() -> None:
    transport = ScriptedTransport(status(429, headers={"Retry-After": "86400"}), ok(IDS))
    fetch(transport, retry=RetryPolicy(max_attempts=3, retry_after_cap_s=60.0))
    assert transport.gaps_s == [61.0]


def test_429_with_the_servers_limit_lowers_the_pacers_ceiling() -> None:
    transport = ScriptedTransport(status(429, headers={"X-RateLimit-Limit": "10"}), ok(IDS))
    fetched = fetch(transport)
    assert fetched.client.limiter.ceiling == 10.0 and fetched.outcome.found == 4


# -- 5xx: RETRY --------------------------------------------------------------------------

@pytest.mark.parametrize("code", [500, 502, 503, 504, 505, 599])
def test_a_5xx_is_retried_after_a_backoff(code: int) -> None:
    transport = ScriptedTransport(status(code), ok(IDS))
    fetched = fetch(transport)
    assert transport.ids_asked == [IDS, IDS] and transport.gaps_s == [1.0]
    assert fetched.outcome.found == 4


def test_a_503_with_retry_after_waits_for_it() -> None:
    transport = ScriptedTransport(status(503, headers={"Retry-After": "5"}), ok(IDS))
    fetch(transport)
    assert transport.gaps_s == [6.0]


def test_a_5xx_that_persists_fails_the_batch_after_max_attempts() -> None:
    transport = ScriptedTransport(then=lambda _: status(502))
    failure = fetch(transport).failure
    assert transport.gaps_s == [1.0, 2.0]
    assert failure.reason == "gave up after 3 attempts; last: HTTP 502"


def test_failures_for_longer_than_outage_s_stop_the_run() -> None:
    transport = ScriptedTransport(then=lambda _: status(503))
    with pytest.raises(OutageError, match="no request has succeeded for 60 s") as raised:
        fetch(transport, retry=RetryPolicy(max_attempts=100, backoff_cap_s=30.0,
                                           outage_s=60.0))
    assert "re-run the same command later" in str(raised.value)
    # 1 + 2 + 4 + 8 + 16 + 30 s: the first check past 60 s after the first failure
    assert transport.gaps_s == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


# -- anything else: FAIL -----------------------------------------------------------------

@pytest.mark.parametrize("code", [501, 418, 204])
def test_a_status_without_a_meaning_fails_the_batch_at_once(code: int) -> None:
    transport = ScriptedTransport(status(code, "not implemented here"))
    failure = fetch(transport).failure
    assert len(transport.asked) == 1
    assert failure.reason == f"HTTP {code}: not implemented here"


# -- 3xx, 401, 403: the run stops --------------------------------------------------------

@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_a_redirect_stops_the_run_without_following_it(code: int) -> None:
    transport = ScriptedTransport(Reply(code, {"Location": "http://elsewhere.test/"}, b""))
    with pytest.raises(FatalHTTPError, match=f"redirect \\(HTTP {code}\\).*--base-url"):
        fetch(transport)
    assert len(transport.asked) == 1


def test_401_stops_the_run_naming_the_key_and_never_showing_it() -> None:
    key = "SECRETKEY0123456789"
    transport = ScriptedTransport(status(401, f"invalid api key {key}",
                                         headers={"Ncbi-Phid": "PHID42"}))
    with pytest.raises(AuthError) as raised:
        fetch(transport, api_key=Secret(key))
    message = str(raised.value)
    assert "rejected the API key" in message and "NCBI_API_KEY" in message
    assert "server request id PHID42" in message and key not in message
    assert len(transport.asked) == 1


@pytest.mark.parametrize("code", [400, 401, 404])
def test_a_key_echoed_json_escaped_never_reaches_a_message(code: int,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Masking the raw bytes misses ``\\u0053\\u0045...``; decoding turns it back into the key."""
    key = "SECRETKEY0123456789abcdef"
    escaped = "".join(f"\\u{ord(char):04x}" for char in key)
    body = b'{"error": "bad", "code": %d, "message": "bad key %s"}' % (code, escaped.encode())
    transport = ScriptedTransport(then=lambda _: Reply(code, {}, body))
    with caplog.at_level(logging.DEBUG, "bulkgene"):
        try:
            result: object = fetch(transport, api_key=Secret(key),
                                   retry=RetryPolicy(max_attempts=2))
        except BulkgeneError as exc:
            result = exc
    assert key not in str(result) and key not in caplog.text
    assert "***" in str(result) + caplog.text


def test_403_stops_the_run_with_what_to_do() -> None:
    transport = ScriptedTransport(status(403))
    with pytest.raises(AuthError, match=r"refused access \(HTTP 403\).*lower --rate"):
        fetch(transport)
    assert len(transport.asked) == 1


# -- 400: REFUSED (probe, then isolate) --------------------------------------------------

def test_400_probes_a_known_gene_then_finds_the_refused_id_by_binary_splitting() -> None:
    transport = ScriptedTransport(then=answering(
        lambda ids: status(400, "bad id") if 6 in ids else None))
    outcome = fetch(transport, tuple(range(1, 9))).outcome
    assert transport.ids_asked == [
        (1, 2, 3, 4, 5, 6, 7, 8), (PROBE_GENE_ID,),  # the probe: refusals aren't systematic
        (1, 2, 3, 4),  # passes: 5..8 hold the refused ID, and are not asked for whole
        (5, 6),  # refused: 7, 8 are set aside
        (5,),  # passes: 6 is the one, by inference
        (6,),  # ...confirmed alone
        (7, 8)]  # the set-aside IDs, together
    assert set(transport.gaps_s) == {0.0}, "a refusal is an answer: no backoff"
    assert outcome.found == 7 and outcome.missing == [(6, REJECTED_BY_SERVER)]


def test_400_for_the_probe_too_stops_the_run_as_a_bad_setting() -> None:
    transport = ScriptedTransport(then=lambda _: status(400, "unknown table field"))
    with pytest.raises(FatalHTTPError, match="refuses every request, even one for GeneID 7157"):
        fetch(transport)
    assert transport.ids_asked == [IDS, (PROBE_GENE_ID,)]


def test_the_probe_asks_for_a_gene_this_server_already_answered() -> None:
    # a first batch succeeds; a refusal in the second probes with a GeneID from the first
    answers = answering(lambda ids: status(400) if 6 in ids else None)
    transport = ScriptedTransport(then=answers)
    (_, result), _ = fetch_all(transport, (3, 4), (5, 6))
    assert transport.ids_asked == [(3, 4), (5, 6), (3,), (5,), (6,)]
    assert isinstance(result, BatchOutcome) and result.missing == [(6, REJECTED_BY_SERVER)]


def test_a_probe_answered_without_the_gene_vouches_for_nothing() -> None:
    """A server that answers 200 ``{}`` even for TP53 is not NCBI: stop, don't record data."""
    transport = ScriptedTransport(then=lambda asked: status(400, "bad id")
                                  if asked.gene_ids != (PROBE_GENE_ID,) else Reply(200, {}, b"{}"))
    with pytest.raises(FatalHTTPError, match=r"GeneID 7157, which NCBI has, without it.*doctor"):
        fetch(transport)
    probes = [a.endpoint for a in transport.asked if a.gene_ids == (PROBE_GENE_ID,)]
    assert probes == ["gene-id", "gene-id-report", "dataset-report"]


def test_a_probe_answered_once_by_a_broken_page_is_asked_again() -> None:
    """A passing fault (an HTML page for the probe) is fetched again like any page, not taken
    for a server without TP53: that would end the run."""
    html = Reply(200, {"Content-Type": "text/html"}, b"<html>Service unavailable</html>")
    probes = iter([html])

    def respond(asked: Asked) -> Answer:
        if asked.gene_ids == (PROBE_GENE_ID,):
            return next(probes, None) or ok(asked.gene_ids)
        return status(404, "Your request is invalid.") if 42 in asked.gene_ids else ok(
            asked.gene_ids)

    transport = ScriptedTransport(then=respond)
    outcome = fetch(transport, (42,)).outcome
    assert transport.ids_asked == [(42,), (PROBE_GENE_ID,), (PROBE_GENE_ID,)]
    assert outcome.missing == [(42, REJECTED_BY_SERVER)]


def test_a_probe_rides_out_passing_failures_as_any_request_does() -> None:
    """The probe had three tries whatever --max-attempts said: three 5xx in a row (a fault
    mix of 45 %) failed the batch that asked."""
    probes = iter([status(503), status(502), status(503)])

    def respond(asked: Asked) -> Answer:
        if asked.gene_ids == (PROBE_GENE_ID,):
            return next(probes, None) or ok(asked.gene_ids)
        return status(404, "Your request is invalid.") if 42 in asked.gene_ids else ok(
            asked.gene_ids)

    transport = ScriptedTransport(then=respond)
    outcome = fetch(transport, (42,), retry=RetryPolicy(max_attempts=5)).outcome
    assert transport.ids_asked == [(42,)] + [(PROBE_GENE_ID,)] * 4
    assert outcome.missing == [(42, REJECTED_BY_SERVER)]


def test_a_probe_answered_by_an_html_page_naming_the_gene_vouches_for_nothing() -> None:
    html = Reply(200, {"Content-Type": "text/html"},
                 b"<html>No route for /datasets/v2/gene/id/7157</html>")
    transport = ScriptedTransport(then=lambda asked: status(404, "Your request is invalid.")
                                  if asked.gene_ids != (PROBE_GENE_ID,) else html)
    with pytest.raises(FatalHTTPError, match=r"GeneID 7157, which NCBI has, without it"):
        fetch(transport, (100,))


def test_a_server_that_finds_nothing_for_anyone_is_not_a_list_of_missing_genes() -> None:
    """``{}`` ("nothing found") to everything, TP53 included: an error, never a 'done'."""
    transport = ScriptedTransport(then=lambda _: Reply(200, {}, b"{}"))
    with pytest.raises(FatalHTTPError, match=r"finds nothing for a whole batch.*7157"):
        fetch(transport)
    assert (PROBE_GENE_ID,) in transport.ids_asked


def test_a_batch_of_dead_ids_costs_one_probe_a_minute_not_a_failure() -> None:
    transport = ScriptedTransport(then=lambda asked: ok(asked.gene_ids)
                                  if asked.gene_ids == (PROBE_GENE_ID,) else Reply(200, {}, b"{}"))
    results, _ = fetch_all(transport, (1, 2), (3, 4))
    assert all(isinstance(r, BatchOutcome) and r.found == 0 and len(r.missing) == 2
               for r in results)
    assert transport.ids_asked == [(1, 2), (PROBE_GENE_ID,), (3, 4)]  # vouched for a minute


def _tsv(gene_ids: tuple[int, ...]) -> Reply:
    rows = b"".join(b"%d\tsym%d\n" % (g, g) for g in gene_ids)
    return Reply(200, {}, b"NCBI GeneID\tSymbol\n" + rows)


def test_400_in_tsv_isolates_the_refused_id_and_counts_it_missing() -> None:
    transport = ScriptedTransport(then=lambda asked: status(400) if 2 in asked.gene_ids
                                  else _tsv(asked.gene_ids))
    outcome = fetch(transport, format="tsv", table_fields=("gene-id", "symbol")).outcome
    assert transport.ids_asked == [IDS, (PROBE_GENE_ID,), (1, 2), (1,), (2,), (3, 4)]
    assert outcome.found == 3 and outcome.missing == [(2, REJECTED_BY_SERVER)]  # as in JSON
    assert outcome.header == b"NCBI GeneID\tSymbol"


@pytest.mark.parametrize(("fmt", "torn", "said"), [
    ("ndjson", b'{"query": ["1"], "gene": {"gene_id": "1"}}\n{"query": ["2"', "torn line"),
    ("tsv", b"NCBI GeneID\tSymbol\n1\tsym1\n2\ts", "torn line"),
])
def test_a_body_cut_at_a_line_is_fetched_again(fmt: str, torn: bytes, said: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    whole = (_tsv(IDS) if fmt == "tsv"
             else Reply(200, {}, b"".join(b'{"query": ["%d"], "gene": {"gene_id": "%d"}}\n'
                                          % (g, g) for g in IDS)))
    transport = ScriptedTransport(Reply(200, {}, torn), whole)
    settings: dict[str, Any] = {"table_fields": ("gene-id", "symbol")} if fmt == "tsv" else {}
    with caplog.at_level(logging.DEBUG, "bulkgene"):
        outcome = fetch(transport, format=fmt, **settings).outcome
    assert transport.gaps_s == [1.0] and outcome.found == 4
    assert any(said in message for message in caplog.messages)


# -- 414, 431: TOO_LONG (split, no probe) ------------------------------------------------

@pytest.mark.parametrize("code", [414, 431])
def test_a_request_too_long_is_split_without_a_probe(code: int) -> None:
    transport = ScriptedTransport(then=answering(
        lambda ids: status(code) if len(ids) > 2 else None))
    outcome = fetch(transport).outcome
    assert transport.ids_asked == [IDS, (1, 2), (3, 4)]
    assert outcome.found == 4


def test_414_for_a_single_id_fails_the_batch() -> None:
    transport = ScriptedTransport(then=lambda _: status(414, "URI too long"))
    failure = fetch(transport, (5,)).failure
    assert failure.reason == "HTTP 414 for a single GeneID: URI too long"
    assert transport.ids_asked == [(5,)]


# -- 404: NOT_FOUND (probe, isolate) and STRAY_404 (retry first) -------------------------

def apache_404() -> Reply:
    """A 404 as NCBI's Apache front end once served it: labelled HTML, NCBI's JSON inside."""
    return Reply(404, {"Server": "Apache", "Content-Type": "text/html; charset=iso-8859-1"},
                 b'{"error": "Not Found", "code": 404, "message": "Your request is invalid."}')


def test_a_front_ends_404_that_goes_away_was_transient() -> None:
    transport = ScriptedTransport(apache_404(), ok(IDS))
    outcome = fetch(transport).outcome
    assert transport.ids_asked == [IDS, IDS] and transport.gaps_s == [1.0]
    assert outcome.found == 4


def test_a_front_ends_404_that_persists_is_retried_then_probed_then_the_id_refused() -> None:
    transport = ScriptedTransport(then=lambda asked: ok(asked.gene_ids)
                                  if asked.gene_ids == (PROBE_GENE_ID,) else apache_404())
    outcome = fetch(transport, (42,)).outcome
    assert transport.ids_asked == [(42,), (42,), (42,), (PROBE_GENE_ID,)]
    assert transport.gaps_s == [1.0, 2.0, 0.0]
    assert outcome.found == 0 and outcome.missing == [(42, REJECTED_BY_SERVER)]


def test_the_apis_404_is_probed_at_once_and_the_id_refused_without_a_wait() -> None:
    transport = ScriptedTransport(then=answering(
        lambda ids: status(404, "Your request is invalid.") if 42 in ids else None))
    outcome = fetch(transport, (42,)).outcome
    assert transport.ids_asked == [(42,), (PROBE_GENE_ID,)]
    assert transport.gaps_s == [0.0]
    assert outcome.found == 0 and outcome.missing == [(42, REJECTED_BY_SERVER)]


def test_an_apis_404_that_came_and_went_marks_no_id_refused() -> None:
    """Inference says the last ID is refused; alone, it is answered: nothing is refused."""
    transport = ScriptedTransport(status(404, "Your request is invalid."),
                                  then=lambda asked: ok(asked.gene_ids))
    outcome = fetch(transport).outcome
    assert transport.ids_asked == [IDS, (PROBE_GENE_ID,), (1, 2), (3,), (4,)]
    assert outcome.found == 4 and outcome.missing == []


def test_a_404_everywhere_even_for_the_probe_is_a_wrong_url() -> None:
    transport = ScriptedTransport(then=lambda _: status(404, "Not Found"))
    with pytest.raises(FatalHTTPError, match=r"endpoints do not exist.*check --base-url"):
        fetch(transport, (42,))
    probes = [a.endpoint for a in transport.asked if a.gene_ids == (PROBE_GENE_ID,)]
    # every endpoint is probed, each 404 retried like a transient error first
    assert probes == ["gene-id"] * 3 + ["gene-id-report"] * 3 + ["dataset-report"] * 3


# -- 410 or "retired": GONE (probe, switch endpoint) -------------------------------------

@pytest.mark.parametrize("retired", [status(410, "Gone"),
                                     status(404, "This endpoint has been retired")],
                         ids=["410", "404-retired"])
def test_a_retired_endpoint_is_replaced_by_a_current_one(retired: Reply) -> None:
    transport = ScriptedTransport(then=lambda asked: retired if asked.endpoint == "gene-id"
                                  else ok(asked.gene_ids))
    fetched = fetch(transport)
    assert [(a.endpoint, a.gene_ids) for a in transport.asked] == [
        ("gene-id", IDS), ("gene-id", (PROBE_GENE_ID,)),
        ("gene-id-report", (PROBE_GENE_ID,)), ("gene-id-report", IDS)]
    assert fetched.client.endpoint == "gene-id-report" and fetched.outcome.found == 4


# -- the page chain ----------------------------------------------------------------------

def test_a_next_page_token_that_keeps_failing_restarts_the_chain_from_page_1() -> None:
    # NCBI answers an expired or foreign page_token with 500 every time (docs/ncbi-api.md §4)
    transport = ScriptedTransport(
        ok((1, 2), total=4, next_page="t1"), status(500), status(500),
        ok((1, 2), total=4, next_page="t2"), ok((3, 4), total=4))
    fetched = fetch(transport, page_size=2)
    assert [a.token for a in transport.asked] == [None, "t1", "t1", None, "t2"]
    assert fetched.outcome.found == 4
    assert fetched.client.stats.retries == 2  # one retry of the token, one restart


def test_a_token_sent_twice_restarts_the_chain() -> None:
    transport = ScriptedTransport(
        ok((1, 2), total=4, next_page="t1"), ok((3,), total=4, next_page="t1"),
        ok((1, 2), total=4, next_page="t2"), ok((3, 4), total=4))
    outcome = fetch(transport, page_size=2).outcome
    assert [a.token for a in transport.asked] == [None, "t1", None, "t2"]
    assert outcome.found == 4


def test_pages_that_dont_add_up_to_total_count_restart_the_chain() -> None:
    transport = ScriptedTransport(ok((1, 2), total=4), ok(IDS))
    outcome = fetch(transport, page_size=2).outcome
    assert [a.token for a in transport.asked] == [None, None] and outcome.found == 4


def test_a_chain_that_keeps_breaking_fails_the_batch() -> None:
    transport = ScriptedTransport(then=lambda asked: ok((1, 2), total=4, next_page="t1")
                                  if asked.token is None else status(500))
    failure = fetch(transport, page_size=2).failure
    assert "page chain kept breaking" in failure.reason
    assert [a.token for a in transport.asked] == [None, "t1", "t1"] * 3


# -- what attempt() says when there is no HTTP answer ------------------------------------

def test_a_stale_pooled_connection_is_resent_at_once_but_not_forever() -> None:
    stale = StaleConnection("the server closed the connection")
    transport = ScriptedTransport(stale, stale, stale, stale, ok(IDS))
    fetched = fetch(transport)
    # three resends cost nothing; the fourth dead connection in a row is a failure
    assert transport.gaps_s == [0.0, 0.0, 0.0, 1.0]
    assert fetched.outcome.found == 4 and fetched.client.stats.retries == 4


_CAP_BYTES = 1 << 20  # the smallest cap the config allows

TRANSLATED = [
    pytest.param(aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
                 "timed out", id="timeout"),
    pytest.param(aiohttp.ClientConnectorError(CONNECTION_KEY, ConnectionResetError(104, "Reset")),
                 "could not connect (Reset)", id="connection-error"),
    pytest.param(aiohttp.ServerDisconnectedError(), "the server closed the connection",
                 id="server-disconnected"),
    pytest.param(body(b'{"reports": [', aiohttp.ClientPayloadError("cut")),
                 "the response body was cut short", id="truncated-body"),
    pytest.param(body(b"", length=2 << 20),
                 "the answer would be 2097152 bytes, over the 1048576-byte cap",
                 id="oversize-declared"),
    pytest.param(body(b"x" * 600_000, b"x" * 600_000),
                 "the answer is larger than the 1048576-byte cap", id="oversize-streamed"),
]


@pytest.mark.parametrize(("failure", "reason"), TRANSLATED)
def test_an_attempt_without_an_answer_is_retried_after_a_backoff(
        failure: ServerStep, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    transport = via_attempt(failure, body(page(IDS)))
    with caplog.at_level(logging.DEBUG, "bulkgene"):
        fetched = fetch(transport, max_response_bytes=_CAP_BYTES)
    assert fetched.outcome.found == 4 and fetched.client.stats.retries == 1
    assert f"retrying in 1.0 s (attempt 2 of 3): {reason}" in caplog.messages


@pytest.mark.parametrize(("failure", "reason"), TRANSLATED)
def test_an_attempt_that_keeps_failing_fails_the_batch_naming_why(failure: ServerStep,
                                                                  reason: str) -> None:
    # the host answered once, so even a connection error is the batch's, not the setup's
    transport = via_attempt(body(page((1, 2))), failure, failure, failure)
    (first, second), _ = fetch_all(transport, (1, 2), IDS, max_response_bytes=_CAP_BYTES)
    assert isinstance(first, BatchOutcome)
    assert isinstance(second, BatchFailure)
    assert second.reason == f"gave up after 3 attempts; last: {reason}"


def _refused_forever() -> tuple[Transport, list[float]]:
    """A host whose every connection is refused, and the virtual time of each attempt."""
    refused = aiohttp.ClientConnectorError(CONNECTION_KEY, ConnectionRefusedError(111, "Refused"))
    transport = via_attempt(*[refused] * 20)
    started: list[float] = []

    async def timed(request: HttpRequest) -> Reply:
        started.append(asyncio.get_running_loop().time())
        return await transport(request)

    return timed, started


def test_a_host_never_reached_is_a_setup_problem_after_unreachable_s() -> None:
    timed, started = _refused_forever()

    with pytest.raises(FatalHTTPError, match=r"cannot reach ncbi\.test: could not connect "
                                             r"\(Refused\).*HTTPS_PROXY"):
        fetch(timed, retry=RetryPolicy(max_attempts=20, unreachable_s=15.0))
    # 1 + 2 + 4 + 8 s of backoff: the attempt at 15 s is the last
    assert [round(t - started[0], 3) for t in started] == [0.0, 1.0, 3.0, 7.0, 15.0]


def test_an_unreachable_host_stops_at_its_deadline_not_a_backoff_later() -> None:
    timed, started = _refused_forever()

    with pytest.raises(FatalHTTPError, match=r"cannot reach ncbi\.test"):
        fetch(timed, retry=RetryPolicy(max_attempts=20, unreachable_s=10.0))
    # 1 + 2 + 4 s of backoff, then not 8 s more but the rest up to the 10 s deadline
    assert [round(t - started[0], 2) for t in started] == [0.0, 1.0, 3.0, 7.0, 10.01]


def test_a_certificate_that_cant_be_verified_stops_the_run_at_once() -> None:
    bad_certificate = aiohttp.ClientConnectorCertificateError(
        CONNECTION_KEY, ssl.SSLCertVerificationError(1, "self-signed certificate"))
    transport = via_attempt(bad_certificate)
    with pytest.raises(FatalHTTPError, match=r"TLS certificate of ncbi\.test.*SSL_CERT_FILE"):
        fetch(transport)
