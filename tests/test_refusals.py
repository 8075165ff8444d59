"""Finding the GeneIDs a server refuses, on the scripted transport and a virtual clock.

The server here is NCBI 18.23 as recorded: a request naming a GeneID it refuses fails as a
whole with 404 "Your request is invalid."; a request without one is answered. Every
decision of the isolation is checked: which IDs come out refused (exactly the bad ones),
how many requests it took against the targets (log2(n) + 3 per refused ID when they are
sparse, 2 log2(n) + 2 when several share a request), that no refusal is waited for, and
the bounds that keep a server refusing everything from costing a request per ID.
"""

from __future__ import annotations

import math
import random

import pytest
from scripted import Answer, Asked, Fetched, ScriptedTransport, fetch, fetch_all, ok, status

from bulkgene.errors import FatalHTTPError
from bulkgene.model import BatchOutcome
from bulkgene.net.client import PROBE_GENE_ID, REJECTED_BY_SERVER
from bulkgene.net.refusals import MIN_REFUSED_TO_JUDGE

INVALID = status(404, "Your request is invalid.")
BATCH = tuple(range(1, 1001))


def refusing(bad: set[int]) -> ScriptedTransport:
    """NCBI 18.23: a request naming any of ``bad`` fails whole; the probe gene is answered."""
    def respond(asked: Asked) -> Answer:
        return INVALID if bad.intersection(asked.gene_ids) else ok(asked.gene_ids)
    return ScriptedTransport(then=respond)


def extra_requests(transport: ScriptedTransport, batches: int = 1) -> int:
    """Requests beyond one per batch, leaving out the probes (one a minute, for everyone)."""
    probes = sum(1 for asked in transport.asked if asked.gene_ids == (PROBE_GENE_ID,))
    return len(transport.asked) - batches - probes


def assert_exact(fetched: Fetched, bad: set[int], gene_ids: tuple[int, ...] = BATCH) -> None:
    outcome = fetched.outcome
    assert sorted(outcome.missing) == sorted((gene_id, REJECTED_BY_SERVER) for gene_id in bad)
    assert outcome.found == len(gene_ids) - len(bad)


@pytest.mark.parametrize("bad_id", [1, 250, 500, 501, 777, 1000])
def test_one_refused_id_in_1000_costs_at_most_log2_n_plus_3_requests(bad_id: int) -> None:
    transport = refusing({bad_id})
    fetched = fetch(transport, BATCH)
    assert_exact(fetched, {bad_id})
    assert extra_requests(transport) <= math.log2(1000) + 3
    assert set(transport.gaps_s) == {0.0}, "a refusal the probe explained is never waited for"
    assert all(len(ids) < 1000 for ids in transport.ids_asked[2:]), "no half asked for whole"


@pytest.mark.parametrize(("count", "seed"), [(3, 1), (3, 2), (30, 1), (30, 2)])
def test_several_refused_ids_in_1000_cost_at_most_2_log2_n_plus_2_requests_each(
        count: int, seed: int) -> None:
    bad = set(random.Random(seed).sample(BATCH, count))
    transport = refusing(bad)
    fetched = fetch(transport, BATCH)
    assert_exact(fetched, bad)
    assert extra_requests(transport) <= count * (2 * math.log2(1000) + 2)
    assert set(transport.gaps_s) == {0.0}


def test_refused_ids_next_to_each_other_are_all_found() -> None:
    bad = set(range(400, 410))
    fetched = fetch(refusing(bad), BATCH)
    assert_exact(fetched, bad)


def test_once_the_probe_has_vouched_the_next_refusal_is_split_at_once() -> None:
    transport = refusing({5, 1500})
    results, _ = fetch_all(transport, BATCH, tuple(range(1001, 2001)))
    assert all(isinstance(result, BatchOutcome) for result in results)
    probes = [asked for asked in transport.asked if asked.gene_ids == (PROBE_GENE_ID,)]
    assert len(probes) == 1, "one probe vouches for the endpoint for a minute"


def test_the_run_learns_how_dense_refused_ids_are_and_tests_groups_at_once() -> None:
    """After a batch with 30 refused IDs, the next refused batch starts with groups of about
    one refused ID each, sent together (same virtual instant), not with halves."""
    rng = random.Random(3)
    second = tuple(range(1001, 2001))
    bad = set(rng.sample(BATCH, 30)) | set(rng.sample(second, 30))
    transport = refusing(bad)
    results, _ = fetch_all(transport, BATCH, second)
    for result, gene_ids in zip(results, (BATCH, second), strict=True):
        assert isinstance(result, BatchOutcome)
        assert {g for g, _ in result.missing} == bad & set(gene_ids)
    second_requests = [a for a in transport.asked if a.gene_ids[0] > 1000]
    first_split = [a for a in second_requests[1:] if len(a.gene_ids) < 1000]
    sizes = {len(a.gene_ids) for a in first_split[:16]}
    assert max(sizes) <= 64, f"groups, not halves: {sorted(sizes)}"
    assert extra_requests(transport, 2) <= 60 * (2 * math.log2(1000) + 2)


def test_a_server_refusing_all_but_the_probe_stops_the_run_after_a_few_requests() -> None:
    """The 404-everything server: not every ID refused one by one (6n - 2 requests a
    batch), and never a 'done' with every GeneID REJECTED_BY_SERVER."""
    transport = ScriptedTransport(then=lambda asked: ok(asked.gene_ids)
                                  if asked.gene_ids == (PROBE_GENE_ID,) else INVALID)
    with pytest.raises(FatalHTTPError, match=r"refused 20 GeneIDs one by one and answered "
                                             r"only 0, so the run stopped.*not recorded.*"
                                             r"--column.*--restart"):
        fetch(transport, BATCH)
    assert len(transport.asked) <= 2 * MIN_REFUSED_TO_JUDGE * (math.log2(1000) + 3)


def test_a_server_refusing_groups_it_answers_one_by_one_fails_the_batch_soon() -> None:
    """Refusing any request of more than one ID is no refused GeneID: the batch fails
    (a re-run tries it again) after a bounded number of requests."""
    transport = ScriptedTransport(then=lambda asked: INVALID if len(asked.gene_ids) > 1
                                  else ok(asked.gene_ids))
    failure = fetch(transport, BATCH).failure
    assert "answers them one by one" in failure.reason
    assert len(transport.asked) <= 3 * (2 * math.log2(1000) + 4)
