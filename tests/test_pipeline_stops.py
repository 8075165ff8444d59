"""The pipeline never hangs on a stop: a worker that dies, or a fatal error, with the producer
blocked on a full queue of batches nobody will take (scripted transport, real pipeline).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from helpers import make_config, write_ids
from scripted import BASE_URL, Answer, Asked, ScriptedTransport, status

from bulkgene.errors import AuthError
from bulkgene.net.client import GeneClient
from bulkgene.net.pacer import AdaptiveRateLimiter
from bulkgene.run.pipeline import Pipeline, RunOutcome
from bulkgene.run.prepare import prepare


class Broken(Exception):
    """What no transport may raise: a bug below the pipeline."""


async def _run(tmp_path: Path, transport: ScriptedTransport) -> tuple[Pipeline, RunOutcome]:
    """A pipeline over 40 batches with 2 workers, its client talking to ``transport``."""
    config = make_config([str(write_ids(tmp_path / "ids.txt", range(1, 401)))],
                         tmp_path / "out", base_url=BASE_URL, batch_size=10, concurrency=2,
                         requests_per_second=1000.0, progress_interval_s=0)
    prepared = await asyncio.to_thread(prepare, config)
    try:
        async with aiohttp.ClientSession() as unused:
            client = GeneClient(unused, AdaptiveRateLimiter(1000.0), config, transport=transport)
            run = Pipeline(config, prepared, client, on_progress=None)
            # a hang is the failure: pytest's per-test timeout ends it
            return run, await run.run()
    finally:
        prepared.store.close()
        prepared.lock.release()


async def test_a_worker_that_dies_ends_the_run_instead_of_leaving_the_producer_blocked(
        tmp_path: Path) -> None:
    def respond(asked: Asked) -> Answer:
        raise Broken(f"no answer for {asked.gene_ids[0]}")

    with pytest.raises(BaseExceptionGroup) as raised:
        await _run(tmp_path, ScriptedTransport(then=respond))
    assert raised.group_contains(Broken)


async def test_a_fatal_error_stops_the_run_with_more_batches_waiting(tmp_path: Path) -> None:
    run, outcome = await _run(tmp_path, ScriptedTransport(then=lambda _: status(401)))
    assert isinstance(outcome.fatal, AuthError)
    assert run.prepared.checkpoint.committed_batches == 0
