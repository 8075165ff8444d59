"""A batch sent as several GET requests (long GeneIDs), one of which fails: every failure kind
of the single-request table, on the scripted transport and a virtual clock.

A 1000-ID batch of 9-digit GeneIDs doesn't fit one URL, so it goes out as two requests in
a task group. Whatever one of them raises must come out of ``fetch_batch`` as it would for a
single request: a fatal error as itself (the fatal one first, when parts fail differently),
anything else as the batch's failure, never as an ExceptionGroup.
"""

from __future__ import annotations

import aiohttp
import pytest
from scripted import (
    CONNECTION_KEY,
    Answer,
    Asked,
    ScriptedTransport,
    fetch,
    ok,
    status,
    via_attempt,
)

from bulkgene.config import RetryPolicy
from bulkgene.errors import AuthError, BulkgeneError, FatalHTTPError, OutageError
from bulkgene.model import BatchOutcome
from bulkgene.net.attempt import Reply
from bulkgene.net.client import PROBE_GENE_ID, REJECTED_BY_SERVER

LONG = tuple(range(100_000_001, 100_001_001))  # 1000 nine-digit GeneIDs: two GET requests


def second_part(answer: Reply) -> ScriptedTransport:
    """A server that answers the batch's first request and ``answer``s the second."""
    def respond(asked: Asked) -> Answer:
        if asked.gene_ids == (PROBE_GENE_ID,) or asked.gene_ids[0] == LONG[0]:
            return ok(asked.gene_ids)
        return answer
    return ScriptedTransport(then=respond)


def test_a_batch_of_long_ids_goes_out_as_two_requests() -> None:
    transport = ScriptedTransport(then=lambda asked: ok(asked.gene_ids))
    outcome = fetch(transport, LONG).outcome
    assert len(transport.asked) == 2 and sum(map(len, transport.ids_asked)) == 1000
    assert outcome.found == 1000


@pytest.mark.parametrize(("answer", "reason"), [
    pytest.param(status(502), "gave up after 3 attempts; last: HTTP 502", id="5xx-persists"),
    pytest.param(status(501, "not here"), "HTTP 501: not here", id="501"),
    pytest.param(Reply(200, {}, b"<html>oops</html>"), "gave up after 3 attempts; last: invalid "
                 "page: an HTML page came back instead of JSON", id="unusable-200"),
])
def test_one_failing_request_fails_its_batch(answer: Reply, reason: str) -> None:
    failure = fetch(second_part(answer), LONG).failure
    assert failure.reason == reason


def test_a_page_chain_that_keeps_breaking_in_one_part_fails_its_batch() -> None:
    def respond(asked: Asked) -> Answer:
        if asked.gene_ids[0] == LONG[0]:
            return ok(asked.gene_ids)
        if asked.token is None:  # the second part's chain: page 2's token answers 500
            return ok(asked.gene_ids[:500], total=len(asked.gene_ids), next_page="t1")
        return status(500)

    failure = fetch(ScriptedTransport(then=respond), LONG, page_size=500).failure
    assert "page chain kept breaking" in failure.reason


def test_both_requests_failing_fail_the_batch_once() -> None:
    failure = fetch(ScriptedTransport(then=lambda _: status(503)), LONG).failure
    assert failure.reason == "gave up after 3 attempts; last: HTTP 503"
    assert len(failure.batch.gene_ids) == 1000


@pytest.mark.parametrize(("answer", "error", "said"), [
    pytest.param(status(401), AuthError, "rejected the API key", id="401"),
    pytest.param(status(403), AuthError, "refused access", id="403"),
    pytest.param(Reply(302, {"Location": "http://elsewhere.test/"}, b""), FatalHTTPError,
                 "redirect", id="redirect"),
])
def test_a_fatal_answer_to_one_request_stops_the_run_as_itself(
        answer: Reply, error: type[BulkgeneError], said: str) -> None:
    with pytest.raises(error, match=said):
        fetch(second_part(answer), LONG)


def test_the_fatal_failure_wins_over_a_failed_request() -> None:
    """One request gives up (503 to the end), the other meets a bad key: the run stops."""
    def respond(asked: Asked) -> Answer:
        return status(503) if asked.gene_ids[0] == LONG[0] else status(401)

    with pytest.raises(AuthError):
        fetch(ScriptedTransport(then=respond), LONG)


def test_an_outage_stops_the_run_as_itself() -> None:
    with pytest.raises(OutageError, match="no request has succeeded for 60 s"):
        fetch(ScriptedTransport(then=lambda _: status(503)), LONG,
              retry=RetryPolicy(max_attempts=100, backoff_cap_s=30.0, outage_s=60.0))


def test_a_host_never_reached_stops_the_run_as_itself() -> None:
    refused = aiohttp.ClientConnectorError(CONNECTION_KEY, ConnectionRefusedError(111, "Refused"))
    with pytest.raises(FatalHTTPError, match=r"cannot reach ncbi\.test"):
        fetch(via_attempt(*[refused] * 100), LONG,
              retry=RetryPolicy(max_attempts=20, unreachable_s=15.0))


def test_a_certificate_that_cant_be_verified_stops_the_run_as_itself() -> None:
    import ssl

    bad = aiohttp.ClientConnectorCertificateError(
        CONNECTION_KEY, ssl.SSLCertVerificationError(1, "self-signed certificate"))
    with pytest.raises(FatalHTTPError, match="TLS certificate"):
        fetch(via_attempt(bad, bad), LONG)


def test_a_refused_id_in_one_request_is_isolated_there() -> None:
    bad = LONG[900]  # in the second request
    transport = ScriptedTransport(then=lambda asked: status(400, "bad id")
                                  if bad in asked.gene_ids else ok(asked.gene_ids))
    outcome = fetch(transport, LONG).outcome
    assert isinstance(outcome, BatchOutcome)
    assert outcome.found == 999 and outcome.missing == [(bad, REJECTED_BY_SERVER)]
    assert all(len(ids) < 1000 for ids in transport.ids_asked)


def test_tsv_batches_of_long_ids_fail_the_same_way() -> None:
    def respond(asked: Asked) -> Answer:
        if asked.gene_ids[0] == LONG[0]:
            return Reply(200, {}, b"NCBI GeneID\tSymbol\n" + b"".join(
                b"%d\ts\n" % gene_id for gene_id in asked.gene_ids))
        return status(502)

    failure = fetch(ScriptedTransport(then=respond), LONG, format="tsv",
                    table_fields=("gene-id", "symbol")).failure
    assert failure.reason == "gave up after 3 attempts; last: HTTP 502"
